"""The outputs of a build: Parquet shards with exactly the contract's columns, rejections, summary; the store keeps the same.

They are written as one export of the run folder (crome.outputs): staged, then renamed into place
under a recorded plan, so a kill at any moment leaves the previous export or the new one, and
readers (publish, audit, filter, train) check they read the files of one export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq

from crome.builder.store import LOCK_FILE, STORE_FILE, RunStore
from crome.outputs import Export, Folder, Layout
from crome.schemas import DatasetRow, Rejection, arrow_schema, to_table

ROWS_PER_SHARD = 100_000
WRITE_CHUNK = 5_000


def _older_run(folder: Path) -> bool:
    """A run folder an older crome wrote (no marker): it holds a run store."""
    return (folder / STORE_FILE).is_file()


# What a run folder (crome build, crome merge) holds: the store, its lock, the options, the live
# progress and the export (data shards, rejections, summary).
RUN_LAYOUT = Layout(
    kind="run",
    what="`crome build` or `crome merge`",
    lock=LOCK_FILE,
    own=(STORE_FILE, STORE_FILE + ".wal", STORE_FILE + ".tmp", LOCK_FILE, "config.json", "config.json.tmp",
         "progress.json", "progress.json.tmp", "data"),
    exports=r"data/train-\d{5}-of-\d{5}\.parquet|rejections\.parquet|summary\.json",
    legacy=_older_run,
)


def write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def export(
    store: RunStore, owned: Folder, rows: list[DatasetRow], rejections: list[Rejection], summary: dict, *,
    writer: str = "crome build", stage: Callable[[str], None] = lambda name: None,
) -> dict:
    """Write the run's outputs as one export of `owned` (the run folder, its lock held); returns the export record."""
    n_shards = max(1, -(-len(rows) // ROWS_PER_SHARD))
    names = [f"data/train-{i:05d}-of-{n_shards:05d}.parquet" for i in range(n_shards)]
    schema = arrow_schema(DatasetRow)
    stage("export: writing")
    out = Export(owned, writer)
    try:
        for i, name in enumerate(names):
            shard = rows[i * ROWS_PER_SHARD : (i + 1) * ROWS_PER_SHARD]
            # Converted a chunk at a time: a whole shard of dicts would double the peak memory.
            with pq.ParquetWriter(out.path(name), schema) as writer_:
                for j in range(0, max(1, len(shard)), WRITE_CHUNK):
                    writer_.write_table(to_table(shard[j : j + WRITE_CHUNK], DatasetRow))
        pq.write_table(to_table(rejections, Rejection), out.path("rejections.parquet"))
        write_json(out.path("summary.json"), summary)
    except BaseException:
        out.abort()
        raise
    record = out.commit(stage=lambda s: stage(f"export: {s}"))
    store.replace_rows(rows)
    store.replace_rejections(rejections)
    store.set_meta("summary", summary)
    return record
