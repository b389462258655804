"""The store's schema: an ordered list of named migrations, each applied once and recorded in `_migrations`.

A migration is never edited once released: existing run directories have it recorded by name and
will not run it again. A schema change is a new function, registered after the others.
"""

from __future__ import annotations

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
