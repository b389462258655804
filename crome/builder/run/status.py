"""`crome status RUN_DIR`: where a run stands, read from its store alone (no provider is called, no key needed).

Spend is priced from the recorded calls: batch calls (those with a batch job id) at batch prices,
the others at the standard price. A call sent again after a failure keeps only its last record,
so this is what the run's cache holds, a floor on what was billed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crome.builder.run.batch import JOB_KIND, batch_report
from crome.builder.store import RunStore



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


def run_status(run_dir: str | Path) -> dict[str, Any]:
    """The run's last summary status and counts, its calls, its spend and its batch jobs."""
    run_dir = Path(run_dir)
    with RunStore.open(run_dir, read_only=True) as store:
        summary = store.get_meta("summary") or {}
        jobs = dict(store.iter_artifacts(JOB_KIND))
        calls = store.call_stats()
        money = spend(store)
    config_path = run_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    counts = summary.get("counts", {})
    return {
        "run": run_dir.name,
        "status": summary.get("status", "not exported yet"),
        "oracle": summary.get("oracle") or config.get("oracle"),
        "shard": config.get("shard"),
        "batch_mode": bool(config.get("batch")),
        "counts": {k: counts.get(k) for k in ("source_pairs", "quarantined", "pending", "rows", "rejections")},
        "calls": {"total": calls["total"], "failed": calls["failed"], "by_status": calls["by_status"], "by_task": calls["by_task"]},
        "spend": money,
        "batch": batch_report(jobs),
        "shards": summary.get("shards"),
    }


__all__ = ["run_status", "spend"]
