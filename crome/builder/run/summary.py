"""`summary.json`: what a build made, dropped and spent, and an accounting in which every source pair is explained."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Any

from crome import __version__
from crome.builder.run.config import BuildConfig
from crome.builder.run.generate import CallStats
from crome.builder.run.status import spend
from crome.builder.stages.records import PairContext
from crome.builder.stages.shortcut import summary_record
from crome.builder.store import RunStore
from crome.schemas import DatasetRow, Quarantined, Rejection


def build_summary(
    cfg: BuildConfig,
    *,
    oracle: str,
    templates: dict[str, Any],
    contexts: list[PairContext],
    quarantined: list[Quarantined],
    rows: list[DatasetRow],
    rejections: list[Rejection],
    source_info: dict[str, Any],
    stopped: str | None,
    seconds: float,
    stats: CallStats,
    store: RunStore,
    batch: dict[str, Any] | None = None,
    first_internal_error: str | None = None,
) -> dict[str, Any]:
    by_stage: dict[str, Counter] = {}
    for r in rejections:
        by_stage.setdefault(r.stage, Counter())[r.reason] += 1
    with_rows = {r.source_id for r in rows}
    pending = sum(1 for c in contexts if c.pending)
    only_rejected = {r.source_id for r in rejections if r.stage != "source"} - with_rows
    pair_ids = [c.pair.source_id for c in contexts]
    accounted = sum(1 for sid in pair_ids if sid in with_rows or sid in only_rejected) + pending
    return {
        "crome_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": f"stopped: {stopped}" if stopped else "complete",
        "source": source_info,
        "oracle": oracle,
        "seed": cfg.seed,
        "options": cfg.public_options(),
        "templates": {t: {"name": tpl.name, "version": tpl.version, "sha256": tpl.sha256} for t, tpl in templates.items()},
        "counts": {
            # One source row may give several pairs (RM-Bench: 9) or several quarantines.
            "source_rows": source_info.get("rows"),
            "source_pairs": len(contexts),
            "quarantined": len(quarantined),
            "quarantine_reasons": dict(Counter(q.reason for q in quarantined).most_common()),
            "pending": pending,
            "rows": len(rows),
            "rows_by_kind": dict(Counter(r.kind for r in rows).most_common()),
            "rows_by_augmentation": dict(Counter(r.augmentation for r in rows).most_common()),
            "rows_by_attribute": dict(Counter(r.attribute for r in rows if r.attribute).most_common()),
            "rejections": len(rejections),
            "rejections_by_stage": {s: dict(c.most_common()) for s, c in sorted(by_stage.items())},
            "internal_errors": stats.internal,  # pairs that raised (a bug); the first traceback is in the log
        },
        **({"first_internal_error": first_internal_error} if first_internal_error else {}),
        "oracle_calls": {**stats.as_dict(), "store": store.call_stats()},
        # Billed in this run: every request sent (retries, re-asks, refusals, cut-offs), with its usage.
        "tokens": {
            "input": stats.input_tokens,
            "output": stats.output_tokens,
            "replayed_input": stats.cached_input_tokens,
            "replayed_output": stats.cached_output_tokens,
        },
        "cost_usd": round(stats.cost_usd, 6) if stats.cost_known else None,  # billed in this run
        # Over every run of this directory: what was billed, and what the kept answers cost (`kept`).
        "spend": spend(store),
        "accounting": {
            "quarantined": len(quarantined),
            "source_pairs": len(contexts),
            "with_rows": len(set(pair_ids) & with_rows),
            "only_rejections": len(set(pair_ids) & only_rejected),
            "pending": pending,
            "balanced": accounted == len(contexts),
        },
        "seconds": round(seconds, 2),
        **({"batch": batch} if batch is not None else {}),
        **({"shortcuts": summary_record(rows, rejections)} if cfg.neutralize_shortcuts else {}),
    }
