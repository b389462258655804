"""Migrations on a real database file: applied once each, in order, refused when unknown, rolled back when they fail."""

from __future__ import annotations

import duckdb
import pytest

from crome.builder.store import MIGRATIONS, STORE_FILE, RunStore, RunStoreError

NAMES = ["m001_initial", "m002_sources_in_order", "m003_calls_record_every_request_sent", "m004_keys_hold_only_what_the_oracle_reads", "m005_streaming_build",
         "m006_calls_indexed_by_k64", "m007_calls_without_an_index"]


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


def test_m006_refiles_stored_calls_under_k64_and_keeps_keys_unique(tmp_path):
    """A store made before m006 (calls under a primary key on `key`) keeps every call and finds it by `k64`."""
    from datetime import datetime

    from helpers_runs import get_call
    from store_helpers import record

    from crome.builder.store.calls import CALL_COLUMNS, CALL_SELECT, call_values, key_k64

    keys = ["sha256:" + "ab" * 32, "k'quoted", "plain"]
    with RunStore.open(tmp_path, migrations=MIGRATIONS[:5]) as store:
        now = datetime(2026, 1, 1)
        for k in keys:
            store._query(f"INSERT INTO oracle_calls ({CALL_SELECT}) VALUES ({', '.join('?' for _ in CALL_COLUMNS)})",
                         call_values(record(k), now, now)[: len(CALL_COLUMNS)])
    with RunStore.open(tmp_path) as store:
        assert store.applied_migrations() == NAMES
        assert sorted(store.get_calls(keys)) == sorted(keys)
        assert dict(store._query("SELECT key, k64 FROM oracle_calls")) == {k: key_k64(k) for k in keys}
        assert store._query("SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'oracle_calls' AND constraint_type = 'PRIMARY KEY'") == [(0,)]
        assert store._query("SELECT index_name FROM duckdb_indexes() WHERE table_name = 'oracle_calls'") == []  # m007
        store.record_calls([record("k'quoted", rewrite="Mars has two moons.")])  # a key recorded again replaces its call
        assert store._query("SELECT count(*) FROM oracle_calls WHERE key = 'k''quoted'") == [(1,)]
        assert get_call(store, "k'quoted").parsed["rewrite"] == "Mars has two moons."
        assert store.get_calls(["absent"]) == {}


def test_the_call_cache_holds_no_index_in_memory_and_finds_calls_stored_far_apart(tmp_path):
    """m007: DuckDB cannot spill an index; the call cache's grew with the calls (~80 MB at 300k pairs). Lookups read `k64`, then rowid ranges."""
    from helpers_runs import get_call
    from store_helpers import record

    keys = [f"sha256:{i:064x}" for i in range(20_000)]
    art = "SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() WHERE tag = 'ART_INDEX'"
    with RunStore.open(tmp_path) as store:
        for i in range(0, len(keys), 1000):
            store.record_calls([record(k) for k in keys[i : i + 1000]])
    with RunStore.open(tmp_path) as store:
        # neighbours; a run of rows 5,000-8,000 read as one range (gaps under 2,048); strays; a key never stored
        wanted = keys[:300] + keys[5_000:5_003] + [keys[6_500], keys[8_000], keys[12_345], keys[-1], "sha256:absent"]
        found = store.get_calls(wanted)
        assert list(found) == wanted[:-1] and all(found[k].key == k for k in found)
        store.record_calls([record(keys[12_345], rewrite="again"), record(keys[7], rewrite="again")])  # replaced in place
        assert store._query("SELECT count(*) FROM oracle_calls") == [(20_000,)]
        assert get_call(store, keys[12_345]).parsed["rewrite"] == get_call(store, keys[7]).parsed["rewrite"] == "again"
        assert get_call(store, keys[8]).parsed["rewrite"] == "Mars has three moons."
        assert store._query(art) == [(0,)]


def test_reopen_releases_duckdbs_indexes_and_keeps_the_limit_the_lock_and_the_data(tmp_path):
    from helpers_runs import iter_sources
    from store_helpers import replace_sources

    from crome.schemas.source import SourcePair

    pairs = [SourcePair(source_id=f"s{i}", prompt=[{"role": "user", "content": f"q{i}"}], chosen={"role": "assistant", "content": "a"},
                        rejected={"role": "assistant", "content": "b"}, row=i) for i in range(5_000)]
    art = "SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() WHERE tag = 'ART_INDEX'"
    limit = "SELECT current_setting('memory_limit')"
    with RunStore.open(tmp_path) as store:
        store.limit_memory(150)
        before = store._query(limit)
        replace_sources(store, pairs)  # the source's primary key: an index in memory
        assert store._query(art)[0][0] > 0
        store.reopen()
        assert store._query(art) == [(0,)]  # released
        assert store.memory_mb == 150 and store._query(limit) == before
        with pytest.raises(RunStoreError):
            RunStore.open(tmp_path)  # the run lock is still held
        assert [p.source_id for p in iter_sources(store)] == [p.source_id for p in pairs]
