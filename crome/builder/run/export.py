"""The outputs of a build: Parquet shards with exactly the contract's columns, rejections, summary; the store keeps the same.

They are written as one export of the run folder (crome.outputs): staged, then renamed into place
under a recorded plan, so a kill at any moment leaves the previous export or the new one, and
readers (publish, audit, filter, train) check they read the files of one export.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from crome.builder.run.progress import ProgressFile
from crome.builder.store import LOCK_FILE, STORE_FILE, RunStore
from crome.builder.store.work import BuildTables
from crome.outputs import Export, Folder, Layout
from crome.schemas import DatasetRow, Rejection, arrow_schema, to_table

ROWS_PER_SHARD = 100_000
WRITE_CHUNK = 5_000  # rows per Parquet row group
# Rows turned into Python objects at a time: a row is ~25 KB as pydantic objects and ~3 KB in Arrow, so a
# row group is built from Arrow tables of this many rows, joined into one contiguous table (95 MB less at the
# peak than 5,000 objects at once). The files' bytes are the same whatever this is (tests/builder/run/test_streaming.py);
# a row group written from a table of several chunks would not be (its pages are cut at the chunks).
CONVERT_CHUNK = 1_000


def _row_table(data, n: int) -> pa.Table:
    """The next `n` rows of the JSON iterator `data` (fewer at its end) as one Arrow table of the contract."""
    parts = []
    while n > 0:
        chunk = [DatasetRow.model_validate_json(d) for d in itertools.islice(data, min(CONVERT_CHUNK, n))]
        if not chunk:
            break
        parts.append(to_table(chunk, DatasetRow))
        del chunk
        n -= len(parts[-1])
    return pa.concat_tables(parts).combine_chunks() if parts else to_table([], DatasetRow)


def _older_run(folder: Path) -> bool:
    """A run folder an older crome wrote (no marker): it holds a run store."""
    return (folder / STORE_FILE).is_file()


# What a run folder (crome build, crome merge) holds: the store, its lock, the options, the live
# progress, the export (data shards, rejections, summary) and, built with --executor ray, the
# shards' own run folders (shards/shard-i-of-N).
RUN_LAYOUT = Layout(
    kind="run",
    what="`crome build` or `crome merge`",
    lock=LOCK_FILE,
    own=(STORE_FILE, STORE_FILE + ".wal", STORE_FILE + ".tmp", LOCK_FILE, "config.json", "config.json.tmp",
         "progress.json", "progress.json.tmp", "data", "shards"),
    exports=r"data/train-\d{5}-of-\d{5}\.parquet|rejections\.parquet|summary\.json",
    legacy=_older_run,
)


def write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def export(
    store: RunStore, owned: Folder, tables: BuildTables, summary: dict, *, writer: str = "crome build", progress: ProgressFile | None = None,
) -> dict:
    """Write the run's outputs as one export of `owned` (the run folder, its lock held), streaming from the run store.

    Rows come from the store in their export order (DuckDB sorts them out of core) and are written
    `WRITE_CHUNK` at a time, so neither the rows nor a Parquet shard are ever whole in memory.
    The live progress file says how far the writing is (`rows_exported`, then the stage).
    """
    def stage(name: str, **fields) -> None:
        if progress is not None:
            progress.update(stage=name, force=True, **fields)

    (n_rows,) = tables.query("SELECT count(*) FROM build_rows")[0]
    duplicate = tables.query("SELECT id, min(source_id), count(*) FROM build_rows GROUP BY id HAVING count(*) > 1 LIMIT 1")
    if duplicate:
        rid, source_id, n = duplicate[0]
        raise ValueError(f"{n} rows have the same id {rid} (source {source_id}): duplicates must be rejected by dedup before the rows are stored")
    n_shards = max(1, -(-n_rows // ROWS_PER_SHARD))
    names = [f"data/train-{i:05d}-of-{n_shards:05d}.parquet" for i in range(n_shards)]
    schema = arrow_schema(DatasetRow)
    stage("export: writing rows", rows_exported=0)
    out = Export(owned, writer)
    try:
        data = tables.iter_row_data()
        done = 0
        for name in names:
            with pq.ParquetWriter(out.path(name), schema) as writer_:
                left = min(ROWS_PER_SHARD, n_rows - done)
                while True:  # at least one (empty) chunk: an empty shard still has its schema
                    table = _row_table(data, min(WRITE_CHUNK, left))
                    writer_.write_table(table, row_group_size=WRITE_CHUNK)
                    done += table.num_rows
                    left -= table.num_rows
                    del table
                    stage("export: writing rows", rows_exported=done)
                    if left <= 0:
                        break
        stage("export: writing rejections")
        with pq.ParquetWriter(out.path("rejections.parquet"), arrow_schema(Rejection)) as writer_:
            rejections = tables.iter_rejections()
            first = True
            while True:
                chunk = list(itertools.islice(rejections, WRITE_CHUNK))
                if chunk or first:  # an empty file still has its schema
                    writer_.write_table(to_table(chunk, Rejection))
                first = False
                if len(chunk) < WRITE_CHUNK:
                    break
        write_json(out.path("summary.json"), summary)
    except BaseException:
        out.abort()
        raise
    record = out.commit(stage=lambda s: stage(f"export: {s}"))
    tables.publish_rows()
    store.set_meta("summary", summary)
    return record
