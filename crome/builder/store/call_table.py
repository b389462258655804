"""The call cache's SQL over `oracle_calls`: find stored calls by key without an index, replace them by key.

`RunStore` runs these under its lock or inside one of its transactions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from crome.builder.store.calls import CALL_INSERT_BATCH, CALL_INSERT_ROW, CALL_SCHEMA, CALL_STORED, SMALL_BATCH, CallRecord, call_values, key_k64
from crome.builder.store.tables import insert_arrow


def k64_where(keys: Sequence[str]) -> str:
    """`k64 IN (...)`: the stored calls that may be those of `keys` (compare their keys)."""
    return f"k64 IN ({', '.join(str(key_k64(k)) for k in keys)})"


_KEYS_PER_QUERY = 1000
_ROWID_GAP = 2048  # found calls closer than this (DuckDB's vector) are read back in one range


def rowid_ranges(rowids: Iterable[int]) -> list[list[int]]:
    """Sorted rowids cut into runs of neighbours (a gap of at most `_ROWID_GAP`, at most `_KEYS_PER_QUERY` each)."""
    runs: list[list[int]] = []
    for r in sorted(rowids):
        if runs and r - runs[-1][-1] <= _ROWID_GAP and len(runs[-1]) < _KEYS_PER_QUERY:
            runs[-1].append(r)
        else:
            runs.append([r])
    return runs


def in_range(run: list[int]) -> str:
    """A run of rowids as a filter DuckDB prunes by (the range skips the table's other row groups)."""
    return f"rowid BETWEEN {run[0]} AND {run[-1]} AND rowid IN ({', '.join(str(r) for r in run)})"


def find_calls(query: Callable[[str], list[tuple]], keys: Sequence[str], columns: str) -> list[tuple[Any, ...]]:
    """`rowid` and `columns` of the stored calls that may be those of `keys` (same `k64`; the caller compares keys).

    `oracle_calls` has no index (store migration m007): DuckDB holds an index in memory from its
    first use and cannot spill it, and the call cache's grew ~40 bytes per call, ~80 MB at 300k
    source pairs. Without one, a lookup reads the `k64` column alone for the rowids (25 keys among
    the 1.76M calls of a 300k-pair build: 2 ms warm, up to ~20 ms cold; through the index: ~26 ms),
    then the records by rowid ranges (the calls a window looks up were stored together: ~13 ms for
    50 among 200 neighbours; one far from the others ~6 ms). A fresh build makes almost none: its
    Bloom filter (`RunStore._maybe_stored`) answers for keys never stored.
    Run under one lock or transaction: rowids are stable until the table is written.
    """
    rowids: list[int] = []
    for i in range(0, len(keys), _KEYS_PER_QUERY):
        rowids += [r for (r,) in query(f"SELECT rowid FROM oracle_calls WHERE {k64_where(keys[i : i + _KEYS_PER_QUERY])}")]
    out: list[tuple[Any, ...]] = []
    for run in rowid_ranges(rowids):
        out += query(f"SELECT rowid, {columns} FROM oracle_calls WHERE {in_range(run)}")
    return out


def upsert_calls(con: duckdb.DuckDBPyConnection, records: list[CallRecord], now: datetime, add_sent: bool = True,
                  maybe: set[str] | None = None) -> None:
    """Replace the calls of these keys (last record of a key wins), keeping each key's first `created_at` and its requests sent.

    A record that replaces another (a failed call made again) adds its `sent` to the old one's:
    both were billed. A batch job's results read again (a crash before the job was marked
    collected) replace their own earlier record instead, so they are not counted twice. With
    `add_sent` False the records carry their whole `sent` already.
    """
    by_key = {r.key: r for r in records}
    if len(by_key) < len(records):  # a key twice in one batch: the last record, the requests of both
        by_key = {}
        for r in records:
            held = by_key.get(r.key)
            by_key[r.key] = r if held is None else replace(r, sent=[*held.sent, *r.sent])
    keys = list(by_key) if maybe is None else [k for k in by_key if k in maybe]  # `maybe`: the others are certainly new
    found = [r for r in find_calls(lambda sql: con.execute(sql).fetchall(), keys, "key, created_at, batch_job_id, sent") if r[1] in by_key]
    created = {key: at for _, key, at, _, _ in found}
    for _, key, _, job, sent in found:
        new = by_key[key]
        if add_sent and sent and not (job is not None and job == new.batch_job_id):
            by_key[key] = replace(new, sent=[*json.loads(sent), *new.sent])
    for run in rowid_ranges(rowid for rowid, *_ in found):  # by rowid: stable within the transaction
        con.execute(f"DELETE FROM oracle_calls WHERE {in_range(run)}")
    rows = [call_values(r, created.get(r.key, now), now) for r in by_key.values()]
    if len(rows) < SMALL_BATCH:
        for row in rows:
            con.execute(CALL_INSERT_ROW, row)
    else:
        table = pa.Table.from_pylist([dict(zip(CALL_STORED, row)) for row in rows], schema=CALL_SCHEMA)
        insert_arrow(con, CALL_INSERT_BATCH, table)
