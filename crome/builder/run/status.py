"""`crome status RUN_DIR`: where a run stands, read from its store alone (no provider is called, no key needed).

Spend is priced from the recorded calls: batch calls (those with a batch job id) at batch prices,
the others at the standard price. A call sent again after a failure keeps only its last record,
so this is what the run's cache holds, a floor on what was billed.

While a build runs, its store is open for writing and DuckDB lets no other process read it, so
status reads a snapshot instead: the build's live `progress.json` (stage, pairs, calls, cost so
far) and the last complete export (its summary). It never waits for, nor blocks, the build.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crome.builder.run.batch import JOB_KIND, batch_report
from crome.builder.run.progress import read_progress
from crome.builder.store import LOCK_FILE, STORE_FILE, RunInUseError, RunStore
from crome.outputs import OutputError, lock_holder, read_export



def spend(store: RunStore) -> dict[str, Any]:
    """Calls, tokens and cost of every call the store holds (None cost: a model without a price)."""
    from crome.builder.oracles import oracle_class
    from crome.builder.oracles.llm.pricing import estimate_cost

    out: dict[str, Any] = {"calls": 0, "batch_calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0,
                           "batch_cost_usd": 0.0, "online_cost_usd": 0.0}
    known = True
    for row in store.token_totals():
        out["calls"] += row["calls"]
        out["batch_calls"] += row["calls"] if row["batch"] else 0
        out["input_tokens"] += row["input_tokens"]
        out["output_tokens"] += row["output_tokens"]
        cls = oracle_class(row["provider"])
        if cls is None or not cls.capabilities.priced:  # rules, and test oracles, cost nothing
            continue
        cost = estimate_cost(row["model"], row["input_tokens"], row["output_tokens"], batch=row["batch"])
        if cost is None:
            known = False
            continue
        out["cost_usd"] += cost
        out["batch_cost_usd" if row["batch"] else "online_cost_usd"] += cost
    for k in ("cost_usd", "batch_cost_usd", "online_cost_usd"):
        out[k] = round(out[k], 6) if known else None
    return out


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _last_export(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """The summary of the last complete export (or {}) and when it was written."""
    try:
        record = read_export(run_dir)
    except OutputError:
        return {}, None
    if record is None or "summary.json" not in record.files:
        return {}, None
    return _json(run_dir / "summary.json"), record.written_at


def _report(run_dir: Path, summary: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    counts = summary.get("counts", {})
    return {
        "run": run_dir.name,
        "status": summary.get("status", "not exported yet"),
        "oracle": summary.get("oracle") or config.get("oracle"),
        "shard": config.get("shard"),
        "batch_mode": bool(config.get("batch")),
        "counts": {k: counts.get(k) for k in ("source_pairs", "quarantined", "pending", "rows", "rejections")},
        "shards": summary.get("shards"),
        "building": None,
        "interrupted": None,
    }


def run_status(run_dir: str | Path) -> dict[str, Any]:
    """The run's last summary status and counts, its calls, its spend and its batch jobs; a snapshot while a build runs."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} does not exist (expected the --out folder of `crome build`)" if not run_dir.exists()
                                else f"{run_dir} is a file; expected the --out folder of `crome build`")
    if not (run_dir / STORE_FILE).is_file():
        raise FileNotFoundError(f"{run_dir} holds no run store ({STORE_FILE}): expected the --out folder of `crome build` or `crome merge`")
    config = _json(run_dir / "config.json")
    if lock_holder(run_dir, LOCK_FILE) is None:
        try:
            with RunStore.open(run_dir, read_only=True) as store:
                summary = store.get_meta("summary") or {}
                jobs = dict(store.iter_artifacts(JOB_KIND))
                calls = store.call_stats()
                money = spend(store)
        except RunInUseError:
            pass  # a build started meanwhile: its snapshot below
        else:
            report = _report(run_dir, summary, config)
            progress = read_progress(run_dir)
            if progress and progress.get("stage") not in (None, "done"):
                report["interrupted"] = {k: progress.get(k) for k in ("stage", "pairs_done", "pairs_total", "updated_at")}
            report.update(
                calls={"total": calls["total"], "failed": calls["failed"], "by_status": calls["by_status"], "by_task": calls["by_task"]},
                spend=money, batch=batch_report(jobs),
            )
            return report
    return _snapshot(run_dir, config)


def _snapshot(run_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """A running build: its live progress, and the counts of the export before it."""
    progress = read_progress(run_dir) or {}
    summary, written_at = _last_export(run_dir)
    report = _report(run_dir, summary, config)
    pid = lock_holder(run_dir, LOCK_FILE) or progress.get("pid")
    report["building"] = {"pid": pid, **{k: progress.get(k) for k in (
        "stage", "pairs_done", "pairs_total", "calls", "new_calls", "failed_calls", "cost_usd", "updated_at")},
        "last_export_at": written_at}
    report["status"] = f"build in progress (pid {pid}): {progress.get('stage', 'starting')}"
    report["calls"] = {"total": progress.get("calls", 0), "failed": progress.get("failed_calls", 0), "by_status": {}, "by_task": {}}
    report["spend"] = None  # priced from the store, which the build holds: see building.cost_usd
    report["batch"] = batch_report({})
    return report


__all__ = ["run_status", "spend"]
