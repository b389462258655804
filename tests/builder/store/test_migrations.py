"""Migrations on a real database file: applied once each, in order, refused when unknown, rolled back when they fail."""

from __future__ import annotations

import duckdb
import pytest

from crome.builder.store import MIGRATIONS, STORE_FILE, RunStore, RunStoreError

NAMES = ["m001_initial", "m002_sources_in_order", "m003_calls_record_every_request_sent", "m004_keys_hold_only_what_the_oracle_reads", "m005_streaming_build"]


def test_migrations_apply_once_and_are_idempotent_on_reopen(tmp_path):
    with RunStore.open(tmp_path) as store:
        assert store.applied_migrations() == [m.__name__ for m in MIGRATIONS] == NAMES
        assert (tmp_path / STORE_FILE).exists()
    con = duckdb.connect(str(tmp_path / STORE_FILE), read_only=True)
    first = con.execute("SELECT name, applied_at FROM _migrations").fetchall()
    con.close()
    with RunStore.open(tmp_path) as store:
        assert store.applied_migrations() == NAMES
    con = duckdb.connect(str(tmp_path / STORE_FILE), read_only=True)
    assert con.execute("SELECT name, applied_at FROM _migrations").fetchall() == first
    con.close()


def test_a_newer_migration_list_applies_only_the_new_one(tmp_path):
    with RunStore.open(tmp_path) as store:
        store.set_meta("kept", True)

    calls = []

    def m099_add_notes(con):
        calls.append("m099")
        con.execute("ALTER TABLE meta ADD COLUMN note VARCHAR")

    newer = [*MIGRATIONS, m099_add_notes]
    with RunStore.open(tmp_path, migrations=newer) as store:
        assert store.applied_migrations() == [*NAMES, "m099_add_notes"]
        assert store.get_meta("kept") is True  # m001 did not run again over the data
    with RunStore.open(tmp_path, migrations=newer):
        pass
    assert calls == ["m099"]
    # The older code refuses a store migrated past what it knows, naming the migration.
    with pytest.raises(RunStoreError, match="newer crome.*m099_add_notes"):
        RunStore.open(tmp_path)
    # Read-only with a pending migration: told to open for writing, nothing changed.
    other = tmp_path / "other"
    RunStore.open(other).close()
    with pytest.raises(RunStoreError, match="predates migrations m099_add_notes"):
        RunStore.open(other, read_only=True, migrations=newer)


def test_a_failing_migration_is_rolled_back_and_retried(tmp_path):
    RunStore.open(tmp_path).close()

    def m099_broken(con):
        con.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        RunStore.open(tmp_path, migrations=[*MIGRATIONS, m099_broken])

    # Nothing of it stayed: the same migration, fixed, applies cleanly on the next open.
    def m099_fixed(con):
        con.execute("CREATE TABLE half_done (x INTEGER)")

    m099_fixed.__name__ = "m099_broken"
    with RunStore.open(tmp_path, migrations=[*MIGRATIONS, m099_fixed]) as store:
        assert store.applied_migrations() == [*NAMES, "m099_broken"]
