"""The run store: one DuckDB file per run (RUN_DIR/crome.duckdb) holding everything a build derives.

Durability: every write commits before it returns, so a process killed right after
`record_calls` returns loses nothing (DuckDB replays its write-ahead log on the next open).

One writer: a run is opened for writing by one process at a time (see `lock`). Read-only opens
(audit) can run side by side while no writer holds the run.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

import crome.builder.store.tables as tables
from crome.builder.store.call_table import find_calls, upsert_calls
from crome.builder.store.calls import (
    FINAL_STATUSES,
    SENT_SHAPE,
    CALL_SELECT,
    CALL_SELECT_REPLAY,
    CallRecord,
    call_from_row,
    call_stats,
)
from crome.builder.store.columns import to_json, utc_now
from crome.builder.store.tables import insert_arrow
from crome.builder.store.errors import RunStoreError
from crome.builder.store.lock import acquire_lock, open_error, release_lock
from crome.builder.store.migrations import MIGRATIONS, Migration, apply_migrations, applied_migrations, check_current
from crome.schemas.hashing import Bloom
from crome.schemas.source import Quarantined

STORE_FILE = "crome.duckdb"

_FETCH = 1000  # rows per fetch when streaming a table back


class RunStore:
    """The DuckDB run store of one run directory. Open with `RunStore.open(run_dir)`."""

    def __init__(self, con: duckdb.DuckDBPyConnection, run_dir: Path, read_only: bool, lock_fd: int | None) -> None:
        self._con = con
        self.run_dir = run_dir
        self.read_only = read_only
        self._lock_fd = lock_fd
        # DuckDB connections are not safe for concurrent use; the builder's writer is one task,
        # but a thread pool (batch polling, audit) must not interleave statements.
        self._mutex = threading.RLock()
        self._closed = False
        self._call_keys: Bloom | None = None  # the keys in oracle_calls, for a writer (see `_maybe_stored`)
        self._call_keys_n = 0
        self._memory_mb: int | None = None  # the limit `limit_memory` set

    @property
    def path(self) -> Path:
        return self.run_dir / STORE_FILE

    # -- opening and closing --

    @classmethod
    def open(
        cls, run_dir: str | Path, read_only: bool = False, *, migrations: Sequence[Migration] | None = None
    ) -> "RunStore":
        """Open (and for writing, create and migrate) the store of `run_dir`."""
        run_dir = Path(run_dir)
        migrations = list(MIGRATIONS if migrations is None else migrations)
        path = run_dir / STORE_FILE
        if read_only:
            return cls._open_read_only(run_dir, path, migrations)
        run_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = acquire_lock(run_dir)
        try:
            try:
                con = duckdb.connect(str(path))
            except (duckdb.IOException, duckdb.ConnectionException) as e:
                raise open_error(e, run_dir, path) from e
            try:
                apply_migrations(con, migrations, path)
            except BaseException:
                con.close()
                raise
        except BaseException:
            release_lock(lock_fd)
            raise
        return cls(con, run_dir, False, lock_fd)

    @classmethod
    def _open_read_only(cls, run_dir: Path, path: Path, migrations: list[Migration]) -> "RunStore":
        if not path.exists():
            raise FileNotFoundError(f"no run store at {path}: is {run_dir} the output directory of `crome build`?")
        try:
            con = duckdb.connect(str(path), read_only=True)
        except (duckdb.IOException, duckdb.ConnectionException) as e:
            raise open_error(e, run_dir, path, reading=True) from e
        try:
            check_current(con, migrations, path)
        except BaseException:
            con.close()
            raise
        return cls(con, run_dir, True, None)

    def close(self) -> None:
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            try:
                self._con.close()
            finally:
                release_lock(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- plumbing --

    def _write(self) -> None:
        if self._closed:
            raise RunStoreError(f"run store {self.path} is closed")
        if self.read_only:
            raise RunStoreError(f"run store {self.path} is open read-only")

    def _transaction(self, body: Callable[[duckdb.DuckDBPyConnection], None]) -> None:
        """Run `body` in one transaction; committed (durably) on return, rolled back on error."""
        with self._mutex:
            self._write()
            con = self._con
            con.begin()
            try:
                body(con)
                con.commit()
            except BaseException:
                con.rollback()
                raise

    def _query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        with self._mutex:
            if self._closed:
                raise RunStoreError(f"run store {self.path} is closed")
            return self._con.execute(sql, params or []).fetchall()

    def _stream(self, sql: str, params: Sequence[Any] | None = None) -> Iterator[tuple]:
        """Rows of `sql` in chunks, on their own cursor so the caller may write while iterating."""
        with self._mutex:
            if self._closed:
                raise RunStoreError(f"run store {self.path} is closed")
            cur = self._con.cursor()
            cur.execute(sql, params or [])
        try:
            while True:
                with self._mutex:
                    chunk = cur.fetchmany(_FETCH)
                if not chunk:
                    return
                yield from chunk
        finally:
            cur.close()

    def _insert(self, con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
        """Append an Arrow batch to table `name` (inside a transaction body)."""
        insert_arrow(con, f"INSERT INTO {name} BY NAME SELECT * FROM {{batch}}", table)

    def limit_memory(self, megabytes: int) -> None:
        """Cap DuckDB's own memory (sorts and joins spill to RUN_DIR/crome.duckdb.tmp beyond it); a build sets it."""
        with self._mutex:
            self._con.execute(f"SET memory_limit = '{int(megabytes)}MB'")
            self._memory_mb = int(megabytes)

    @property
    def memory_mb(self) -> int | None:
        """The limit `limit_memory` set (None: DuckDB's default)."""
        return self._memory_mb

    def reopen(self) -> None:
        """Close DuckDB's connection and open it again (the run lock stays held), with the same memory limit.

        DuckDB holds an index (ART) in memory from its first use until the database is closed, outside
        what it can evict (the source's two integer keys: ~25 bytes per pair). Reopening releases them; a
        query that needs one loads it again. The export needs none, so a build reopens its store first.
        """
        with self._mutex:
            self._write()
            self._con.close()
            try:
                self._con = duckdb.connect(str(self.path))
            except (duckdb.IOException, duckdb.ConnectionException) as e:
                self._closed = True
                release_lock(self._lock_fd)
                self._lock_fd = None
                raise open_error(e, self.run_dir, self.path) from e
            if self._memory_mb is not None:
                self._con.execute(f"SET memory_limit = '{self._memory_mb}MB'")

    # -- sources --

    def iter_quarantined(self) -> Iterator[Quarantined]:
        for values in self._stream(tables.QUARANTINE_SELECT):
            yield tables.quarantined_from_row(values)

    # -- oracle calls --

    def record_calls(self, records: Iterable[CallRecord], *, add_sent: bool = True) -> None:
        """Upsert call records by key in ONE transaction, durable on return; a repeated key: last one wins.

        Re-recording a key replaces the call, keeps only its first `created_at` and adds the
        requests it sent to those already recorded (see `call_table.upsert_calls`; `add_sent=False`: the records
        hold every request of their key already). It is a delete + insert
        rather than ON CONFLICT DO UPDATE, which DuckDB runs at half the speed.
        """
        records = list(records)
        if not records:
            return
        now = utc_now()
        maybe = set(self._maybe_stored(r.key for r in records))
        self._transaction(lambda con: upsert_calls(con, records, now, add_sent, maybe))
        self._note_stored(r.key for r in records if r.key not in maybe)

    # A writer keeps a Bloom filter of the call keys it holds, so that the lookups and upserts of
    # calls never made (all of them in a fresh build) skip DuckDB: at tens of calls per batch, a
    # query costs milliseconds whatever it finds. Only this process writes (the run lock); a
    # read-only store has no filter. Sized at twice the keys held (at least 2**20, 1.25 MB) and
    # rebuilt from the table when it fills, so it stays under ~1% false positives.
    def _maybe_stored(self, keys: Iterable[str]) -> list[str]:
        """`keys` less those certainly not in oracle_calls."""
        if self.read_only:
            return list(keys)
        with self._mutex:
            if self._call_keys is None:
                (n,) = self._query("SELECT count(*) FROM oracle_calls")[0]
                bloom = Bloom(max(1 << 20, 2 * n))
                chunk: list[str] = []
                for (key,) in self._stream("SELECT key FROM oracle_calls"):
                    chunk.append(key)
                    if len(chunk) >= 65536:
                        bloom.add_many(chunk)
                        chunk = []
                bloom.add_many(chunk)
                self._call_keys, self._call_keys_n = bloom, n
            bloom = self._call_keys
        return [k for k in keys if k in bloom]

    def _note_stored(self, new_keys: Iterable[str]) -> None:
        with self._mutex:
            if self._call_keys is None:
                return
            keys = list(new_keys)
            self._call_keys.add_many(keys)
            self._call_keys_n += len(keys)
            if self._call_keys_n > self._call_keys.capacity:
                self._call_keys = None  # full: rebuilt, twice as large, on the next use

    def calls_imported(self) -> None:
        """Calls were added in SQL (a merge's import): the key filter is rebuilt on its next use."""
        with self._mutex:
            self._call_keys = None

    def spend_totals(self) -> list[dict[str, Any]]:
        """Per (provider, model, batch or online): what was billed (every request sent) and what the kept answers cost.

        Billed: every entry of every call's `sent` (retries, re-asks, failures, calls sent again
        after a failure), priced by where it went (batch or online). Kept: the calls the cache
        replays (final statuses), at the usage of the call that made each, re-asks included.
        Requests that got no answer (and so reported no usage) are counted apart.
        """
        final = ", ".join(f"'{s}'" for s in sorted(FINAL_STATUSES))
        billed = self._query(
            f"""SELECT provider, model, e.batch, count(*), sum(e.input_tokens), sum(e.output_tokens),
                       count(*) FILTER (WHERE e.outcome = 'error' AND NOT e.reported)
                FROM oracle_calls, unnest(from_json(sent, '{SENT_SHAPE}')) AS u(e) GROUP BY ALL"""
        )
        kept = self._query(
            f"""SELECT provider, model, batch_job_id IS NOT NULL, count(*), count(*) FILTER (WHERE status IN ({final})),
                       coalesce(sum(input_tokens) FILTER (WHERE status IN ({final})), 0),
                       coalesce(sum(output_tokens) FILTER (WHERE status IN ({final})), 0)
                FROM oracle_calls GROUP BY ALL"""
        )
        out: dict[tuple, dict[str, Any]] = {}

        def row(p: str, m: str, b: bool) -> dict[str, Any]:
            return out.setdefault((p, m, bool(b)), {
                "provider": p, "model": m, "batch": bool(b), "attempts": 0, "input_tokens": 0, "output_tokens": 0,
                "unanswered_attempts": 0, "calls": 0, "kept_calls": 0, "kept_input_tokens": 0, "kept_output_tokens": 0,
            })

        for p, m, b, n, i, o, unanswered in billed:
            row(p, m, b).update(attempts=n, input_tokens=int(i), output_tokens=int(o), unanswered_attempts=unanswered)
        for p, m, b, calls, n, i, o in kept:
            row(p, m, b).update(calls=calls, kept_calls=n, kept_input_tokens=int(i), kept_output_tokens=int(o))
        return [out[k] for k in sorted(out)]

    def get_calls(self, keys: Iterable[str], *, sent: bool = True) -> dict[str, CallRecord]:
        """The stored calls among `keys` (missing keys are absent from the result), in one query.

        `sent=False` leaves out what each was billed (`sent` comes back empty): a cache lookup needs only the answer.
        """
        keys = self._maybe_stored(dict.fromkeys(keys))
        if not keys:
            return {}
        wanted, found = set(keys), {}
        with self._mutex:
            rows = find_calls(self._query, keys, CALL_SELECT if sent else CALL_SELECT_REPLAY)
        for _, *row in rows:
            if row[0] in wanted:  # not another key of the same k64
                found[row[0]] = call_from_row(tuple(row))
        return {k: found[k] for k in keys if k in found}

    def rubric_definitions(self, conversations: Iterable[str]) -> dict[str, dict[str, str]]:
        """Prompt (as the oracle read it) -> {rubric name: definition}, from the answered `rubrics` calls, in one query.

        The prompt is read back from the call's last message, where the rubrics template puts it
        between <conversation> tags; of several answered calls for one prompt (another model or
        template version) the latest wins. A prompt with no such call is absent from the result.
        """
        wanted = list(dict.fromkeys(conversations))
        if not wanted:
            return {}
        rows = self._query(
            """
            SELECT conv, arg_max(parsed, updated_at) FROM (
                SELECT regexp_extract(json_extract_string(request, '$.messages[#-1].content'),
                                      '<conversation>\n((?s:.*))\n</conversation>', 1) AS conv, parsed, updated_at
                FROM oracle_calls WHERE task = 'rubrics' AND status = 'ok' AND parsed IS NOT NULL)
            WHERE conv IN (SELECT unnest(?::VARCHAR[])) GROUP BY conv""",
            [wanted],
        )
        out: dict[str, dict[str, str]] = {}
        for conv, parsed in rows:
            rubrics = (json.loads(parsed) if isinstance(parsed, str) else parsed or {}).get("rubrics") or []
            out[conv] = {r["name"]: r["definition"] for r in rubrics if isinstance(r, dict) and "name" in r and "definition" in r}
        return out

    def iter_failed_calls(self) -> Iterator[CallRecord]:
        """The stored calls a re-run sends again (failures), by key."""
        final = ", ".join(f"'{s}'" for s in sorted(FINAL_STATUSES))
        for row in self._stream(f"SELECT {CALL_SELECT} FROM oracle_calls WHERE status NOT IN ({final}) ORDER BY key"):
            yield call_from_row(row)

    def call_stats(self, since: datetime | None = None) -> dict[str, Any]:
        """Call totals by status and task, failures and token sums; `since` (UTC) counts only calls recorded after it."""
        where, params = "", []
        if since is not None:
            if since.tzinfo is not None:
                since = since.astimezone(timezone.utc).replace(tzinfo=None)
            where, params = "WHERE updated_at >= ?", [since]
        rows = self._query(
            f"""SELECT task, status, count(*), sum(input_tokens), sum(output_tokens), sum(latency_s)
                FROM oracle_calls {where} GROUP BY task, status ORDER BY task, status""",
            params,
        )
        return call_stats(rows)

    # -- artifacts and meta --

    def put_artifacts(self, kind: str, items: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> int:
        """Upsert several artifacts of one kind in one transaction; values are JSON (pydantic models allowed)."""
        pairs = dict(items.items() if isinstance(items, Mapping) else items)
        if not pairs:
            return 0
        table = tables.artifact_table(kind, pairs, utc_now())
        sql = (
            "INSERT INTO artifacts BY NAME SELECT * FROM {batch} "
            "ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
        )
        self._transaction(lambda con: insert_arrow(con, sql, table))
        return len(pairs)

    def put_artifact(self, kind: str, key: str, value: Any) -> None:
        self.put_artifacts(kind, {key: value})

    def iter_artifacts(self, kind: str) -> Iterator[tuple[str, Any]]:
        """(key, value) of every artifact of `kind`, by key."""
        for key, value in self._stream("SELECT key, value FROM artifacts WHERE kind = ? ORDER BY key", [kind]):
            yield key, json.loads(value)

    def get_artifacts(self, kind: str, keys: Iterable[str]) -> dict[str, Any]:
        """The artifacts of `kind` among `keys` (missing keys are absent), in one query."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
        rows = self._query("SELECT key, value FROM artifacts WHERE kind = ? AND key IN (SELECT unnest(?::VARCHAR[]))", [kind, keys])
        return {key: json.loads(value) for key, value in rows}

    def delete_artifacts(self, kind: str, keys: Iterable[str]) -> None:
        keys = list(dict.fromkeys(keys))
        if keys:
            self._transaction(
                lambda con: con.execute("DELETE FROM artifacts WHERE kind = ? AND key IN (SELECT unnest(?::VARCHAR[]))", [kind, keys])
            )

    def set_meta(self, key: str, value: Any) -> None:
        self._transaction(
            lambda con: con.execute(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", [key, to_json(value)]
            )
        )

    def get_meta(self, key: str, default: Any = None) -> Any:
        rows = self._query("SELECT value FROM meta WHERE key = ?", [key])
        return json.loads(rows[0][0]) if rows else default

    # -- overview --

    def counts(self) -> dict[str, int]:
        """Number of records in each table."""
        names = ("source_pairs", "quarantined", "oracle_calls", "artifacts", "rows", "rejections", "meta")
        sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in names)
        return {t: n for t, n in self._query(sql)}

    def applied_migrations(self) -> list[str]:
        with self._mutex:
            return applied_migrations(self._con)
