"""The run store: one DuckDB file per run (RUN_DIR/crome.duckdb) holding everything a build derives.

Tables: `source_pairs` and `quarantined` (the normalised source), `oracle_calls` (the call cache:
every LLM call as a replayable record), `artifacts` (rubrics per prompt, batch jobs, run state),
`rows` and `rejections` (re-derived by each build), `meta`. The schema is an ordered list of named
migrations, each applied once and recorded in `_migrations`.

Call cache semantics. A call's status decides what a re-run does with it:
- final outcomes, replayed from the cache and never sent again: ok, refused, blocked,
  unsupported, truncated (the same request would get the same answer);
- failures, sent again by the next run: error (transport, rate limit, server) and invalid
  (structured output that did not validate after the re-asks).

Durability: every write commits before it returns, so a process killed right after
`record_calls` returns loses nothing (DuckDB replays its write-ahead log on the next open).

One writer: a run is opened for writing by one process at a time. The writer holds an exclusive
`flock` on RUN_DIR/crome.lock (which names its pid) on top of DuckDB's own file lock; a second
writer, or a reader while the writer is open, gets `RunInUseError`. Read-only opens (audit) can
run side by side while no writer holds the run.

Secrets: a call record keeps the rendered messages, generation settings, output schema name and
context, never request headers or API keys; `CallRecord` refuses any other request field and
redacts keys from error text.
"""

from __future__ import annotations

import json
import os
import re
import threading
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from pydantic import BaseModel

from crome.schemas.calls import OracleRequest, OracleResponse, Status
from crome.schemas.hashing import canonical_json
from crome.schemas.messages import AssistantMessage, Message
from crome.schemas.rows import DatasetRow, Rejection
from crome.schemas.source import Quarantined, SourcePair

try:
    import fcntl
except ImportError:  # Windows: DuckDB's own file lock still keeps a second writer out.
    fcntl = None  # type: ignore[assignment]

STORE_FILE = "crome.duckdb"
LOCK_FILE = "crome.lock"

STATUSES: frozenset[str] = frozenset(typing.get_args(Status))
# Final outcomes: the same request would get the same answer, so a re-run replays them.
FINAL_STATUSES: frozenset[str] = frozenset({"ok", "refused", "blocked", "unsupported", "truncated"})
# Failures: a re-run sends the request again.
RETRY_STATUSES: frozenset[str] = frozenset({"error", "invalid"})
# What a stored request may hold. Headers and keys have no place here, by construction.
REQUEST_FIELDS: frozenset[str] = frozenset({"messages", "settings", "schema", "context"})

_FETCH = 1000  # rows per fetch when streaming a table back

# Error text comes from provider SDK exceptions, which may quote a key: such text is redacted
# before it is stored, by the values of these variables and by the shapes of common keys.
SECRET_ENV_VARS = ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
_KEY_SHAPES = re.compile(r"\b(?:sk-[A-Za-z0-9_\-]{16,}|AIza[0-9A-Za-z_\-]{30,}|hf_[A-Za-z0-9]{30,})")


def redact(text: str | None) -> str | None:
    """`text` with API keys and tokens (from the environment or by shape) replaced by `***`."""
    if not text:
        return text
    for var in SECRET_ENV_VARS:
        secret = os.environ.get(var, "")
        if len(secret) >= 8:
            text = text.replace(secret, "***")
    return _KEY_SHAPES.sub("***", text)


class RunStoreError(RuntimeError):
    """The run store cannot be opened or used as asked."""


class RunInUseError(RunStoreError):
    """Another process (or this one) holds the run open for writing."""


# --- migrations -------------------------------------------------------------------------------

Migration = Callable[[duckdb.DuckDBPyConnection], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    """Register a schema change; migrations apply in definition order, once each, by function name."""
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_initial(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE source_pairs (
            "row" BIGINT PRIMARY KEY,
            source_id VARCHAR NOT NULL,
            prompt JSON NOT NULL,
            chosen VARCHAR NOT NULL,
            rejected VARCHAR NOT NULL,
            preference DOUBLE NOT NULL,
            subset VARCHAR,
            metadata JSON NOT NULL
        )
        """
    )
    con.execute('CREATE TABLE quarantined ("row" BIGINT PRIMARY KEY, reason VARCHAR NOT NULL, detail VARCHAR NOT NULL)')
    con.execute(
        """
        CREATE TABLE oracle_calls (
            key VARCHAR PRIMARY KEY,
            provider VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            task VARCHAR NOT NULL,
            template VARCHAR NOT NULL,
            template_sha256 VARCHAR NOT NULL,
            request JSON NOT NULL,
            raw_response VARCHAR NOT NULL,
            parsed JSON,
            input_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            latency_s DOUBLE NOT NULL,
            status VARCHAR NOT NULL,
            error VARCHAR,
            attempts INTEGER NOT NULL,
            batch_job_id VARCHAR,
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL
        )
        """
    )
    con.execute(
        """
        CREATE TABLE artifacts (
            kind VARCHAR NOT NULL,
            key VARCHAR NOT NULL,
            value JSON NOT NULL,
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL,
            PRIMARY KEY (kind, key)
        )
        """
    )
    con.execute(
        """
        CREATE TABLE rows (
            ord BIGINT NOT NULL,
            id VARCHAR PRIMARY KEY,
            source_id VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            augmentation VARCHAR NOT NULL,
            attribute VARCHAR,
            data JSON NOT NULL
        )
        """
    )
    con.execute(
        """
        CREATE TABLE rejections (
            ord BIGINT NOT NULL,
            source_id VARCHAR NOT NULL,
            stage VARCHAR NOT NULL,
            reason VARCHAR NOT NULL,
            detail VARCHAR NOT NULL,
            candidate_id VARCHAR,
            duplicate_of VARCHAR,
            augmentation VARCHAR,
            attribute VARCHAR,
            candidate JSON
        )
        """
    )
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value JSON NOT NULL)")


@migration
def m002_sources_in_order(con: duckdb.DuckDBPyConnection) -> None:
    """One source row can give several pairs (RM-Bench: 9) or quarantines: key by position, not by row."""
    con.execute("DROP TABLE source_pairs")
    con.execute(
        """
        CREATE TABLE source_pairs (
            ord BIGINT PRIMARY KEY,
            "row" BIGINT NOT NULL,
            source_id VARCHAR NOT NULL,
            prompt JSON NOT NULL,
            chosen VARCHAR NOT NULL,
            rejected VARCHAR NOT NULL,
            preference DOUBLE NOT NULL,
            subset VARCHAR,
            metadata JSON NOT NULL
        )
        """
    )
    con.execute("DROP TABLE quarantined")
    con.execute('CREATE TABLE quarantined (ord BIGINT PRIMARY KEY, "row" BIGINT NOT NULL, reason VARCHAR NOT NULL, detail VARCHAR NOT NULL)')


def _applied_migrations(con: duckdb.DuckDBPyConnection) -> list[str]:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' AND table_name = '_migrations'"
    ).fetchone()[0]
    if not exists:
        return []
    return [r[0] for r in con.execute("SELECT name FROM _migrations ORDER BY applied_at, name").fetchall()]


def _check_known(applied: Sequence[str], migrations: Sequence[Migration], where: Path) -> None:
    unknown = [name for name in applied if name not in {m.__name__ for m in migrations}]
    if unknown:
        raise RunStoreError(
            f"run store {where} was written by a newer crome (unknown migrations: {', '.join(unknown)}); upgrade crome"
        )


def apply_migrations(con: duckdb.DuckDBPyConnection, migrations: Sequence[Migration], where: Path) -> list[str]:
    """Apply the migrations not yet recorded, each in its own transaction; return their names."""
    con.execute("CREATE TABLE IF NOT EXISTS _migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP NOT NULL)")
    applied = _applied_migrations(con)
    _check_known(applied, migrations, where)
    done = []
    for fn in migrations:
        if fn.__name__ in applied:
            continue
        con.begin()
        try:
            fn(con)
            con.execute("INSERT INTO _migrations VALUES (?, ?)", [fn.__name__, _now()])
            con.commit()
        except BaseException:
            con.rollback()
            raise
        done.append(fn.__name__)
    return done


# --- call records -----------------------------------------------------------------------------


def _now() -> datetime:
    """UTC wall time, naive, as DuckDB TIMESTAMP columns hold it."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _json(value: Any) -> str:
    return canonical_json(value)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def request_payload(request: OracleRequest) -> dict[str, Any]:
    """What the store keeps of a request: messages, settings, output schema name and context."""
    return {
        "messages": [dict(m) for m in request.messages],
        "settings": {"temperature": request.temperature, "max_output_tokens": request.max_output_tokens},
        "schema": request.output_model.__name__,
        # Round-trip through canonical JSON: the same conversion the cache key makes.
        "context": json.loads(canonical_json(request.context)),
    }


@dataclass
class CallRecord:
    """One oracle call as stored in `oracle_calls`; `created_at`/`updated_at` are set by the store."""

    key: str
    provider: str
    model: str
    task: str
    template: str  # name@version
    template_sha256: str
    request: dict[str, Any]
    status: str
    raw_response: str = ""
    parsed: dict[str, Any] | None = None  # the output model's model_dump(mode="json")
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None
    attempts: int = 1
    batch_job_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        self.error = redact(self.error)
        if self.status not in STATUSES:
            raise ValueError(f"call {self.key}: unknown status {self.status!r}; expected one of {', '.join(sorted(STATUSES))}")
        extra = sorted(set(self.request) - REQUEST_FIELDS)
        if extra:
            raise ValueError(
                f"call {self.key}: request field(s) {', '.join(extra)} are not stored; "
                f"a stored request holds only {', '.join(sorted(REQUEST_FIELDS))} (never headers or keys)"
            )

    @property
    def replayable(self) -> bool:
        """A final outcome a re-run replays; False for failures (error, invalid) that it sends again."""
        return self.status in FINAL_STATUSES

    @classmethod
    def from_response(
        cls,
        key: str,
        request: OracleRequest,
        response: OracleResponse,
        provider: str,
        model: str,
        *,
        batch_job_id: str | None = None,
    ) -> "CallRecord":
        return cls(
            key=key,
            provider=provider,
            model=model,
            task=request.task,
            template=request.template,
            template_sha256=request.template_sha256,
            request=request_payload(request),
            status=response.status,
            raw_response=response.raw or "",
            parsed=None if response.parsed is None else response.parsed.model_dump(mode="json"),
            input_tokens=response.input_tokens,
            output_tokens=response.output_tokens,
            latency_s=response.latency_s,
            error=response.error,
            attempts=response.attempts,
            batch_job_id=batch_job_id,
        )

    def to_response(self, output_model: type[BaseModel]) -> OracleResponse:
        """The stored call as an `OracleResponse` (cached=True), its output validated into `output_model`."""
        return OracleResponse(
            status=self.status,  # type: ignore[arg-type]
            parsed=None if self.parsed is None else output_model.model_validate(self.parsed),
            raw=self.raw_response,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            latency_s=self.latency_s,
            attempts=self.attempts,
            error=self.error,
            cached=True,
        )


_CALL_COLUMNS = [f.name for f in fields(CallRecord)]
_CALL_JSON = {"request", "parsed"}
_CALL_TYPES = {
    "key": pa.string(), "provider": pa.string(), "model": pa.string(), "task": pa.string(),
    "template": pa.string(), "template_sha256": pa.string(), "request": pa.string(), "status": pa.string(),
    "raw_response": pa.string(), "parsed": pa.string(), "input_tokens": pa.int64(), "output_tokens": pa.int64(),
    "latency_s": pa.float64(), "error": pa.string(), "attempts": pa.int32(), "batch_job_id": pa.string(),
    "created_at": pa.timestamp("us"), "updated_at": pa.timestamp("us"),
}
_CALL_SCHEMA = pa.schema([(c, _CALL_TYPES[c]) for c in _CALL_COLUMNS])
_CALL_SELECT = ", ".join(_CALL_COLUMNS)
_CALL_INSERT_ROW = f"INSERT INTO oracle_calls ({_CALL_SELECT}) VALUES ({', '.join('?' for _ in _CALL_COLUMNS)})"
_CALL_INSERT_BATCH = f"INSERT INTO oracle_calls ({_CALL_SELECT}) SELECT {_CALL_SELECT} FROM {{batch}}"
# Below this many records, binding parameters beats registering an arrow table (a few ms each, measured).
_SMALL_BATCH = 8


def _call_values(record: CallRecord, created_at: datetime, updated_at: datetime) -> list[Any]:
    """The record's column values in table order, JSON columns as text."""
    values = []
    for c in _CALL_COLUMNS:
        v = getattr(record, c)
        if c in _CALL_JSON:
            v = None if v is None else _json(v)
        values.append(v)
    values[_CALL_COLUMNS.index("created_at")] = created_at
    values[_CALL_COLUMNS.index("updated_at")] = updated_at
    return values


def _call_from_row(row: tuple) -> CallRecord:
    data = dict(zip(_CALL_COLUMNS, row))
    for name in _CALL_JSON:
        data[name] = _loads(data[name])
    return CallRecord(**data)


# --- the store --------------------------------------------------------------------------------

_PID = re.compile(r"PID (\d+)")


def _lock_pid(lock_path: Path) -> int | None:
    try:
        text = lock_path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _in_use(run_dir: Path, pid: int | None, *, reading: bool = False) -> RunInUseError:
    if pid == os.getpid():
        return RunInUseError(f"run {run_dir} is already open in this process (pid {pid}); use or close that store first")
    who = f"pid {pid}" if pid is not None else "pid unknown"
    action = "read it when that process has finished" if reading else "wait for it to finish, stop it, or use another output directory"
    return RunInUseError(f"run {run_dir} is in use by another process ({who}); {action}")


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
        lock_fd = cls._acquire_lock(run_dir)
        try:
            try:
                con = duckdb.connect(str(path))
            except (duckdb.IOException, duckdb.ConnectionException) as e:
                raise cls._translate_open_error(e, run_dir) from e
            try:
                apply_migrations(con, migrations, path)
            except BaseException:
                con.close()
                raise
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        return cls(con, run_dir, False, lock_fd)

    @classmethod
    def _open_read_only(cls, run_dir: Path, path: Path, migrations: list[Migration]) -> "RunStore":
        if not path.exists():
            raise FileNotFoundError(f"no run store at {path}: is {run_dir} the output directory of `crome build`?")
        try:
            con = duckdb.connect(str(path), read_only=True)
        except (duckdb.IOException, duckdb.ConnectionException) as e:
            raise cls._translate_open_error(e, run_dir, reading=True) from e
        try:
            applied = _applied_migrations(con)
            if not applied:
                raise RunStoreError(f"{path} is not a crome run store (it has no _migrations table)")
            _check_known(applied, migrations, path)
            pending = [m.__name__ for m in migrations if m.__name__ not in applied]
            if pending:
                raise RunStoreError(
                    f"run store {path} predates migrations {', '.join(pending)}; open it for writing once to migrate it"
                )
        except BaseException:
            con.close()
            raise
        return cls(con, run_dir, True, None)

    @staticmethod
    def _acquire_lock(run_dir: Path) -> int | None:
        """Exclusive flock on RUN_DIR/crome.lock, which then names this process's pid."""
        if fcntl is None:
            return None
        lock_path = run_dir / LOCK_FILE
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _in_use(run_dir, _lock_pid(lock_path)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    @staticmethod
    def _translate_open_error(e: duckdb.Error, run_dir: Path, *, reading: bool = False) -> Exception:
        message = str(e)
        if "different configuration" in message:
            # This process already holds the file through another connection (e.g. a writer).
            return _in_use(run_dir, os.getpid())
        if "lock" not in message.lower():
            return RunStoreError(f"cannot open run store {run_dir / STORE_FILE}: {message}")
        match = _PID.search(message)
        pid = int(match.group(1)) if match else _lock_pid(run_dir / LOCK_FILE)
        return _in_use(run_dir, pid, reading=reading)

    def close(self) -> None:
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            try:
                self._con.close()
            finally:
                if self._lock_fd is not None:
                    os.close(self._lock_fd)  # releases the flock
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

    def _insert_arrow(self, con: duckdb.DuckDBPyConnection, sql: str, table: pa.Table) -> None:
        """Run `sql` with `{batch}` naming the arrow table: one statement for the whole batch."""
        name = f"_batch_{id(table):x}"
        con.register(name, table)
        try:
            con.execute(sql.format(batch=name))
        finally:
            con.unregister(name)

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

    # -- sources --

    def _replace_table(self, name: str, records: list[dict[str, Any]], schema: pa.Schema) -> int:
        """Replace every record of a re-derived table in one transaction."""
        table = pa.Table.from_pylist(records, schema=schema)

        def body(con: duckdb.DuckDBPyConnection) -> None:
            con.execute(f"DELETE FROM {name}")
            if records:
                self._insert_arrow(con, f"INSERT INTO {name} BY NAME SELECT * FROM {{batch}}", table)

        self._transaction(body)
        return len(records)

    def replace_sources(self, pairs: Iterable[SourcePair]) -> int:
        """Replace the source pairs with `pairs`, in the order given (a build re-reads its source every run)."""
        records = [
            {
                "ord": i, "row": p.row, "source_id": p.source_id,
                "prompt": _json([m.model_dump(mode="json") for m in p.prompt]),
                "chosen": p.chosen.content, "rejected": p.rejected.content, "preference": p.preference,
                "subset": p.subset, "metadata": _json(p.metadata),
            }
            for i, p in enumerate(pairs)
        ]
        return self._replace_table("source_pairs", records, _SOURCE_SCHEMA)

    def replace_quarantined(self, items: Iterable[Quarantined]) -> int:
        """Replace the quarantined source rows with `items`, in the order given."""
        records = [{"ord": i, **q.model_dump()} for i, q in enumerate(items)]
        return self._replace_table("quarantined", records, _QUARANTINE_SCHEMA)

    def iter_sources(self) -> Iterator[SourcePair]:
        """Source pairs in the order they were stored (source order)."""
        cols = ", ".join(f'"{c}"' for c in _SOURCE_SCHEMA.names if c != "ord")
        sql = f"SELECT {cols} FROM source_pairs ORDER BY ord"
        for row, source_id, prompt, chosen, rejected, preference, subset, metadata in self._stream(sql):
            yield SourcePair(
                source_id=source_id,
                prompt=[Message(**m) for m in json.loads(prompt)],
                chosen=AssistantMessage(content=chosen),
                rejected=AssistantMessage(content=rejected),
                preference=preference,
                row=row,
                subset=subset,
                metadata=json.loads(metadata),
            )

    def iter_quarantined(self) -> Iterator[Quarantined]:
        for row, reason, detail in self._stream('SELECT "row", reason, detail FROM quarantined ORDER BY ord'):
            yield Quarantined(row=row, reason=reason, detail=detail)

    # -- oracle calls --

    def record_calls(self, records: Iterable[CallRecord]) -> None:
        """Upsert call records by key in ONE transaction, durable on return; a repeated key: last one wins.

        Re-recording a key replaces the call and keeps only its first `created_at`. It is a
        delete + insert rather than ON CONFLICT DO UPDATE, which DuckDB runs at half the speed.
        """
        records = list(records)
        if not records:
            return
        now = _now()
        by_key = {r.key: r for r in records}
        keys = list(by_key)

        def body(con: duckdb.DuckDBPyConnection) -> None:
            if len(keys) == 1:
                found = con.execute("SELECT key, created_at FROM oracle_calls WHERE key = ?", keys).fetchall()
            else:
                found = con.execute(
                    "SELECT key, created_at FROM oracle_calls WHERE key IN (SELECT unnest(?::VARCHAR[]))", [keys]
                ).fetchall()
            created = dict(found)
            if len(created) == 1:
                con.execute("DELETE FROM oracle_calls WHERE key = ?", list(created))
            elif created:
                con.execute("DELETE FROM oracle_calls WHERE key IN (SELECT unnest(?::VARCHAR[]))", [list(created)])
            rows = [_call_values(r, created.get(r.key, now), now) for r in by_key.values()]
            if len(rows) < _SMALL_BATCH:
                for row in rows:
                    con.execute(_CALL_INSERT_ROW, row)
            else:
                table = pa.Table.from_pylist([dict(zip(_CALL_COLUMNS, row)) for row in rows], schema=_CALL_SCHEMA)
                self._insert_arrow(con, _CALL_INSERT_BATCH, table)

        self._transaction(body)

    def record_call(self, record: CallRecord) -> None:
        self.record_calls([record])

    def get_calls(self, keys: Iterable[str]) -> dict[str, CallRecord]:
        """The stored calls among `keys` (missing keys are absent from the result), in one query."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
        rows = self._query(
            f"SELECT {_CALL_SELECT} FROM oracle_calls WHERE key IN (SELECT unnest(?::VARCHAR[]))", [keys]
        )
        found = {row[0]: _call_from_row(row) for row in rows}
        return {k: found[k] for k in keys if k in found}

    def get_call(self, key: str) -> CallRecord | None:
        return self.get_calls([key]).get(key)

    def get_replayable(self, keys: Iterable[str]) -> dict[str, CallRecord]:
        """The stored calls among `keys` that a re-run replays (final outcomes, not failures)."""
        return {k: r for k, r in self.get_calls(keys).items() if r.replayable}

    def iter_calls(self) -> Iterator[CallRecord]:
        """Every stored call, by key (merging shards copies a run's cache this way)."""
        for row in self._stream(f"SELECT {_CALL_SELECT} FROM oracle_calls ORDER BY key"):
            yield _call_from_row(row)

    def token_totals(self) -> list[dict[str, Any]]:
        """Calls and tokens per (provider, model, batch or online): what a cost report prices."""
        rows = self._query(
            """SELECT provider, model, batch_job_id IS NOT NULL AS batch, count(*), sum(input_tokens), sum(output_tokens)
               FROM oracle_calls GROUP BY ALL ORDER BY ALL"""
        )
        return [
            {"provider": p, "model": m, "batch": bool(b), "calls": n, "input_tokens": int(i), "output_tokens": int(o)}
            for p, m, b, n, i, o in rows
        ]

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
        stats: dict[str, Any] = {
            "total": 0, "failed": 0, "by_status": {}, "by_task": {}, "by_task_status": {},
            "input_tokens": 0, "output_tokens": 0, "latency_s": 0.0, "tokens_by_task": {},
        }
        for task, status, n, tin, tout, lat in rows:
            stats["total"] += n
            stats["failed"] += n if status in RETRY_STATUSES else 0
            stats["by_status"][status] = stats["by_status"].get(status, 0) + n
            stats["by_task"][task] = stats["by_task"].get(task, 0) + n
            stats["by_task_status"].setdefault(task, {})[status] = n
            tokens = stats["tokens_by_task"].setdefault(task, {"input": 0, "output": 0})
            tokens["input"] += int(tin)
            tokens["output"] += int(tout)
            stats["input_tokens"] += int(tin)
            stats["output_tokens"] += int(tout)
            stats["latency_s"] += float(lat)
        return stats

    # -- artifacts and meta --

    def put_artifacts(self, kind: str, items: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> int:
        """Upsert several artifacts of one kind in one transaction; values are JSON (pydantic models allowed)."""
        pairs = dict(items.items() if isinstance(items, Mapping) else items)
        if not pairs:
            return 0
        now = _now()
        table = pa.Table.from_pydict(
            {
                "kind": [kind] * len(pairs), "key": list(pairs), "value": [_json(v) for v in pairs.values()],
                "created_at": [now] * len(pairs), "updated_at": [now] * len(pairs),
            },
            schema=_ARTIFACT_SCHEMA,
        )
        sql = (
            "INSERT INTO artifacts BY NAME SELECT * FROM {batch} "
            "ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
        )
        self._transaction(lambda con: self._insert_arrow(con, sql, table))
        return len(pairs)

    def put_artifact(self, kind: str, key: str, value: Any) -> None:
        self.put_artifacts(kind, {key: value})

    def get_artifact(self, kind: str, key: str, default: Any = None) -> Any:
        rows = self._query("SELECT value FROM artifacts WHERE kind = ? AND key = ?", [kind, key])
        return json.loads(rows[0][0]) if rows else default

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

    def delete_artifact(self, kind: str, key: str) -> None:
        self._transaction(lambda con: con.execute("DELETE FROM artifacts WHERE kind = ? AND key = ?", [kind, key]))

    def set_meta(self, key: str, value: Any) -> None:
        self._transaction(
            lambda con: con.execute(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", [key, _json(value)]
            )
        )

    def get_meta(self, key: str, default: Any = None) -> Any:
        rows = self._query("SELECT value FROM meta WHERE key = ?", [key])
        return json.loads(rows[0][0]) if rows else default

    # -- rows and rejections (re-derived by every build) --

    def replace_rows(self, rows: Iterable[DatasetRow]) -> int:
        """Replace all dataset rows with `rows`, kept in the order given; ids must be unique.

        Inserted a chunk at a time inside one transaction: a JSON copy of every row at once would
        double the peak memory of a large build.
        """
        seen: dict[str, int] = {}
        count = 0

        def records(chunk: list[DatasetRow], start: int) -> pa.Table:
            out = []
            for i, row in enumerate(chunk, start):
                if row.id in seen:
                    raise ValueError(
                        f"row {i} has the same id as row {seen[row.id]} ({row.id}, source {row.source_id}): "
                        "duplicates must be rejected by dedup before the rows are stored"
                    )
                seen[row.id] = i
                out.append(
                    {
                        "ord": i, "id": row.id, "source_id": row.source_id, "kind": row.kind,
                        "augmentation": row.augmentation, "attribute": row.attribute, "data": row.model_dump_json(),
                    }
                )
            return pa.Table.from_pylist(out, schema=_ROW_SCHEMA)

        def body(con: duckdb.DuckDBPyConnection) -> None:
            nonlocal count
            con.execute("DELETE FROM rows")
            chunk: list[DatasetRow] = []
            for row in rows:
                chunk.append(row)
                if len(chunk) == _INSERT_CHUNK:
                    self._insert_arrow(con, "INSERT INTO rows BY NAME SELECT * FROM {batch}", records(chunk, count))
                    count += len(chunk)
                    chunk = []
            if chunk:
                self._insert_arrow(con, "INSERT INTO rows BY NAME SELECT * FROM {batch}", records(chunk, count))
                count += len(chunk)

        self._transaction(body)
        return count

    def iter_rows(self) -> Iterator[DatasetRow]:
        for (data,) in self._stream("SELECT data FROM rows ORDER BY ord"):
            yield DatasetRow.model_validate_json(data)

    def replace_rejections(self, items: Iterable[Rejection]) -> int:
        """Replace all rejections with `items`, kept in the order given."""
        records = []
        for i, r in enumerate(items):
            data = r.model_dump(mode="json")
            data["candidate"] = None if r.candidate is None else _json(data["candidate"])
            records.append({"ord": i, **data})
        return self._replace_table("rejections", records, _REJECTION_SCHEMA)

    def iter_rejections(self) -> Iterator[Rejection]:
        cols = [c for c in _REJECTION_SCHEMA.names if c != "ord"]
        for row in self._stream(f"SELECT {', '.join(cols)} FROM rejections ORDER BY ord"):
            data = dict(zip(cols, row))
            data["candidate"] = _loads(data["candidate"])
            yield Rejection(**data)

    # -- overview --

    def counts(self) -> dict[str, int]:
        """Number of records in each table."""
        tables = ("source_pairs", "quarantined", "oracle_calls", "artifacts", "rows", "rejections", "meta")
        sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in tables)
        return {t: n for t, n in self._query(sql)}

    def applied_migrations(self) -> list[str]:
        with self._mutex:
            return _applied_migrations(self._con)


_INSERT_CHUNK = 5_000  # rows per Arrow batch when replacing large tables
_SOURCE_SCHEMA = pa.schema(
    [
        ("ord", pa.int64()), ("row", pa.int64()), ("source_id", pa.string()), ("prompt", pa.string()), ("chosen", pa.string()),
        ("rejected", pa.string()), ("preference", pa.float64()), ("subset", pa.string()), ("metadata", pa.string()),
    ]
)
_QUARANTINE_SCHEMA = pa.schema([("ord", pa.int64()), ("row", pa.int64()), ("reason", pa.string()), ("detail", pa.string())])
_ARTIFACT_SCHEMA = pa.schema(
    [
        ("kind", pa.string()), ("key", pa.string()), ("value", pa.string()),
        ("created_at", pa.timestamp("us")), ("updated_at", pa.timestamp("us")),
    ]
)
_ROW_SCHEMA = pa.schema(
    [
        ("ord", pa.int64()), ("id", pa.string()), ("source_id", pa.string()), ("kind", pa.string()),
        ("augmentation", pa.string()), ("attribute", pa.string()), ("data", pa.string()),
    ]
)
_REJECTION_SCHEMA = pa.schema(
    [("ord", pa.int64())] + [(name, pa.string()) for name in Rejection.model_fields]
)

__all__ = [
    "CallRecord", "FINAL_STATUSES", "MIGRATIONS", "RETRY_STATUSES", "RunInUseError", "RunStore", "RunStoreError",
    "STORE_FILE", "apply_migrations", "migration", "redact", "request_payload",
]
