"""`crome neutralize RUN --out RUN2`: a built run plus shortcut-neutral ties, without rebuilding it.

The same discovery and ties as `crome build --neutralize-shortcuts` (crome.builder.stages.shortcut),
run on the original rows of RUN's last export: the phrases split chosen from rejected there, and
each selected original pair gets a tie that differs only in the phrase. The rows of RUN are copied
as they are; a tie whose id RUN already holds is a recorded `duplicate` rejection. The content
guard is the deny list and the per-answer span rule (no oracle is called: a judge's content check
runs in `crome build --neutralize-shortcuts` with an LLM oracle, where calls are cached in the run
store). RUN2 is written like every crome output: a new, empty or crome-marked folder, one export.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from crome import __version__
from crome.builder.run.export import ROWS_PER_SHARD
from crome.builder.stages.shortcut import (
    MAX_PER_PHRASE, MIN_STRENGTH, phrase_rejection, plan_phrases, summary_record, tie,
)
from crome.builder.stages.shortcut_find import find_shortcuts
from crome.builder.store import LOCK_FILE
from crome.outputs import Export, Layout, claim, folder_lock, read_export
from crome.schemas import DatasetRow, Rejection, SourcePair, arrow_schema, to_table

# What `crome neutralize --out` holds: like a filtered run, a run folder without a store.
NEUTRALIZED_LAYOUT = Layout(
    kind="neutralized", what="`crome neutralize`", lock=LOCK_FILE, own=(LOCK_FILE, "data"),
    exports=r"data/[^/]+\.parquet|rejections\.parquet|summary\.json|config\.json",
)


class NeutralizeError(ValueError):
    """RUN cannot be read or RUN2 cannot be written; the message names the file, row or option."""


def _read_rows(path: Path) -> list[DatasetRow]:
    rows = []
    for i, record in enumerate(pq.read_table(path).to_pylist()):
        try:
            rows.append(DatasetRow.model_validate(record))
        except ValidationError as e:
            raise NeutralizeError(f"{path.name} row {i} (id {record.get('id')}): {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None
    return rows


def _as_source(row: DatasetRow, i: int) -> SourcePair:
    return SourcePair(source_id=row.source_id, prompt=row.prompt, chosen=row.chosen[0], rejected=row.rejected[0], preference=1.0, row=i)


def neutralize_run(run_dir: str | Path, out_dir: str | Path, *, user: list[dict[str, str]] | None = None, seed: int = 0,
                   max_per_phrase: int = MAX_PER_PHRASE, min_strength: float = MIN_STRENGTH) -> dict[str, Any]:
    """Write RUN's rows plus shortcut-neutral ties to `out_dir`; returns its summary (with `shortcuts`)."""
    run, out = Path(run_dir), Path(out_dir)
    if out.resolve() == run.resolve():
        raise NeutralizeError("--out must be a new folder, not the run being read")
    claim(out, NEUTRALIZED_LAYOUT, "crome neutralize", create=False)
    if not run.is_dir():
        raise NeutralizeError(f"{run} is not a run folder (give the folder of `crome build`, `crome merge` or `crome filter`)")
    with folder_lock(run, LOCK_FILE, what="run"):
        record = read_export(run)
        if record is None:
            raise NeutralizeError(f"{run} has no crome export (expected the folder of `crome build`, `crome merge` or `crome filter`)")
        files = record.paths(r"data/[^/]+\.parquet")
        rows = [r for f in files for r in _read_rows(f)]
        old = pq.read_table(run / "rejections.parquet") if "rejections.parquet" in record.files else None
        summary = json.loads((run / "summary.json").read_text()) if "summary.json" in record.files else {}
    if not rows:
        raise NeutralizeError(f"{run}: the export has no rows")

    con = duckdb.connect()
    try:
        listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
        con.execute(f"CREATE VIEW pairs AS SELECT * FROM read_parquet([{listed}])")
        found = find_shortcuts(con, strict_filter="kind = 'original'")
    finally:
        con.close()
    originals = [_as_source(r, i) for i, r in enumerate(rows) if r.kind == "original" and r.preference == 1.0]
    phrases = plan_phrases(originals, found=found, user=user or [], min_strength=min_strength, max_per_phrase=max_per_phrase, seed=seed)

    seen = {r.id for r in rows}
    new_rows: list[DatasetRow] = []
    rejections: list[Rejection] = []
    recorded: set[tuple[str, str]] = set()
    for pair in originals:
        for p in phrases:
            if pair.source_id not in p.selected:
                continue
            if p.status != "used":
                if (p.feature, p.text) not in recorded:
                    recorded.add((p.feature, p.text))
                    rejections.append(phrase_rejection(p, pair.source_id))
                continue
            made = tie(pair, p, seed)
            if isinstance(made, str):
                rejections.append(Rejection(source_id=pair.source_id, stage="shortcut", reason="phrase_carries_answer",
                                            detail=f"{p.feature} {p.text!r}: {made}", augmentation="shortcut_neutral", attribute=p.text))
                continue
            if made.id in seen:
                rejections.append(made.reject("shortcut", "exact_duplicate", "RUN already holds this pair", duplicate_of=made.id))
                continue
            seen.add(made.id)
            new_rows.append(made.to_row("rules", seed))

    all_rows = rows + new_rows
    schema = arrow_schema(Rejection)
    old = old if old is not None else schema.empty_table()
    table = pa.concat_tables([old.select(schema.names).cast(schema), to_table(rejections, Rejection)])
    by_stage: dict[str, Counter] = {}
    for stage, reason in zip(table.column("stage").to_pylist(), table.column("reason").to_pylist()):
        by_stage.setdefault(stage, Counter())[reason] += 1
    summary.setdefault("counts", {}).update({
        "rows": len(all_rows), "rows_by_kind": dict(Counter(r.kind for r in all_rows)),
        "rows_by_augmentation": dict(Counter(r.augmentation for r in all_rows)),
        "rows_by_attribute": dict(Counter(r.attribute for r in all_rows if r.attribute)),
        "rejections": table.num_rows, "rejections_by_stage": {s: dict(c) for s, c in sorted(by_stage.items())},
    })
    summary["shortcuts"] = summary_record(new_rows, rejections)
    summary["neutralize"] = {"input_run": run.name, "input_export": record.id, "seed": seed, "max_per_phrase": max_per_phrase,
                             "min_strength": min_strength, "given": user or [], "ties_added": len(new_rows), "crome_version": __version__}

    all_rows.sort(key=lambda r: (r.source_id, r.kind, r.augmentation, r.attribute or "", r.id))
    n_shards = max(1, -(-len(all_rows) // ROWS_PER_SHARD))
    owned = claim(out, NEUTRALIZED_LAYOUT, "crome neutralize")
    with folder_lock(out, LOCK_FILE, what="neutralized run"):
        owned = claim(out, NEUTRALIZED_LAYOUT, "crome neutralize")  # read again under the lock
        export = Export(owned, "crome neutralize")
        try:
            for i in range(n_shards):
                shard = all_rows[i * ROWS_PER_SHARD : (i + 1) * ROWS_PER_SHARD]
                pq.write_table(to_table(shard, DatasetRow), export.path(f"data/train-{i:05d}-of-{n_shards:05d}.parquet"))
            pq.write_table(table, export.path("rejections.parquet"))
            if (run / "config.json").is_file():
                export.copy("config.json", run / "config.json")
            export.path("summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        except BaseException:
            export.abort()
            raise
        export.commit()
    return summary
