"""Keep the augmentations a baseline reward model gets wrong or is unsure about (Crome's filtering step).

A baseline RM, trained on the original rows only, scores every augmented pair (d = r(chosen) -
r(rejected)). With threshold tau >= 0:

- a strict (causal) pair is kept when the baseline misranks it (d <= 0) or ranks it with a
  margin below tau (d < tau): those are the pairs that still teach something;
- a tie (neutral) pair is kept when |d| > tau: the baseline is not yet invariant to it;
- original rows are always kept (and not scored).

Kept augmented rows carry the margin in `quality.baseline_margin` and the check
`baseline_filter`; every dropped pair becomes a Rejection (stage "filter", margin in detail),
so counts still add up.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from crome import __version__
from crome.outputs import Export, Layout, claim, folder_lock, read_export
from crome.schemas import DatasetRow, Rejection, arrow_schema, to_table
from crome.train.data import DataError, data_files

FILTER_CHECK = "baseline_filter"
LOCK_FILE = "crome.lock"  # the same writer lock as a run folder's, so publish and filter exclude each other


def _older_filtered(folder: Path) -> bool:
    """A filtered run an older crome wrote (no marker): its summary has a `filter` section."""
    try:
        return "filter" in json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


# What `crome filter --out` holds: a run folder without a store (its export is the whole of it).
FILTERED_LAYOUT = Layout(
    kind="filtered", what="`crome filter`", lock=LOCK_FILE, own=(LOCK_FILE, "data"),
    exports=r"data/[^/]+\.parquet|rejections\.parquet|summary\.json|config\.json", legacy=_older_filtered,
)


def keep(kind: str, margin: float, tau: float) -> bool:
    """The filter rule for one augmented pair."""
    if kind == "neutral":
        return abs(margin) > tau
    return margin <= 0 or margin < tau


def read_rows(path: Path) -> list[DatasetRow]:
    """Rows of one Parquet shard, validated against the data contract (errors name the row)."""
    rows = []
    for i, record in enumerate(pq.read_table(path).to_pylist()):
        try:
            rows.append(DatasetRow.model_validate(record))
        except ValidationError as e:
            raise DataError(f"{path.name} row {i} (id {record.get('id')}): {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from e
    return rows


def _rejection(row: DatasetRow, margin: float, tau: float) -> Rejection:
    if row.kind == "neutral":
        reason, detail = "baseline_invariant", f"|margin| {abs(margin):.4f} <= tau {tau:g} (margin {margin:.4f})"
    else:
        reason, detail = "baseline_confident", f"margin {margin:.4f} >= tau {tau:g}"
    return Rejection(
        source_id=row.source_id,
        stage="filter",
        reason=reason,
        detail=detail,
        candidate_id=row.id,
        augmentation=row.augmentation,
        attribute=row.attribute,
        candidate={
            "prompt": [m.model_dump() for m in row.prompt],
            "chosen": row.chosen[0].content,
            "rejected": row.rejected[0].content,
            "preference": row.preference,
            "baseline_margin": margin,
        },
    )


def _counts(rows: list[DatasetRow], rejections: pa.Table) -> dict[str, Any]:
    by_stage: dict[str, Counter] = {}
    for stage, reason in zip(rejections.column("stage").to_pylist(), rejections.column("reason").to_pylist()):
        by_stage.setdefault(stage, Counter())[reason] += 1
    return {
        "rows": len(rows),
        "rows_by_kind": dict(Counter(r.kind for r in rows)),
        "rows_by_augmentation": dict(Counter(r.augmentation for r in rows)),
        "rows_by_attribute": dict(Counter(r.attribute for r in rows if r.attribute is not None)),
        "rejections": rejections.num_rows,
        "rejections_by_stage": {s: dict(c) for s, c in by_stage.items()},
    }


def _margin_stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}


def filter_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    baseline: str,
    tau: float,
    batch_size: int = 16,
    max_length: int | None = 1024,
    dtype: str = "auto",
    device: str | None = None,
    scorer: tuple[Any, Any] | None = None,
) -> dict[str, Any]:
    """Write a filtered copy of `run_dir` to `out_dir` and return its summary. `scorer` = (model, tokenizer) if loaded."""
    from crome.train.evaluate import load_scorer, score_pairs_with_truncation
    from crome.train.pairs import as_eval_pair

    run, out = Path(run_dir), Path(out_dir)
    if tau < 0:
        raise ValueError("tau (--keep-margin) must be >= 0")
    if out.resolve() == run.resolve():
        raise ValueError("the filtered run must go to a new directory, not over its input")
    claim(out, FILTERED_LAYOUT, "crome filter", create=False)  # before scoring: a folder that is not ours stops here
    record = read_export(run) if run.is_dir() else None
    if record is not None:
        # The files of the run's last export, checked and read under its writer lock: no build re-exports meanwhile.
        with folder_lock(run, LOCK_FILE, what="run"):
            record = read_export(run)
            shards = {p: read_rows(p) for p in record.paths(r"data/[^/]+\.parquet")}
            old = pq.read_table(run / "rejections.parquet") if "rejections.parquet" in record.files else None
            summary = json.loads((run / "summary.json").read_text()) if "summary.json" in record.files else None
    else:  # a folder crome did not mark (an older crome, or rows from elsewhere): its data/ as it is
        files = [f for split in (data_files(run) if run.is_dir() else {}).values() for f in split]
        shards = {Path(f): read_rows(Path(f)) for f in files}
        old = pq.read_table(run / "rejections.parquet") if (run / "rejections.parquet").exists() else None
        summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else None
    if not shards:
        raise DataError(f"{run}: no data/*.parquet (expected a crome run dir)")

    augmented = [(shard, i) for shard, rows in shards.items() for i, r in enumerate(rows) if r.kind != "original"]
    model, tokenizer = scorer or load_scorer(baseline, dtype=dtype, device=device)
    pairs = [as_eval_pair(shards[s][i], where=f"{s.name} row {i}") for s, i in augmented]
    margins, truncated = score_pairs_with_truncation(model, tokenizer, pairs, batch_size, max_length) if pairs else ([], [])

    margin_of = {key: m for key, m in zip(augmented, margins)}
    kept_rows: dict[Path, list[DatasetRow]] = {}
    new_rejections: list[Rejection] = []
    kept, dropped = Counter(), Counter()
    margins_by_kind: dict[str, list[float]] = {}
    for shard, rows in shards.items():
        kept_rows[shard] = []
        for i, row in enumerate(rows):
            if row.kind == "original":
                kept_rows[shard].append(row)
                continue
            margin = margin_of[(shard, i)]
            margins_by_kind.setdefault(row.kind, []).append(margin)
            if keep(row.kind, margin, tau):
                quality = row.quality.model_copy(update={"baseline_margin": margin, "checks": [*row.quality.checks, FILTER_CHECK]})
                kept_rows[shard].append(row.model_copy(update={"quality": quality}))
                kept[row.kind] += 1
            else:
                new_rejections.append(_rejection(row, margin, tau))
                dropped[row.kind] += 1

    schema = arrow_schema(Rejection)
    old = old if old is not None else schema.empty_table()
    rejections = pa.concat_tables([old.select(schema.names).cast(schema), to_table(new_rejections, Rejection)])

    summary = summary if summary is not None else {"crome_version": __version__}
    all_rows = [r for rows in kept_rows.values() for r in rows]
    summary.setdefault("counts", {}).update(_counts(all_rows, rejections))
    summary["filter"] = {
        "baseline": baseline,
        "tau": tau,
        "rule": "keep strict pairs with margin < tau (or <= 0), ties with |margin| > tau; originals always",
        "input_run": run.name,
        "input_export": record.id if record is not None else None,
        "max_length": max_length,
        "scored": len(pairs),
        "truncated_pairs": sum(truncated),
        "kept": dict(kept),
        "dropped": dict(dropped),
        "margins": {k: _margin_stats(v) for k, v in margins_by_kind.items()},
        "crome_version": __version__,
    }
    owned = claim(out, FILTERED_LAYOUT, "crome filter")
    with folder_lock(out, LOCK_FILE, what="filtered run"):
        owned = claim(out, FILTERED_LAYOUT, "crome filter")  # read again under the lock
        export = Export(owned, "crome filter")
        try:
            for shard, rows in kept_rows.items():
                pq.write_table(to_table(rows, DatasetRow), export.path(f"data/{shard.name}"))
            pq.write_table(rejections, export.path("rejections.parquet"))
            if (run / "config.json").is_file():
                export.copy("config.json", run / "config.json")
            (export.path("summary.json")).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        except BaseException:
            export.abort()
            raise
        export.commit()
    return summary
