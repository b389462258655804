"""`crome status RUN_DIR`: where a run stands, read from its store alone (no provider is called, no key needed).

Spend, two figures (batch requests at batch prices, the others at the standard price):
- billed (`cost_usd`): every request sent to the provider, with the usage it reported: retries
  and re-asks, refusals and cut-off answers, calls sent again after a failure on a re-run. What
  the provider charged, as far as it reported usage; `unanswered_requests` got no answer and no
  usage (rate limits, server errors, timeouts: providers do not bill those as a rule);
- kept (`kept.cost_usd`): what the answers the cache holds cost when they were made, re-asks
  included: the dataset's price had every call succeeded at once.

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
    """Requests, tokens and cost billed, and what the kept answers cost (None cost: a model without a price)."""
    from crome.builder.oracles import oracle_class
    from crome.builder.oracles.llm.pricing import estimate_cost

    out: dict[str, Any] = {"calls": 0, "batch_calls": 0, "requests": 0, "batch_requests": 0, "unanswered_requests": 0, "input_tokens": 0, "output_tokens": 0,
                           "cost_usd": 0.0, "batch_cost_usd": 0.0, "online_cost_usd": 0.0}
    kept: dict[str, Any] = {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
    known = True
    for row in store.spend_totals():
        out["calls"] += row["calls"]  # stored calls (one per key), of any status
        out["batch_calls"] += row["calls"] if row["batch"] else 0
        out["requests"] += row["attempts"]
        out["batch_requests"] += row["attempts"] if row["batch"] else 0
        out["unanswered_requests"] += row["unanswered_attempts"]
        out["input_tokens"] += row["input_tokens"]
        out["output_tokens"] += row["output_tokens"]
        kept["calls"] += row["kept_calls"]
        kept["input_tokens"] += row["kept_input_tokens"]
        kept["output_tokens"] += row["kept_output_tokens"]
        cls = oracle_class(row["provider"])
        if cls is None or not cls.capabilities.priced:  # rules, and test oracles, cost nothing
            continue
        billed = estimate_cost(row["model"], row["input_tokens"], row["output_tokens"], batch=row["batch"])
        made = estimate_cost(row["model"], row["kept_input_tokens"], row["kept_output_tokens"], batch=row["batch"])
        if billed is None or made is None:
            known = False
            continue
        out["cost_usd"] += billed
        out["batch_cost_usd" if row["batch"] else "online_cost_usd"] += billed
        kept["cost_usd"] += made
    for k in ("cost_usd", "batch_cost_usd", "online_cost_usd"):
        out[k] = round(out[k], 6) if known else None
    kept["cost_usd"] = round(kept["cost_usd"], 6) if known else None
    return {**out, "kept": kept}


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
