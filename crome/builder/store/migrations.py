"""The store's schema: an ordered list of named migrations, each applied once and recorded in `_migrations`.

A migration is never edited once released: existing run directories have it recorded by name and
will not run it again. A schema change is a new function, registered after the others.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import duckdb

from crome.builder.store.columns import utc_now
from crome.builder.store.errors import RunStoreError

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


@migration
def m003_calls_record_every_request_sent(con: duckdb.DuckDBPyConnection) -> None:
    """`oracle_calls.sent`: every request sent to the provider under a key, with the usage it reported: the spend is their sum.

    One record per key is the answer a re-run replays; its retries, re-asks and the sends of a
    failed call made again were billed too. A call stored before this column existed gets one
    entry with its recorded usage (all its attempts summed, marked `backfilled`), when it has
    any: the best figure such a store holds.
    """
    con.execute("ALTER TABLE oracle_calls ADD COLUMN sent JSON")
    con.execute(
        """UPDATE oracle_calls SET sent = CASE WHEN input_tokens > 0 OR output_tokens > 0 THEN
               json_array(json_object('outcome', status, 'input_tokens', input_tokens, 'output_tokens', output_tokens,
                                      'reported', true, 'batch', batch_job_id IS NOT NULL, 'backfilled', true))
               ELSE '[]'::JSON END"""
    )


# What each oracle read from a request's context beyond its rendered messages when m004 was
# released (their `Capabilities.context_keys`). An oracle not named here (a custom one) may read
# anything: its calls keep their keys.
_CONTEXT_READ_AT_M004 = {"openai": (), "gemini": (), "rules": ("donor", "seed", "side")}
_REKEY_CHUNK = 2000


def _key_payload(provider: str, model: str, request: dict, schema: dict, context: dict) -> dict:
    return {"provider": provider, "model": model, "messages": request["messages"], "settings": request["settings"],
            "schema": schema, "context": context}


@migration
def m004_keys_hold_only_what_the_oracle_reads(con: duckdb.DuckDBPyConnection) -> None:
    """Re-file every call under a key without the context its oracle never reads (a donor, the seed).

    The old key hashed the whole context, so a new --limit or --seed re-sent (and re-billed) every
    rewrite. Each stored call is checked first: its old key is recomputed from the stored request
    and only a call whose key matches (its output schema unchanged since) is moved. Calls that now
    share a key (the same rewrite asked with two donors) keep one: a final answer over a failure,
    then `ok`, then the latest. The requests they were sent with all go to it (`sent`, m003), so
    nothing billed drops out of the spend.
    """
    from crome.schemas.hashing import stable_hash
    from crome.schemas.oracle import OUTPUT_MODELS

    schemas = {name: model.model_json_schema() for name, model in OUTPUT_MODELS.items()}
    con.execute("CREATE TEMP TABLE _rekey (old VARCHAR, new VARCHAR)")
    cur = con.cursor()
    cur.execute("SELECT key, provider, model, request FROM oracle_calls")
    while chunk := cur.fetchmany(_REKEY_CHUNK):
        moves = []
        for key, provider, model, request_json in chunk:
            read = _CONTEXT_READ_AT_M004.get(provider)
            request = json.loads(request_json)
            schema = schemas.get(request.get("schema"))
            if read is None or schema is None:
                continue
            context = request.get("context") or {}
            if stable_hash(_key_payload(provider, model, request, schema, context)) != key:
                continue  # made with another output schema: no current request has this key anyway
            new = stable_hash(_key_payload(provider, model, request, schema, {k: context[k] for k in read if k in context}))
            if new != key:
                moves.append((key, new))
        if moves:
            con.executemany("INSERT INTO _rekey VALUES (?, ?)", moves)
    cur.close()
    # A call already under a new key (a request with no unread context) competes with those moving onto it.
    con.execute("INSERT INTO _rekey SELECT DISTINCT r.new, r.new FROM _rekey r JOIN oracle_calls c ON c.key = r.new")
    con.execute(
        f"""CREATE TEMP TABLE _winner AS
            SELECT old, new FROM (
                SELECT r.old, r.new, row_number() OVER (
                    PARTITION BY r.new
                    ORDER BY c.status IN ({", ".join(repr(x) for x in ("ok", "refused", "blocked", "unsupported", "truncated"))}) DESC,
                             c.status = 'ok' DESC, c.updated_at DESC, r.old) AS n
                FROM _rekey r JOIN oracle_calls c ON c.key = r.old)
            WHERE n = 1"""
    )
    # Everything the calls moving onto one key were billed stays with it.
    con.execute(
        """CREATE TEMP TABLE _sent AS
           SELECT r.new, to_json(flatten(list(from_json(c.sent, '["JSON"]') ORDER BY c.created_at, r.old))) AS sent
           FROM _rekey r JOIN oracle_calls c ON c.key = r.old GROUP BY r.new"""
    )
    columns = [r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'oracle_calls' ORDER BY ordinal_position").fetchall()]
    select = ", ".join("w.new" if c == "key" else "s.sent" if c == "sent" else f"c.{c}" for c in columns)
    con.execute(
        f"""CREATE TEMP TABLE _moved AS SELECT {select}
            FROM oracle_calls c JOIN _winner w ON c.key = w.old JOIN _sent s ON s.new = w.new"""
    )
    con.execute("DELETE FROM oracle_calls WHERE key IN (SELECT old FROM _rekey)")
    con.execute("INSERT INTO oracle_calls SELECT * FROM _moved")
    for table in ("_moved", "_sent", "_winner", "_rekey"):
        con.execute(f"DROP TABLE {table}")


def applied_migrations(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Names of the migrations recorded in the database, in the order they were applied."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' AND table_name = '_migrations'"
    ).fetchone()[0]
    if not exists:
        return []
    return [r[0] for r in con.execute("SELECT name FROM _migrations ORDER BY applied_at, name").fetchall()]


def check_known(applied: Sequence[str], migrations: Sequence[Migration], where: Path) -> None:
    """Refuse a store migrated past `migrations`: this code would misread its tables."""
    unknown = [name for name in applied if name not in {m.__name__ for m in migrations}]
    if unknown:
        raise RunStoreError(
            f"run store {where} was written by a newer crome (unknown migrations: {', '.join(unknown)}); upgrade crome"
        )


def check_current(con: duckdb.DuckDBPyConnection, migrations: Sequence[Migration], where: Path) -> None:
    """What a read-only open needs: a crome store with exactly `migrations` applied (it cannot migrate)."""
    applied = applied_migrations(con)
    if not applied:
        raise RunStoreError(f"{where} is not a crome run store (it has no _migrations table)")
    check_known(applied, migrations, where)
    pending = [m.__name__ for m in migrations if m.__name__ not in applied]
    if pending:
        raise RunStoreError(
            f"run store {where} predates migrations {', '.join(pending)}; open it for writing once to migrate it"
        )


def apply_migrations(con: duckdb.DuckDBPyConnection, migrations: Sequence[Migration], where: Path) -> list[str]:
    """Apply the migrations not yet recorded, each in its own transaction; return their names."""
    con.execute("CREATE TABLE IF NOT EXISTS _migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP NOT NULL)")
    applied = applied_migrations(con)
    check_known(applied, migrations, where)
    done = []
    for fn in migrations:
        if fn.__name__ in applied:
            continue
        con.begin()
        try:
            fn(con)
            con.execute("INSERT INTO _migrations VALUES (?, ?)", [fn.__name__, utc_now()])
            con.commit()
        except BaseException:
            con.rollback()
            raise
        done.append(fn.__name__)
    return done


@migration
def m005_streaming_build(con: duckdb.DuckDBPyConnection) -> None:
    """A build streams: the whole source (the pool draws come from), its rows, rejections, outcomes and dedup index live here.

    `source_pairs` holds every pair of the source (`mine`: in this run's shard) with its IQN draw
    group; the `build_*` tables are what the running build has finished so far (re-derived by every
    build, exported from); `dedup_*` are the dedup index (exact keys, MinHash band keys, signatures).
    """
    for column, kind in (("mine", "BOOLEAN DEFAULT TRUE"), ("iqn_rank", "VARCHAR"), ("grp", "INTEGER"), ("pos", "INTEGER"),
                         ("gsize", "INTEGER"), ("draw_grp", "INTEGER")):
        con.execute(f"ALTER TABLE source_pairs ADD COLUMN {column} {kind}")
    con.execute(
        """CREATE TABLE build_rows (seq BIGINT NOT NULL, id VARCHAR NOT NULL, source_id VARCHAR NOT NULL, kind_ord INTEGER NOT NULL,
           kind VARCHAR NOT NULL, augmentation VARCHAR NOT NULL, attribute VARCHAR, data VARCHAR NOT NULL)"""
    )
    con.execute(
        """CREATE TABLE build_rejections (seq BIGINT NOT NULL, source_id VARCHAR NOT NULL, stage VARCHAR NOT NULL,
           reason VARCHAR NOT NULL, detail VARCHAR NOT NULL, candidate_id VARCHAR, duplicate_of VARCHAR, augmentation VARCHAR,
           attribute VARCHAR, candidate JSON)"""
    )
    con.execute("CREATE TABLE build_pairs (ord BIGINT NOT NULL, source_id VARCHAR NOT NULL, outcome VARCHAR NOT NULL)")
    con.execute("CREATE TABLE dedup_exact (idx VARCHAR NOT NULL, k64 BIGINT NOT NULL, key VARCHAR NOT NULL, item VARCHAR NOT NULL)")
    con.execute("CREATE TABLE dedup_bands (idx VARCHAR NOT NULL, band BIGINT NOT NULL, item BIGINT NOT NULL)")
    con.execute("CREATE TABLE dedup_sigs (idx VARCHAR NOT NULL, item BIGINT NOT NULL, id VARCHAR NOT NULL, sig BLOB NOT NULL)")
    # `rows` without its primary key: an index over a million row ids lives in memory; the build checks
    # that ids are unique with one query over the finished rows instead.
    con.execute("ALTER TABLE rows RENAME TO rows_old")
    con.execute(
        """CREATE TABLE rows (ord BIGINT NOT NULL, id VARCHAR NOT NULL, source_id VARCHAR NOT NULL, kind VARCHAR NOT NULL,
           augmentation VARCHAR NOT NULL, attribute VARCHAR, data JSON NOT NULL)"""
    )
    con.execute("INSERT INTO rows SELECT * FROM rows_old")
    con.execute("DROP TABLE rows_old")


@migration
def m006_calls_indexed_by_k64(con: duckdb.DuckDBPyConnection) -> None:
    """`oracle_calls` without its primary key on `key`; a `k64` column (`key_k64`) and an index on it instead.

    DuckDB keeps an index in memory and cannot spill it: over the 64-character keys it cost ~120
    bytes per call (a 300k-pair rules build: ~200 MB), over a 64-bit integer ~40. Keys stay unique
    because the store is their only writer and replaces a key's record (delete, then insert) in one
    transaction; lookups read the index by `k64`, then compare the keys.
    """
    import pyarrow as pa

    from crome.builder.store.calls import key_k64

    con.create_function("_crome_key_k64", lambda keys: pa.array([key_k64(k) for k in keys.to_pylist()], pa.int64()),
                        ["VARCHAR"], "BIGINT", type="arrow")
    try:
        columns = con.execute(
            """SELECT column_name, data_type, is_nullable FROM information_schema.columns
               WHERE table_schema = 'main' AND table_name = 'oracle_calls' ORDER BY ordinal_position"""
        ).fetchall()
        ddl = ", ".join(f'"{name}" {kind}{" NOT NULL" if nullable == "NO" else ""}' for name, kind, nullable in columns)
        names = ", ".join(f'"{name}"' for name, _, _ in columns)
        con.execute(f"CREATE TABLE _oracle_calls ({ddl}, k64 BIGINT NOT NULL)")
        con.execute(f"INSERT INTO _oracle_calls SELECT {names}, _crome_key_k64(key) FROM oracle_calls ORDER BY rowid")
        con.execute("DROP TABLE oracle_calls")
        con.execute("ALTER TABLE _oracle_calls RENAME TO oracle_calls")
        con.execute("CREATE INDEX oracle_calls_k64 ON oracle_calls (k64)")
    finally:
        con.remove_function("_crome_key_k64")


@migration
def m007_calls_without_an_index(con: duckdb.DuckDBPyConnection) -> None:
    """`oracle_calls` without `oracle_calls_k64`: the last index that grew with the calls.

    DuckDB holds an index in memory from its first use to the connection's end and cannot spill
    it: ~40 bytes per call, ~80 MB in a 300k-pair rules build's loop (1.76M calls), the part of its
    peak that grew with the source. Lookups read the `k64` column, then the records by rowid ranges
    (`call_table.find_calls`); a fresh build's lookups are answered by its Bloom filter.
    """
    con.execute("DROP INDEX IF EXISTS oracle_calls_k64")
