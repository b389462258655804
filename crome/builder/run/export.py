"""The outputs of a build: Parquet shards with exactly the contract's columns, rejections, summary; the store keeps the same."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq

from crome.builder.store import RunStore
from crome.schemas import DatasetRow, Rejection, arrow_schema, to_table

ROWS_PER_SHARD = 100_000
WRITE_CHUNK = 5_000


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write to a temporary name, then rename: a kill leaves the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_json(path: Path, value: dict) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n"))


def export(store: RunStore, out: Path, rows: list[DatasetRow], rejections: list[Rejection], summary: dict) -> None:
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

        atomic_write(data_dir / name, write)
    atomic_write(out / "rejections.parquet", lambda p: pq.write_table(to_table(rejections, Rejection), p))
    write_json(out / "summary.json", summary)
    store.replace_rows(rows)
    store.replace_rejections(rejections)
    store.set_meta("summary", summary)
