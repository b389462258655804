"""`crome merge`: shards built with `--shard i/N` combined into exactly what one unsharded build gives.

The shards must be complete, share their source and build options (all but how each process
ran: shard, batch, concurrency, limits, budget) and cover 0..N-1 once each. Every shard's call
cache is copied into OUT's store (in SQL, one shard at a time: memory depends neither on the number
of shards nor on their calls), then the normal unsharded build runs into OUT, streaming as every
build does: every oracle
call is a cache hit, so nothing is called or paid, and the result (rows, rejections, cross-shard
dedup, IQN draws) is by construction the one an unsharded run gives. Calls that failed in a shard
replay their failure through `ReplayOracle`, which calls no provider and needs no API key.

The summary gains a `shards` section: each shard's counts and spend (from its store), and their sums.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from crome.builder.run.config import BuildConfig
from crome.builder.oracles import oracle_class, parse_oracle_spec
from crome.schemas.calls import OracleRequest, OracleResponse
from crome.builder.run.pipeline import BuildResult, Progress, build, duckdb_memory_mb, source_fingerprint
from crome.builder.sources import SourceError
from crome.builder.run.status import spend
from crome.builder.run.export import RUN_LAYOUT
from crome.builder.store import STORE_FILE, CallRecord, RunStore, RunStoreError
from crome.builder.store.work import import_calls
from crome.outputs import OutputError, claim, read_export

# How each process ran, not what it built: shards may differ in these.
EXECUTION_OPTIONS = frozenset(
    {"shard", "batch", "concurrency", "rpm", "tpm", "timeout", "schema_mode", "max_cost", "max_failures", "dry_run", "base_url"}
)


class MergeError(ValueError):
    """The shards cannot be merged as given (the message says which and why)."""


@dataclass
class Shard:
    path: Path
    index: int
    count: int
    options: dict[str, Any]
    summary: dict[str, Any]
    source: dict[str, Any]  # store meta: spec and fingerprint


def read_shard(path: Path) -> Shard:
    """A shard's options and summary, from its last complete export (the files of one build)."""
    try:
        record = read_export(path)
    except OutputError as exc:
        raise MergeError(str(exc)) from None
    if record is None:
        if not (path / "summary.json").exists():
            raise MergeError(f"{path}: no summary.json; is it the output directory of `crome build --shard i/N`?")
        raise MergeError(f"{path} was written by an older crome (no .crome.json): re-run its `crome build --shard ...` "
                         "to re-export it (every call replays from its cache)")
    if "summary.json" not in record.files:
        raise MergeError(f"{path}: not the output directory of `crome build --shard i/N` (its export has no summary.json)")
    summary = json.loads((path / "summary.json").read_text())
    options = summary.get("options") or {}
    shard = options.get("shard")
    if not shard:
        raise MergeError(f"{path}: not a shard (built without --shard i/N)")
    if summary.get("status") != "complete":
        raise MergeError(f"{path} (shard {shard[0]}/{shard[1]}) is not complete ({summary.get('status')}): re-run its build until it completes")
    try:
        with RunStore.open(path, read_only=True) as store:
            source = store.get_meta("source") or {}
    except (RunStoreError, FileNotFoundError) as exc:
        raise MergeError(f"{path}: {exc}") from None
    return Shard(path=path, index=int(shard[0]), count=int(shard[1]), options=options, summary=summary, source=source)


def check_shards(shards: list[Shard]) -> dict[str, Any]:
    """The options the shards share; an error naming the first difference, gap or repeat."""
    if not shards:
        raise MergeError("no shards given")
    first = shards[0]
    method = {k: v for k, v in first.options.items() if k not in EXECUTION_OPTIONS}
    for s in shards[1:]:
        other = {k: v for k, v in s.options.items() if k not in EXECUTION_OPTIONS}
        diff = sorted(k for k in set(method) | set(other) if method.get(k) != other.get(k))
        if diff:
            k = diff[0]
            raise MergeError(f"{s.path} was built with {k}={other.get(k)!r} but {first.path} with {k}={method.get(k)!r}: shards of one dataset share their options")
        if s.source.get("fingerprint") != first.source.get("fingerprint"):
            raise MergeError(f"{s.path} and {first.path} were built from different source data")
    n = first.count
    if any(s.count != n for s in shards):
        raise MergeError(f"shards of different splits: {', '.join(f'{s.index}/{s.count}' for s in shards)}")
    seen: dict[int, Path] = {}
    for s in shards:
        if s.index in seen:
            raise MergeError(f"shard {s.index}/{n} given twice: {seen[s.index]} and {s.path}")
        seen[s.index] = s.path
    missing = sorted(set(range(n)) - set(seen))
    if missing:
        raise MergeError(f"shard(s) {', '.join(f'{i}/{n}' for i in missing)} missing: the merge needs all {n}")
    return method


class ReplayOracle:
    """The shards' oracle as seen from their caches: answers what they failed with, calls no provider."""

    def __init__(self, spec: str, failed: dict[str, CallRecord]):
        self.provider, self.model = parse_oracle_spec(spec)
        # Calls nothing, so costs nothing: no estimate, no budget.
        self.capabilities = replace(oracle_class(self.provider).capabilities, priced=False)
        self.failed = failed
        self.misses = 0

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.model}"

    async def agenerate(self, request: OracleRequest) -> OracleResponse:
        rec = self.failed.get(request.cache_key(self.provider, self.model, self.capabilities.context_keys))
        if rec is None:
            # Complete shards made every call this build needs; a miss means their caches disagree with the source.
            self.misses += 1
            return OracleResponse(status="error", error="no shard holds this call (merge replays the shards' calls, it calls no oracle)")
        # Paid for in the shard already: replayed at no cost, with the same status, error and attempts.
        return rec.to_response(request.output_model).replace(cached=False, input_tokens=0, output_tokens=0)

    async def aclose(self) -> None:
        return None


def _import_calls(shards: list[Shard], out: Path) -> dict[str, CallRecord]:
    """Copy the shards' calls into OUT's store (lowest shard first, in SQL); return the calls that only failed.

    A key held by several shards keeps the first final answer and every request any of them was
    billed for (`sent`), so OUT's spend is what its shards spent. A key that only failed is kept as a
    failure, which the merged build replays through `ReplayOracle` (those few are held in memory).
    """
    with RunStore.open(out) as dest:
        dest.limit_memory(duckdb_memory_mb(sum(int(s.summary.get("counts", {}).get("source_pairs", 0) or 0) for s in shards)))
        for shard in sorted(shards, key=lambda s: s.index):
            import_calls(dest, shard.path / STORE_FILE)
        return {rec.key: rec for rec in dest.iter_failed_calls()}


def _shard_report(shards: list[Shard]) -> dict[str, Any]:
    rows = []
    for s in sorted(shards, key=lambda s: s.index):
        with RunStore.open(s.path, read_only=True) as store:
            money = spend(store)
        c = s.summary.get("counts", {})
        rows.append({
            "shard": f"{s.index}/{s.count}", "run": s.path.name,
            "counts": {k: c.get(k, 0) for k in ("source_pairs", "quarantined", "rows", "rejections")},
            "rows_by_kind": c.get("rows_by_kind", {}),
            "spend": money,
        })
    keys = ("calls", "batch_calls", "requests", "batch_requests", "input_tokens", "output_tokens")
    costs = [r["spend"]["cost_usd"] for r in rows]
    return {
        "count": len(rows),
        "shards": rows,
        "totals": {
            **{k: sum(r["counts"][k] for r in rows) for k in ("source_pairs", "quarantined", "rows", "rejections")},
            **{k: sum(r["spend"][k] for r in rows) for k in keys},
            # What the shards really spent (merging spends nothing); None when a model has no price.
            "cost_usd": None if any(c is None for c in costs) else round(sum(costs), 6),
        },
    }


def merge(
    shard_dirs: list[str | Path], out: str | Path, *, source: str | None = None, templates_dir: str | None = None,
    progress: Progress | None = None,
) -> BuildResult:
    """Merge complete shards into OUT: the unsharded build, made from their caches alone."""
    shards = [read_shard(Path(d)) for d in shard_dirs]
    options = check_shards(shards)
    out = Path(out)
    if any(out.resolve() == s.path.resolve() for s in shards):
        raise MergeError(f"--out {out} is one of the shards: merge into a new directory")
    if options.get("templates_dir") and not templates_dir:
        raise MergeError(f"the shards used --templates-dir {options['templates_dir']}: pass the same folder with --templates-dir")
    spec = source or shards[0].source.get("spec")
    if not spec:
        raise MergeError("the shards do not record where their source is: pass it with --source")
    # How the merge runs is its own business: it calls nothing, so no budget applies.
    fields = {k: v for k, v in options.items()
              if k in BuildConfig.model_fields and k not in {"source", "out", "templates_dir", "max_cost", "base_url"}}
    cfg = BuildConfig(**fields, source=spec, out=str(out), templates_dir=templates_dir)
    claim(out, RUN_LAYOUT, "crome merge", create=False)  # before reading anything: a folder that is not ours stops here
    try:
        fingerprint, _ = source_fingerprint(cfg)  # read as a stream: only the pairs' ids are hashed
    except (SourceError, OSError) as exc:
        raise MergeError(f"cannot read the source the shards were built from ({spec}): {exc}; pass it with --source") from None
    expected = shards[0].source.get("fingerprint")
    if expected is not None and fingerprint != expected:
        raise MergeError(f"the source at {spec} is not the data the shards were built from (its pairs differ)")

    claim(out, RUN_LAYOUT, "crome merge")
    failed = _import_calls(shards, out)
    oracle = None if cfg.is_rules else ReplayOracle(cfg.oracle, failed)
    report = _shard_report(shards)

    def finish(summary: dict[str, Any], builder: Any) -> None:
        summary["shards"] = report
        if oracle is not None and oracle.misses:
            summary["shards"]["replay_misses"] = oracle.misses

    return build(cfg, progress, oracle, writer="crome merge", finish=finish)


__all__ = ["EXECUTION_OPTIONS", "MergeError", "ReplayOracle", "check_shards", "merge", "read_shard"]
