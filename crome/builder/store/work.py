"""The tables a streaming build works in: the whole source (its pool), its finished rows, rejections and pair outcomes, the dedup index.

A build holds a bounded window of pairs in memory; everything it has finished goes here as it
finishes, and the summary and the export are read back from here with SQL. Every table is
re-derived by each build (cleared at its start), so a build killed at any moment and run again
gives the same tables and the same files (its oracle calls replay from `oracle_calls`).

Random access goes through primary keys (`source_pairs.ord`, `iqn_members.gkey`) with literal
`IN` lists, which DuckDB answers from the index; a join against a list would scan the table.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

import crome.builder.store.tables as tables
from crome.schemas.rows import Rejection
from crome.schemas.source import Quarantined, SourcePair

if TYPE_CHECKING:
    from crome.builder.store.run_store import RunStore

GKEY = 1 << 31  # gkey = grp * GKEY + pos: one BIGINT key per draw-group member
WORK_TABLES = ("build_rows", "build_rejections", "build_pairs", "dedup_exact", "dedup_bands", "dedup_sigs")
POOL_SCHEMA = pa.schema([*tables.SOURCE_SCHEMA, ("mine", pa.bool_()), ("iqn_rank", pa.string())])
BUILD_ROW_SCHEMA = pa.schema(
    [("seq", pa.int64()), ("id", pa.string()), ("source_id", pa.string()), ("kind_ord", pa.int32()), ("kind", pa.string()),
     ("augmentation", pa.string()), ("attribute", pa.string()), ("data", pa.string())]
)
BUILD_PAIR_SCHEMA = pa.schema([("ord", pa.int64()), ("source_id", pa.string()), ("outcome", pa.string())])
_SOURCE_COLUMNS = ", ".join(f'"{c}"' for c in tables.SOURCE_SCHEMA.names if c != "ord")
# The order of the exported rows: by source pair, then original, causal, neutral (as before streaming).
ROW_ORDER = "source_id, kind_ord, augmentation, coalesce(attribute, ''), id"
SORT_PART_ROWS = 10_000  # rows per bucket of the export's out-of-core sort (about 30 MB of row JSON)
SORT_DIR_PREFIX = ".crome-sort-"
# The export sorts the order columns one range of source ids at a time, about this many rows each, and puts the
# ranges end to end. One sort of them all took 270 MB for the 960,612 rows of a 300k-pair build (DuckDB 2.0.1 did not
# spill it far enough, and the build ran out of memory at its limit once the call cache's index was resident); a
# range of this size takes ~20 MB whatever the number of rows.
SORT_RANGE_ROWS = 65_536
SAMPLES_PER_RANGE = 64  # source ids sampled per range to place the ranges' boundaries (they move no row's position)
HELD_ROWS = 4096  # rows the export's bucketing holds before writing them out, whatever the number of buckets


def _in_list(values: Iterable[int]) -> str:
    return ", ".join(str(int(v)) for v in values)


class Fingerprint:
    """`stable_hash({"pairs": [source ids...], "rows": n})`, computed as the ids stream by (the same value)."""

    def __init__(self) -> None:
        self._h = hashlib.sha256(b'{"pairs":[')
        self._first = True

    def add(self, source_id: str) -> None:
        self._h.update((("" if self._first else ",") + json.dumps(source_id, ensure_ascii=False)).encode())
        self._first = False

    def value(self, rows: Any) -> str:
        h = self._h.copy()
        h.update(('],"rows":' + json.dumps(rows, ensure_ascii=False) + "}").encode())
        return "sha256:" + h.hexdigest()


class BuildTables:
    """What one build reads and writes of its run store beyond the call cache."""

    def __init__(self, store: "RunStore") -> None:
        self.store = store

    # -- the source and its pool --------------------------------------------------------

    def write_source(self, items: Iterable[SourcePair | Quarantined], *, mine: Callable[[SourcePair], bool],
                     mine_quarantined: Callable[[Quarantined], bool], rank: Callable[[SourcePair], str],
                     chunk: int = tables.INSERT_CHUNK) -> tuple[int, int, Fingerprint]:
        """Every source pair (in order) and this shard's quarantines, a chunk at a time; (pairs, mine, fingerprint)."""
        fp = Fingerprint()
        counts = {"pairs": 0, "mine": 0, "quarantined": 0}
        pairs: list[dict[str, Any]] = []
        quarantined: list[dict[str, Any]] = []

        def flush(con) -> None:
            if pairs:
                self.store._insert(con, "source_pairs", pa.Table.from_pylist(pairs, schema=POOL_SCHEMA))
                pairs.clear()
            if quarantined:
                self.store._insert(con, "quarantined", pa.Table.from_pylist(quarantined, schema=tables.QUARANTINE_SCHEMA))
                quarantined.clear()

        def clear(con) -> None:
            con.execute("DELETE FROM source_pairs")
            con.execute("DELETE FROM quarantined")
            con.execute("DROP TABLE IF EXISTS iqn_members")

        # One transaction per chunk: a whole source in one would be held by DuckDB until its commit. A kill
        # half way leaves half a source, which the next build clears and writes again.
        self.store._transaction(clear)
        for item in items:
            if isinstance(item, Quarantined):
                if mine_quarantined(item):
                    quarantined.append({"ord": counts["quarantined"], **item.model_dump()})
                    counts["quarantined"] += 1
            else:
                fp.add(item.source_id)
                is_mine = mine(item)
                (record,) = tables.source_records([item])
                pairs.append({**record, "ord": counts["pairs"], "mine": is_mine, "iqn_rank": rank(item)})
                counts["pairs"] += 1
                counts["mine"] += is_mine
            if len(pairs) >= chunk or len(quarantined) >= chunk:
                self.store._transaction(flush)
        self.store._transaction(flush)
        return counts["pairs"], counts["mine"], fp

    def assign_groups(self, size: int) -> None:
        """Deal the pool into IQN draw groups: seeded-hash order, k-th pair to group k mod g, source-id order inside a group.

        The same groups as `crome.builder.stages.neutral.draw_groups`; a source id met twice draws
        from the last group it was dealt to, as that function's dict does.
        """
        (n,) = self.store._query("SELECT count(*) FROM source_pairs")[0]
        groups = max(1, n // max(1, size))

        def body(con) -> None:
            con.execute(
                f"""CREATE OR REPLACE TEMP TABLE _groups AS
                    WITH ranked AS (SELECT ord, source_id, (row_number() OVER (ORDER BY iqn_rank, ord) - 1) AS k FROM source_pairs),
                    dealt AS (SELECT ord, source_id, k, k % {groups} AS grp FROM ranked)
                    SELECT ord, grp, row_number() OVER (PARTITION BY grp ORDER BY source_id, k) - 1 AS pos,
                           count(*) OVER (PARTITION BY grp) AS gsize, max(grp) OVER (PARTITION BY source_id) AS draw_grp
                    FROM dealt"""
            )
            con.execute(
                """UPDATE source_pairs SET grp = g.grp, pos = g.pos, gsize = g.gsize, draw_grp = g.draw_grp
                   FROM _groups g WHERE source_pairs.ord = g.ord"""
            )
            con.execute("DROP TABLE _groups")
            con.execute("CREATE TABLE iqn_members (gkey BIGINT PRIMARY KEY, ord BIGINT NOT NULL)")
            con.execute(f"INSERT INTO iqn_members SELECT grp::BIGINT * {GKEY} + pos, ord FROM source_pairs")

        self.store._transaction(body)

    def group_sizes(self) -> dict[int, int]:
        """Draw group -> its size (one small row per group)."""
        return dict(self.store._query("SELECT grp, count(*) FROM source_pairs GROUP BY grp"))

    def mine_chunks(self, size: int) -> Iterator[list[tuple[int, SourcePair, int | None]]]:
        """This shard's pairs in source order, `size` at a time: (ord, pair, draw group)."""
        last = -1
        while True:
            rows = self.store._query(
                f"SELECT ord, {_SOURCE_COLUMNS}, draw_grp FROM source_pairs WHERE mine AND ord > ? ORDER BY ord LIMIT {int(size)}", [last]
            )
            if not rows:
                return
            yield [(r[0], tables.source_from_row(r[1:-1]), r[-1]) for r in rows]
            last = rows[-1][0]

    def pool_pairs(self, ords: Iterable[int]) -> dict[int, SourcePair]:
        """Pool pairs by position in the source."""
        ords = sorted(set(ords))
        if not ords:
            return {}
        rows = self.store._query(f"SELECT ord, {_SOURCE_COLUMNS} FROM source_pairs WHERE ord IN ({_in_list(ords)})")
        return {r[0]: tables.source_from_row(r[1:]) for r in rows}

    def group_members(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], SourcePair]:
        """Pool pairs by (draw group, position in it)."""
        gkeys = sorted({g * GKEY + p for g, p in keys})
        if not gkeys:
            return {}
        found = dict(self.store._query(f"SELECT gkey, ord FROM iqn_members WHERE gkey IN ({_in_list(gkeys)})"))
        pairs = self.pool_pairs(found.values())
        return {(k // GKEY, k % GKEY): pairs[o] for k, o in found.items()}

    def iter_pool_documents(self, column_sql: str) -> Iterator[str]:
        """One text per pool pair, in no particular order (`column_sql` selects it): the corpus a measure is fitted on."""
        for (text,) in self.store._stream(f"SELECT {column_sql} FROM source_pairs"):  # any order: a corpus count
            yield text

    # -- what the build finished --------------------------------------------------------

    def clear(self) -> None:
        def body(con) -> None:
            for name in WORK_TABLES:
                con.execute(f"DELETE FROM {name}")

        self.store._transaction(body)

    def append(self, rows: list[dict[str, Any]], rejections: list[Rejection], rejection_start: int,
               pairs: list[dict[str, Any]], index: Iterable[tuple[str, pa.Table]] = ()) -> None:
        """One batch of finished pairs (their rows, rejections, outcomes) and the dedup index entries they added, in one transaction."""
        records = tables.rejection_records(rejections)
        for i, r in enumerate(records):
            r["seq"] = rejection_start + i
            del r["ord"]

        def body(con) -> None:
            if rows:
                self.store._insert(con, "build_rows", pa.Table.from_pylist(rows, schema=BUILD_ROW_SCHEMA))
            if records:
                schema = pa.schema([("seq", pa.int64())] + [f for f in tables.REJECTION_SCHEMA if f.name != "ord"])
                self.store._insert(con, "build_rejections", pa.Table.from_pylist(records, schema=schema))
            if pairs:
                self.store._insert(con, "build_pairs", pa.Table.from_pylist(pairs, schema=BUILD_PAIR_SCHEMA))
            for name, table in index:
                if table.num_rows:
                    self.store._insert(con, name, table)

        self.store._transaction(body)

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        return self.store._query(sql, params)

    def iter_row_data(self, part_rows: int | None = None) -> Iterator[str]:
        """The finished rows' JSON in export order (ROW_ORDER), in memory independent of the number of rows.

        DuckDB cannot sort rows whose payload outgrows its memory limit (each row's JSON is kilobytes:
        a 20k-pair build's export ran out of memory), so it sorts the order columns alone, a range of
        source ids at a time (`_source_ranges`), which gives every stored row its position in the export
        (8 bytes per row held here, 24 while the positions are inverted). The rows are then read
        once in storage order and bucketed by position, `part_rows` per bucket, into Arrow files in a
        temporary folder of the run; each bucket is read back in turn, put in order and yielded.
        """
        part_rows = part_rows or SORT_PART_ROWS
        (n,) = self.store._query("SELECT count(*) FROM build_rows")[0]
        if n <= part_rows:  # fits: one sort
            for (data,) in self.store._stream(f"SELECT data FROM build_rows ORDER BY {ROW_ORDER}"):
                yield data
            return
        import numpy as np
        import pyarrow.compute as pc

        in_order = np.empty(n, np.int64)
        got = 0
        for where, params in self._source_ranges(n):
            for (r,) in self.store._stream(f"SELECT rowid FROM build_rows WHERE {where} ORDER BY {ROW_ORDER}", params):
                in_order[got] = r
                got += 1
        assert got == n, (got, n)
        by_rowid = np.argsort(in_order, kind="stable")  # position of the k-th smallest rowid
        rowids = in_order[by_rowid]
        del in_order  # 8 bytes a row: 26 MB at 1M pairs
        schema = pa.schema([("pos", pa.int64()), ("data", pa.string())])
        for stale in self.store.run_dir.glob(f"{SORT_DIR_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)  # a killed export's buckets
        tmp = Path(tempfile.mkdtemp(prefix=SORT_DIR_PREFIX, dir=self.store.run_dir))
        try:
            parts = (n + part_rows - 1) // part_rows
            writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
            held: dict[int, tuple[list[int], list[str]]] = {}

            def spill(b: int) -> None:
                pos, data = held.pop(b)
                if b not in writers:
                    writers[b] = pa.ipc.new_stream(str(tmp / f"{b}.arrow"), schema)
                writers[b].write_batch(pa.record_batch([pa.array(pos, pa.int64()), pa.array(data, pa.string())], schema=schema))

            count = 0
            for rowid, data in self.store._stream("SELECT rowid, data FROM build_rows"):
                p = int(by_rowid[np.searchsorted(rowids, rowid)])
                pos, datas = held.setdefault(p // part_rows, ([], []))
                pos.append(p)
                datas.append(data)
                count += 1
                if count >= HELD_ROWS:  # a bound on all buckets together: their number grows with the rows
                    for b in list(held):
                        spill(b)
                    count = 0
            for b in list(held):
                spill(b)
            for w in writers.values():
                w.close()
            for b in range(parts):
                with pa.ipc.open_stream(str(tmp / f"{b}.arrow")) as reader:
                    table = reader.read_all()
                data = table.column("data").take(pc.sort_indices(table.column("pos")))
                del table
                for i in range(0, len(data), 1024):
                    yield from data.slice(i, 1024).to_pylist()
                del data
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def iter_rejections(self) -> Iterator[Rejection]:
        """This shard's quarantined source rows, then the build's rejections in the order they were made."""
        for q in self.store.iter_quarantined():
            yield Rejection(source_id=f"row:{q.row}", stage="source", reason=q.reason, detail=q.detail)
        cols = ", ".join(c for c in tables.REJECTION_SCHEMA.names if c != "ord")
        # A page of `seq` at a time (dense from 0, in insertion order, so each page reads few row groups): one
        # sort of every rejection's candidate JSON would outgrow DuckDB's memory as the rows' sort did.
        (end,) = self.store._query("SELECT coalesce(max(seq) + 1, 0) FROM build_rejections")[0]
        for start in range(0, end, SORT_PART_ROWS):
            for values in self.store._query(
                f"SELECT {cols} FROM build_rejections WHERE seq >= ? AND seq < ? ORDER BY seq", [start, start + SORT_PART_ROWS]
            ):
                yield tables.rejection_from_row(values)

    def publish_rows(self) -> None:
        """`rows` and `rejections` (the tables SQL users read) from the export just written."""
        cols = ", ".join(c for c in tables.REJECTION_SCHEMA.names if c != "ord")

        (n,) = self.store._query("SELECT count(*) FROM build_rows")[0]
        ranges = self._source_ranges(n)

        def body(con) -> None:
            con.execute("DELETE FROM rows")
            # The positions from a sort of the order columns alone, joined back by rowid (a window over whole rows
            # would hold every row's JSON in DuckDB's memory at once), one range of source ids at a time as the
            # export sorts them: each range's positions follow the previous range's.
            start = 0
            for where, params in ranges:
                b_where = where.replace("source_id", "b.source_id")
                con.execute(
                    f"""INSERT INTO rows WITH o AS (SELECT rowid AS r, {start} + row_number() OVER (ORDER BY {ROW_ORDER}) - 1 AS ord
                                                    FROM build_rows WHERE {where})
                        SELECT o.ord, b.id, b.source_id, b.kind, b.augmentation, b.attribute, b.data
                        FROM build_rows AS b JOIN o ON b.rowid = o.r WHERE {b_where}""",
                    params + params,
                )
                start += con.execute(f"SELECT count(*) FROM build_rows WHERE {where}", params).fetchone()[0]
            con.execute("DELETE FROM rejections")
            (n,) = con.execute("SELECT count(*) FROM quarantined").fetchone()
            con.execute(
                """INSERT INTO rejections SELECT ord, 'row:' || "row", 'source', reason, detail, NULL, NULL, NULL, NULL, NULL
                    FROM quarantined"""
            )
            con.execute(f"INSERT INTO rejections SELECT seq + {n}, {cols} FROM build_rejections")

        self.store._transaction(body)

    def _source_ranges(self, n: int) -> list[tuple[str, list[str]]]:
        """Ranges of `source_id` (a SQL condition and its parameters) that split `n` rows into about SORT_RANGE_ROWS each.

        `source_id` leads ROW_ORDER, so the rows sorted range by range and put end to end are the rows
        sorted as one. The boundaries are quantiles of a sample of the rows' source ids: where they fall
        changes only how many rows a range holds (every row of a source id is in the same range), not
        the order, so the sample need not be repeatable. Python sorts the sampled ids by code point and
        DuckDB compares VARCHARs by their UTF-8 bytes: the same order.
        """
        count = -(-n // SORT_RANGE_ROWS)
        if count <= 1:
            return [("TRUE", [])]
        sample = sorted(s for (s,) in self.store._query(
            f"SELECT source_id FROM build_rows USING SAMPLE reservoir({count * SAMPLES_PER_RANGE} ROWS) REPEATABLE (17)"))
        bounds = sorted({sample[i * len(sample) // count] for i in range(1, count)})
        ranges = [("source_id < ?", [bounds[0]])]
        ranges += [("source_id >= ? AND source_id < ?", [lo, hi]) for lo, hi in zip(bounds, bounds[1:])]
        ranges.append(("source_id >= ?", [bounds[-1]]))
        return ranges


def import_calls(store: "RunStore", shard: Path) -> None:
    """Add a shard's call cache to `store`, in SQL (memory does not grow with the calls): shards are imported lowest first.

    A key held already keeps its record unless only the new one is final (then the new one
    replaces it, keeping the first `created_at`); either way the requests both were billed for
    (`sent`) are kept, in shard order, so the merged spend is what the shards spent.
    """
    from crome.builder.store.calls import CALL_COLUMNS, CALL_STORED, FINAL_STATUSES

    final = ", ".join(f"'{x}'" for x in sorted(FINAL_STATUSES))
    take = f"(d.status NOT IN ({final}) AND i.status IN ({final}))"
    concat = ("CASE WHEN d.sent = '[]' THEN i.sent WHEN i.sent = '[]' THEN d.sent "
              "ELSE substr(d.sent, 1, length(d.sent) - 1) || ',' || substr(i.sent, 2) END")
    sets = [f"{c} = CASE WHEN {take} THEN i.{c} ELSE d.{c} END" for c in CALL_COLUMNS if c not in {"key", "created_at", "sent"}]
    cols = ", ".join(CALL_STORED)
    escaped = str(shard).replace("'", "''")
    store._query(f"ATTACH '{escaped}' AS _shard (READ_ONLY)")
    try:
        # 256 slices by a hash of the key, one transaction each: DuckDB held what a transaction added to the
        # then indexed table in memory until it committed, so one transaction per shard did not fit its memory
        # limit. The table has no index since m007; fewer slices (each is a scan of both tables) are not measured yet.
        for part in range(256):
            where = f"(i.k64 & 255) = {part}"

            def body(con) -> None:
                con.execute(f"UPDATE oracle_calls AS d SET {', '.join(sets)}, sent = {concat} FROM _shard.oracle_calls AS i "
                            f"WHERE d.k64 = i.k64 AND d.key = i.key AND {where}")
                con.execute(f"INSERT INTO oracle_calls ({cols}) SELECT {cols} FROM _shard.oracle_calls AS i "
                            f"WHERE {where} AND NOT EXISTS (SELECT 1 FROM oracle_calls d WHERE d.k64 = i.k64 AND d.key = i.key)")

            store._transaction(body)
    finally:
        store.calls_imported()
        store._query("DETACH _shard")


__all__ = ["BuildTables", "import_calls", "Fingerprint", "GKEY", "ROW_ORDER", "WORK_TABLES"]
