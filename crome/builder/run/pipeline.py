"""`crome build`: source pairs -> rubrics -> ratings -> causal rewrites -> verify -> validate -> IQN -> dedup -> export.

Per source pair the LLM stages run as one coroutine (no barrier between stages, so a slow call
holds up only its own pair); the stages that need the whole dataset (neutrals, dedup) run after.
Every call goes through the run store's cache, so a re-run replays and a killed run resumes.
With `batch`, a pass sends nothing itself: its cache misses become one provider batch job
(crome.builder.run.batch) and the pairs that wait on it stay pending until a re-run collects it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pyarrow.parquet as pq

from crome import __version__
from crome.builder.run.config import TASKS, BuildConfig, display_source
from crome.builder.run.generate import BatchPending, BuildStopped, CachedGenerate
from crome.builder.oracles import get_oracle
from crome.builder.oracles.base import Oracle, SystematicOracleError
from crome.builder.stages.records import Candidate, PairContext, original_candidate
from crome.builder.sources import load_source
from crome.builder.stages.causal import causal, pair_rng
from crome.builder.stages.dedup import Deduper, text_key
from crome.builder.stages.neutral import cross_prompt, draw_irrelevant, neutrals
from crome.builder.stages.rate import rate
from crome.builder.stages.rubrics import RubricStage
from crome.builder.stages.validate import validate_rewrite
from crome.builder.stages.verify import verify
from crome.builder.run.status import spend
from crome.builder.store import RunStore
from crome.schemas.hashing import short_id, stable_hash
from crome.prompts import UnknownTemplateError, load_template
from crome.schemas import DatasetRow, Quarantined, Rejection, SourcePair, arrow_schema, to_table

log = logging.getLogger(__name__)

ROWS_PER_SHARD = 100_000
WRITE_CHUNK = 5_000
KIND_ORDER = {"original": 0, "causal": 1, "neutral": 2}


@dataclass
class BuildResult:
    run_dir: Path
    summary: dict[str, Any]
    rows: int
    stopped: str | None = None


@dataclass
class Progress:
    """What the CLI shows while a build runs; the pipeline only calls these hooks."""

    start: Callable[[int], None] = lambda total: None
    advance: Callable[[dict], None] = lambda stats: None
    stage: Callable[[str], None] = lambda name: None


def in_shard(source_id: str, shard: tuple[int, int] | None) -> bool:
    if shard is None:
        return True
    i, n = shard
    return int(short_id(source_id), 16) % n == i


def read_source(cfg: BuildConfig) -> tuple[list[SourcePair], list[Quarantined], dict[str, Any]]:
    """All source pairs (a shard draws irrelevant prompts from the whole set), this shard's quarantines, source info."""
    loaded = load_source(cfg.source, split=cfg.split, config=cfg.config_name, revision=cfg.revision, mapping=cfg.mapping, limit=cfg.limit)
    pairs = list(loaded.pairs)
    quarantined = [q for q in loaded.quarantined if cfg.shard is None or q.row % cfg.shard[1] == cfg.shard[0]]
    info = {"name": display_source(cfg.source), "shape": loaded.shape, "hub_id": loaded.hub_id, "license": loaded.license,
            "rows": loaded.total_rows}
    return pairs, quarantined, info


def validate_candidates(ctx: PairContext, candidates: list[Candidate], cfg: BuildConfig) -> list[Candidate]:
    kept = []
    for c in candidates:
        # A response the oracle reported cut off never gets here (causal rejects it as oracle_truncated);
        # validation still catches a rewrite that ends mid-sentence or inside a code fence.
        result = validate_rewrite(c.original_answer or "", c.rewrite or "", cfg=cfg.validation)
        c.quality.update(result.quality_fields())
        if result.passed:
            c.checks.extend(result.passed_names())
            kept.append(c)
        else:
            ctx.rejections.append(c.reject("validate", result.reason, result.detail[:500]))
    return kept


class Builder:
    def __init__(self, cfg: BuildConfig, store: RunStore, progress: Progress | None = None, oracle: Oracle | None = None):
        self.cfg = cfg
        self.store = store
        self.progress = progress or Progress()
        options = {"base_url": cfg.base_url, "concurrency": cfg.concurrency, "rpm": cfg.rpm, "tpm": cfg.tpm,
                   "timeout": cfg.timeout, "schema_mode": cfg.schema_mode}
        self.oracle = oracle if oracle is not None else get_oracle(cfg.oracle, **options)
        if cfg.verify is None:  # the default follows the oracle actually used: judges verify, rules cannot
            self.cfg = cfg = cfg.model_copy(update={"verify": self.oracle.capabilities.verify})
        self.templates = {task: self._template(cfg.templates.get(task, task)) for task in TASKS}
        self.generate = CachedGenerate(store, self.oracle, max_cost=cfg.max_cost, max_failures=cfg.max_failures, price=self._price())
        self.batch = None
        if cfg.batch:
            from crome.builder.run.batch import BatchRun, batch_jobs

            self.batch = BatchRun(store, batch_jobs(self.oracle), self.generate, price=self._price())
        self.rubric_stage = RubricStage(self.generate, self.templates["rubrics"])
        self.contexts: list[PairContext] = []  # the pairs this run builds (its shard)
        self.pool: list[PairContext] = []  # every source pair: where irrelevant prompts and donors are drawn from

    def _template(self, spec: str):
        if self.cfg.templates_dir:
            try:
                return load_template(spec, self.cfg.templates_dir)
            except UnknownTemplateError:
                pass  # not overridden there: the packaged version
        return load_template(spec)

    def _price(self):
        if not self.oracle.capabilities.priced:
            return None
        from crome.builder.oracles.llm.pricing import estimate_cost

        model = self.oracle.model
        return lambda i, o: estimate_cost(model, i, o, batch=self.cfg.batch)

    # -- per pair -------------------------------------------------------------------------
    def _donor(self, ctx: PairContext) -> str:
        """An answer written for an unrelated prompt (relevance interventions of the rules oracle)."""
        other, _ = draw_irrelevant(ctx, self.pool, pair_rng(self.cfg.seed, ctx.pair.source_id, "donor"), self.cfg.neutral_max_similarity)
        return other.pair.chosen.content if other is not None else ""

    async def process_pair(self, ctx: PairContext) -> None:
        cfg = self.cfg
        ctx.candidates = [original_candidate(ctx.pair)]
        if ctx.pair.preference != 1.0 or not cfg.causal or cfg.max_attributes == 0:
            return
        if not await self.rubric_stage(ctx):
            return
        if not await rate(ctx, self.generate, self.templates["rate"]):
            return
        candidates = await causal(
            ctx,
            self.generate,
            self.templates,
            directions=list(cfg.causal),
            k=cfg.max_attributes,
            seed=cfg.seed,
            supports_upgrade=self.oracle.capabilities.upgrade,
            supports_safety=self.oracle.capabilities.safety,
            donor=self._donor,
        )
        if cfg.verify_enabled and candidates:
            candidates = await verify(ctx, candidates, self.generate, self.templates["verify"])
        ctx.candidates.extend(validate_candidates(ctx, candidates, cfg))

    async def run_pairs(self) -> str | None:
        """Process every pair with a bounded window in flight; returns why the run stopped, if it did."""
        window = max(64, 4 * self.cfg.concurrency)
        pending: set[asyncio.Task] = set()
        stopped: str | None = None
        fatal: BaseException | None = None
        it = iter(self.contexts)
        self.progress.start(len(self.contexts))

        def reap(done: set[asyncio.Task]) -> None:
            nonlocal stopped, fatal
            for t in done:
                ctx: PairContext = t.ctx  # type: ignore[attr-defined]
                exc = t.exception()
                if isinstance(exc, BatchPending):  # waits on a batch job: neither done nor rejected
                    ctx.candidates = []
                    ctx.rejections = []
                    ctx.pending = True  # type: ignore[attr-defined]
                elif isinstance(exc, BuildStopped):
                    stopped = stopped or exc.reason
                    ctx.candidates = []
                    ctx.rejections = []
                    ctx.pending = True  # type: ignore[attr-defined]
                elif isinstance(exc, SystematicOracleError):
                    fatal = fatal or exc
                elif exc is not None:
                    # A bug must not lose the run: the pair is recorded with the error, the rest goes on.
                    log.exception("pair %s failed", ctx.pair.source_id, exc_info=exc)
                    ctx.reject_pair("internal", "exception", f"{type(exc).__name__}: {exc}"[:500])
                self.progress.advance(self.generate.stats.__dict__)

        for ctx in it:
            if stopped or fatal or self.generate.stopped:
                ctx.pending = True  # type: ignore[attr-defined]
                continue
            task = asyncio.ensure_future(self.process_pair(ctx))
            task.ctx = ctx  # type: ignore[attr-defined]
            pending.add(task)
            if len(pending) >= window:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                reap(done)
        if pending:
            done, _ = await asyncio.wait(pending)
            reap(done)
        if self.batch is not None:
            # A stage's gather fails at its first pending call; let its siblings queue theirs too.
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if others:
                await asyncio.wait(others)
        self.generate.flush()
        await self.oracle.aclose()
        if fatal is not None:
            raise fatal
        return stopped or (self.generate.stopped.reason if self.generate.stopped else None)

    # -- whole dataset --------------------------------------------------------------------
    def add_neutrals(self) -> None:
        cfg = self.cfg
        # Draws are over every source pair, whatever this run's shard or how far it got, so a pair
        # gets the same neutrals in a sharded, a stopped-and-resumed and a whole run.
        for ctx in self.contexts:
            if getattr(ctx, "pending", False):
                continue
            extra: list[Candidate] = []
            if cfg.neutral_ratio > 0 and ctx.pair.preference == 1.0:
                extra += neutrals(ctx, ctx.candidates, self.pool, ratio=cfg.neutral_ratio, seed=cfg.seed, max_similarity=cfg.neutral_max_similarity)
            if cfg.cross_prompt and ctx.pair.preference == 1.0:
                extra += cross_prompt(ctx, self.pool, seed=cfg.seed, max_similarity=cfg.neutral_max_similarity)
            ctx.candidates.extend(extra)

    def dedup(self) -> None:
        """Exact and near-duplicate pairs and generated answers; the first in source order wins."""
        pairs = Deduper(threshold=self.cfg.dedup_threshold)
        answers = Deduper(threshold=self.cfg.dedup_threshold)
        for ctx in self.contexts:
            kept = []
            for c in sorted(ctx.candidates, key=lambda c: KIND_ORDER[c.kind]):
                cid = c.id
                # Probe both before registering either: a rejected candidate must leave no trace
                # that a later one could be called a duplicate of.
                dup, pair_probe = pairs.probe(text_key(c.prompt, c.chosen, c.rejected, ordered=c.preference == 1.0), near=False)
                answer_probe = None
                if not dup.duplicate and c.rewrite is not None:
                    dup, answer_probe = answers.probe(c.rewrite)
                if dup.duplicate:
                    ctx.rejections.append(c.reject("dedup", f"{dup.kind}_duplicate", f"similarity {dup.similarity:.3f}" if dup.similarity is not None else "", duplicate_of=dup.of))
                    continue
                pairs.add(cid, pair_probe)
                if answer_probe is not None:
                    answers.add(cid, answer_probe)
                kept.append(c)
            ctx.candidates = kept

    # -- the whole build ------------------------------------------------------------------
    def run(self, pairs: list[SourcePair], quarantined: list[Quarantined], source_info: dict[str, Any], started: float) -> BuildResult:
        cfg = self.cfg
        self.pool = [PairContext(pair=p) for p in pairs]
        self.contexts = [c for c in self.pool if in_shard(c.pair.source_id, cfg.shard)]
        if self.batch is not None:
            self.progress.stage("batch: polling jobs")
            self.batch.prepare()
        self.progress.stage("oracle stages")
        stopped = asyncio.run(self.run_pairs())
        if self.batch is not None:
            self.progress.stage("batch: submitting")
            self.batch.submit()
            if stopped is None and self.batch.live():
                stopped = "batch_pending"
        self.progress.stage("neutrals and dedup")
        self.add_neutrals()
        self.dedup()
        oracle_name = self.oracle.name
        rows: list[DatasetRow] = []
        rejections: list[Rejection] = [
            Rejection(source_id=f"row:{q.row}", stage="source", reason=q.reason, detail=q.detail) for q in quarantined
        ]
        for ctx in self.contexts:
            for c in ctx.candidates:
                try:
                    rows.append(c.to_row(oracle_name, cfg.seed))
                except ValueError as exc:  # a candidate that breaks the contract is a recorded rejection
                    ctx.rejections.append(c.reject("export", "invalid_row", str(exc).splitlines()[0][:300]))
            ctx.candidates = []  # the rows hold what is needed now; keep one copy in memory, not two
            rejections.extend(ctx.rejections)
        rows.sort(key=lambda r: (r.source_id, KIND_ORDER[r.kind], r.augmentation, r.attribute or "", r.id))
        summary = self.summary([c.pair for c in self.contexts], quarantined, rows, rejections, source_info, stopped, time.perf_counter() - started)
        export(self.store, Path(cfg.out), rows, rejections, summary, cfg)
        return BuildResult(Path(cfg.out), summary, len(rows), stopped)

    def summary(self, pairs, quarantined, rows, rejections, source_info, stopped, seconds) -> dict[str, Any]:
        cfg = self.cfg
        stats = self.generate.stats
        by_stage: dict[str, Counter] = {}
        for r in rejections:
            by_stage.setdefault(r.stage, Counter())[r.reason] += 1
        with_rows = {r.source_id for r in rows}
        pending = sum(1 for c in self.contexts if getattr(c, "pending", False))
        only_rejected = {r.source_id for r in rejections if r.stage != "source"} - with_rows
        pair_ids = [c.pair.source_id for c in self.contexts]
        accounted = sum(1 for sid in pair_ids if sid in with_rows or sid in only_rejected) + pending
        store_stats = self.store.call_stats()
        return {
            "crome_version": __version__,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "status": f"stopped: {stopped}" if stopped else "complete",
            "source": source_info,
            "oracle": self.oracle.name,
            "seed": cfg.seed,
            "options": cfg.public_options(),
            "templates": {t: {"name": tpl.name, "version": tpl.version, "sha256": tpl.sha256} for t, tpl in self.templates.items()},
            "counts": {
                # One source row may give several pairs (RM-Bench: 9) or several quarantines.
                "source_rows": source_info.get("rows"),
                "source_pairs": len(pairs),
                "quarantined": len(quarantined),
                "quarantine_reasons": dict(Counter(q.reason for q in quarantined).most_common()),
                "pending": pending,
                "rows": len(rows),
                "rows_by_kind": dict(Counter(r.kind for r in rows).most_common()),
                "rows_by_augmentation": dict(Counter(r.augmentation for r in rows).most_common()),
                "rows_by_attribute": dict(Counter(r.attribute for r in rows if r.attribute).most_common()),
                "rejections": len(rejections),
                "rejections_by_stage": {s: dict(c.most_common()) for s, c in sorted(by_stage.items())},
            },
            "oracle_calls": {**stats.as_dict(), "store": store_stats},
            "tokens": {
                "input": stats.input_tokens,
                "output": stats.output_tokens,
                "replayed_input": stats.cached_input_tokens,
                "replayed_output": stats.cached_output_tokens,
            },
            "cost_usd": round(stats.cost_usd, 6) if stats.cost_known else None,  # spent by this run
            # What every stored call cost when it was made: the price of the dataset, however many re-runs.
            "spend": spend(self.store),
            "accounting": {
                "quarantined": len(quarantined),
                "source_pairs": len(pairs),
                "with_rows": len(set(pair_ids) & with_rows),
                "only_rejections": len(set(pair_ids) & only_rejected),
                "pending": pending,
                "balanced": accounted == len(pairs),
            },
            "seconds": round(seconds, 2),
            **({"batch": self.batch.report()} if self.batch is not None else {}),
        }


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def export(store: RunStore, out: Path, rows: list[DatasetRow], rejections: list[Rejection], summary: dict, cfg: BuildConfig) -> None:
    """Parquet shards with exactly the contract's columns, rejections, summary; the store keeps the same."""
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    n_shards = max(1, -(-len(rows) // ROWS_PER_SHARD))
    names = [f"train-{i:05d}-of-{n_shards:05d}.parquet" for i in range(n_shards)]
    for stale in data_dir.glob("*.parquet"):
        if stale.name not in names:
            stale.unlink()
    schema = arrow_schema(DatasetRow)
    for i, name in enumerate(names):
        shard = rows[i * ROWS_PER_SHARD : (i + 1) * ROWS_PER_SHARD]

        def write(path: Path, shard=shard) -> None:
            # Converted a chunk at a time: a whole shard of dicts would double the peak memory.
            with pq.ParquetWriter(path, schema) as writer:
                for j in range(0, max(1, len(shard)), WRITE_CHUNK):
                    writer.write_table(to_table(shard[j : j + WRITE_CHUNK], DatasetRow))

        _atomic_write(data_dir / name, write)
    _atomic_write(out / "rejections.parquet", lambda p: pq.write_table(to_table(rejections, Rejection), p))
    _atomic_write(out / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n"))
    store.replace_rows(rows)
    store.replace_rejections(rejections)
    store.set_meta("summary", summary)


def source_fingerprint(pairs: list[SourcePair], source_info: dict[str, Any]) -> str:
    """Identifies the source as read (every pair, in order, and the row count): shards of one build share it."""
    return stable_hash({"rows": source_info.get("rows"), "pairs": [p.source_id for p in pairs]})


def source_spec(spec: str) -> str:
    """The source as a later `crome merge` on this machine can read it again: local paths made absolute."""
    p = Path(spec)
    return str(p.resolve()) if p.exists() else spec


def build(
    cfg: BuildConfig,
    progress: Progress | None = None,
    oracle: Oracle | None = None,
    *,
    source: tuple[list[SourcePair], list[Quarantined], dict[str, Any]] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> BuildResult:
    """Run (or resume) a build; `oracle` replaces the one named by cfg.oracle (tests, custom backends).

    `source` is `read_source(cfg)` already done (a merge reads it once to check it).
    """
    started = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with RunStore.open(out) as store:
        pairs, quarantined, source_info = source if source is not None else read_source(cfg)
        mine = [p for p in pairs if in_shard(p.source_id, cfg.shard)]
        store.replace_sources(mine)
        store.replace_quarantined(quarantined)
        # The local store (never published) remembers where the source was, for `crome merge`.
        store.set_meta("source", {"spec": source_spec(cfg.source), "fingerprint": source_fingerprint(pairs, source_info)})
        (out / "config.json").write_text(json.dumps(cfg.public_options(), indent=2) + "\n")
        if not cfg.batch and not cfg.dry_run:
            from crome.builder.run.batch import live_jobs

            live = live_jobs(store)
            if live:
                # An online run would send (and pay for) the requests those jobs already carry.
                raise ValueError(
                    f"{out} has {len(live)} batch job(s) in flight with {sum(len(j['keys']) for j in live)} requests: "
                    "re-run with --batch to collect them first (`crome status` shows them)"
                )
        builder = Builder(cfg, store, progress, oracle)
        if cfg.dry_run:
            from crome.builder.run.estimate import estimate

            summary = estimate(builder, mine, quarantined, source_info)
            return BuildResult(out, summary, 0, "dry_run")
        try:
            result = builder.run(pairs, quarantined, source_info, started)
            while cfg.batch_wait and result.stopped == "batch_pending" and builder.batch is not None:
                builder.progress.stage(f"batch: waiting for {len(builder.batch.live())} job(s)")
                builder.batch.wait(cfg.poll_interval, sleep)
                builder.batch.backend.close()
                # A fresh builder per pass: the rubric memo and the call counts belong to one pass.
                builder = Builder(cfg, store, progress, builder.oracle)
                result = builder.run(pairs, quarantined, source_info, started)
        finally:
            if builder.batch is not None:
                builder.batch.backend.close()
        return result
