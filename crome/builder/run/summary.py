"""`summary.json`: what a build made, dropped and spent, and an accounting in which every source pair is explained."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from crome import __version__
from crome.builder.run.config import BuildConfig
from crome.builder.run.generate import CallStats
from crome.builder.run.status import spend
from crome.builder.stages.shortcut import summary_record
from crome.builder.store import RunStore
from crome.builder.store.tables import REJECTION_SCHEMA, rejection_from_row
from crome.builder.store.work import ROW_ORDER, BuildTables
from crome.schemas import DatasetRow


def _counts(tables: BuildTables, sql: str) -> dict[str, int]:
    """{value: count} of `sql` (value, count, first position), most common first, ties in order of first appearance."""
    return {k: int(n) for k, n, _ in sorted(tables.query(sql), key=lambda r: (-r[1], r[2]))}


def _shortcuts(tables: BuildTables) -> dict[str, Any]:
    """summary.json `shortcuts` from the store: only the shortcut-neutral rows and the shortcut stage's rejections
    (capped per phrase, so few) are read back."""
    rows = [DatasetRow.model_validate_json(data) for (data,) in tables.query(
        f"SELECT data FROM build_rows WHERE augmentation = 'shortcut_neutral' ORDER BY {ROW_ORDER}")]
    cols = ", ".join(c for c in REJECTION_SCHEMA.names if c != "ord")
    rejections = [rejection_from_row(v) for v in tables.query(f"SELECT {cols} FROM build_rejections WHERE stage = 'shortcut' ORDER BY seq")]
    return summary_record(rows, rejections)


def build_summary(
    cfg: BuildConfig,
    *,
    oracle: str,
    templates: dict[str, Any],
    tables: BuildTables,
    source_info: dict[str, Any],
    stopped: str | None,
    seconds: float,
    stats: CallStats,
    store: RunStore,
    batch: dict[str, Any] | None = None,
    first_internal_error: str | None = None,
) -> dict[str, Any]:
    """The summary, counted with SQL over what the build wrote to the run store (nothing is held in memory for it)."""
    first_row = f"min(({ROW_ORDER}))"  # where the value first appears in the exported order
    by_kind = _counts(tables, f"SELECT kind, count(*), {first_row} FROM build_rows GROUP BY kind")
    by_aug = _counts(tables, f"SELECT augmentation, count(*), {first_row} FROM build_rows GROUP BY augmentation")
    by_attr = _counts(tables, f"SELECT attribute, count(*), {first_row} FROM build_rows WHERE attribute IS NOT NULL GROUP BY attribute")
    q_reasons = _counts(tables, "SELECT reason, count(*), min(ord) FROM quarantined GROUP BY reason")
    by_stage: dict[str, dict[str, int]] = {}
    for stage, reason, n, first in sorted(tables.query("SELECT stage, reason, count(*), min(seq) FROM build_rejections GROUP BY ALL"),
                                          key=lambda r: (r[0], -r[2], r[3])):
        by_stage.setdefault(stage, {})[reason] = int(n)
    if q_reasons:  # quarantined rows come first among the rejections, under stage "source"
        merged = {**q_reasons}
        for reason, n in by_stage.get("source", {}).items():
            merged[reason] = merged.get(reason, 0) + n
        by_stage["source"] = dict(sorted(merged.items(), key=lambda kv: -kv[1]))
    by_stage = dict(sorted(by_stage.items()))
    quarantined = sum(q_reasons.values())
    ((rows, rejections),) = tables.query("SELECT (SELECT count(*) FROM build_rows), (SELECT count(*) FROM build_rejections)")
    # Every source pair explained: with rows, only rejected (not at the source), or pending.
    ((pairs, pending, with_rows, only_rejected, accounted),) = tables.query(
        """WITH r AS (SELECT DISTINCT source_id FROM build_rows),
                j AS (SELECT DISTINCT source_id FROM build_rejections WHERE stage != 'source' EXCEPT SELECT source_id FROM r),
                p AS (SELECT DISTINCT source_id FROM build_pairs)
           SELECT (SELECT count(*) FROM build_pairs),
                  (SELECT count(*) FROM build_pairs WHERE outcome = 'pending'),
                  (SELECT count(*) FROM p SEMI JOIN r USING (source_id)),
                  (SELECT count(*) FROM p SEMI JOIN j USING (source_id)),
                  (SELECT count(*) FROM build_pairs b WHERE outcome = 'pending' OR source_id IN (SELECT source_id FROM r)
                                                       OR source_id IN (SELECT source_id FROM j))"""
    )
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
            "source_pairs": pairs,
            "quarantined": quarantined,
            "quarantine_reasons": q_reasons,
            "pending": pending,
            "rows": rows,
            "rows_by_kind": by_kind,
            "rows_by_augmentation": by_aug,
            "rows_by_attribute": by_attr,
            "rejections": quarantined + rejections,
            "rejections_by_stage": by_stage,
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
            "quarantined": quarantined,
            "source_pairs": pairs,
            "with_rows": with_rows,
            "only_rejections": only_rejected,
            "pending": pending,
            "balanced": accounted == pairs,
        },
        "seconds": round(seconds, 2),
        **({"batch": batch} if batch is not None else {}),
        **({"shortcuts": _shortcuts(tables)} if cfg.neutralize_shortcuts else {}),
    }
