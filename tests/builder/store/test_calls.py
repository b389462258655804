"""The call cache: call records round-trip, replace by key, replay by status, keep no secrets."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from helpers_runs import get_call
from store_helpers import record, request

from crome.builder.store import FINAL_STATUSES, RETRY_STATUSES, CallRecord, RunStore
from crome.prompts import load_template
from crome.schemas.calls import OracleResponse
from crome.schemas.oracle import Counterfactual


def test_call_round_trip_with_parsed_output(tmp_path):
    req = request()
    key = req.cache_key("gemini", "gemini-2.0-flash", ())
    parsed = Counterfactual(rewrite="Mars has three moons: Phobos and Deimos.", change="wrong count")
    resp = OracleResponse(status="ok", parsed=parsed, raw=parsed.model_dump_json(), input_tokens=812, output_tokens=40, latency_s=1.5)
    with RunStore.open(tmp_path) as store:
        store.record_calls([CallRecord.from_response(key, req, resp, "gemini", "gemini-2.0-flash")])
    with RunStore.open(tmp_path, read_only=True) as store:
        rec = get_call(store, key)
        assert get_call(store, "sha256:missing") is None
    assert rec is not None and rec.replayable
    assert (rec.provider, rec.model, rec.task, rec.template) == ("gemini", "gemini-2.0-flash", "degrade", "degrade@v1")
    assert rec.template_sha256 == load_template("degrade@v1").sha256
    assert rec.request == {
        "messages": [dict(m) for m in req.messages],
        "settings": {"temperature": req.temperature, "max_output_tokens": req.max_output_tokens},
        "schema": "Counterfactual",
        "context": {"side": "chosen"},
    }
    assert rec.parsed == parsed.model_dump(mode="json")
    assert (rec.input_tokens, rec.output_tokens, rec.latency_s, rec.attempts) == (812, 40, 1.5, 1)
    assert rec.created_at is not None and rec.created_at == rec.updated_at
    assert abs(rec.created_at - datetime.now(timezone.utc).replace(tzinfo=None)) < timedelta(minutes=1)
    replay = rec.to_response(Counterfactual)
    assert replay.cached and replay.ok and replay.parsed == parsed and replay.raw == resp.raw


def test_re_recording_a_key_replaces_it_and_nothing_else(tmp_path):
    with RunStore.open(tmp_path) as store:
        store.record_calls([record("k1", "error"), record("k2")])
        before = store.get_calls(["k1", "k2"])
        time.sleep(0.01)
        store.record_calls([record("k1", "ok", rewrite="Mars has one moon.", tokens=30)])
        after = store.get_calls(["k1", "k2"])
        assert store.counts()["oracle_calls"] == 2
    assert after["k1"].status == "ok" and after["k1"].parsed["rewrite"] == "Mars has one moon."
    assert (after["k1"].input_tokens, after["k1"].attempts) == (30, 1)  # replaced, not incremented
    assert after["k1"].created_at == before["k1"].created_at and after["k1"].updated_at > before["k1"].updated_at
    assert after["k2"] == before["k2"]


def test_replayable_final_outcomes_versus_failures(tmp_path):
    statuses = sorted(FINAL_STATUSES | RETRY_STATUSES)
    assert set(statuses) == {"ok", "refused", "blocked", "unsupported", "truncated", "error", "invalid"}
    with RunStore.open(tmp_path) as store:
        store.record_calls([record(f"k-{s}", s) for s in statuses])
        calls = store.get_calls([f"k-{s}" for s in statuses] + ["k-missing"])
    assert len(calls) == 7  # the missing key is absent
    # What a re-run replays: the final outcomes; the failures it sends again.
    assert {k for k, r in calls.items() if r.replayable} == {f"k-{s}" for s in ("ok", "refused", "blocked", "unsupported", "truncated")}
    assert not calls["k-error"].replayable and not calls["k-invalid"].replayable
    failed = calls["k-error"].to_response(Counterfactual)
    assert failed.status == "error" and failed.parsed is None and failed.error == "error happened" and failed.attempts == 2


def test_batch_record_and_lookup(tmp_path):
    records = [record(f"sha256:{i:064x}", tokens=i) for i in range(300)]
    with RunStore.open(tmp_path) as store:
        store.record_calls(records)
        # A key repeated within one batch: the last record wins.
        store.record_calls([record("dup", "error"), record("dup", "ok", rewrite="last")])
        wanted = [f"sha256:{i:064x}" for i in (299, 0, 150)] + ["sha256:absent"]
        got = store.get_calls(wanted)
        assert list(got) == wanted[:3]  # in the order asked, missing keys absent
        assert [got[k].input_tokens for k in got] == [299, 0, 150]
        assert get_call(store, "dup").parsed["rewrite"] == "last"
        assert len(store.get_calls(r.key for r in records)) == 300
        assert store.get_calls([]) == {}


def test_record_calls_is_one_transaction(tmp_path):
    with RunStore.open(tmp_path) as store:
        store.record_calls([record("k1", rewrite="original")])
        bad = record("k2")
        bad.request["context"] = {"unserialisable": object()}
        with pytest.raises(TypeError):
            store.record_calls([record("k1", rewrite="replacement"), bad])
        assert get_call(store, "k1").parsed["rewrite"] == "original"
        assert get_call(store, "k2") is None
        store.record_calls([record("k3")])  # the store is still usable
        assert store.counts()["oracle_calls"] == 2


def test_call_stats_by_status_and_task(tmp_path):
    with RunStore.open(tmp_path) as store:
        store.record_calls([record("a", tokens=100, task="rubrics"), record("b", tokens=10, task="rubrics"), record("c", "error", tokens=4)])
        mark = datetime.now(timezone.utc)
        time.sleep(0.01)
        store.record_calls([record("d", "invalid", tokens=6)])
        stats = store.call_stats()
        recent = store.call_stats(since=mark)
    assert stats["total"] == 4 and stats["failed"] == 2
    assert stats["by_status"] == {"ok": 2, "error": 1, "invalid": 1}
    assert stats["by_task"] == {"degrade": 2, "rubrics": 2}
    assert stats["by_task_status"] == {"degrade": {"error": 1, "invalid": 1}, "rubrics": {"ok": 2}}
    assert (stats["input_tokens"], stats["output_tokens"]) == (120, 60)
    assert stats["tokens_by_task"]["rubrics"] == {"input": 110, "output": 55}
    assert recent["total"] == 1 and recent["by_status"] == {"invalid": 1}


def test_store_refuses_request_fields_beyond_messages_settings_schema_context():
    rec = record("k")
    assert set(rec.request) == {"messages", "settings", "schema", "context"}
    with pytest.raises(ValueError, match="request field.*headers.*never headers or keys"):
        CallRecord(**{**rec.__dict__, "request": {**rec.request, "headers": {"Authorization": "Bearer x"}}})
    with pytest.raises(ValueError, match="unknown status 'pending'"):
        CallRecord(**{**rec.__dict__, "status": "pending"})


def test_keys_in_error_text_are_redacted(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "gem-secret-value-123")
    rec = record("k", "error")
    rec = CallRecord(**{**rec.__dict__, "error": "401: bad key gem-secret-value-123; also sk-proj-abcdefghijklmnopqrstuvwx"})
    with RunStore.open(tmp_path) as store:
        store.record_calls([rec])
        stored = get_call(store, "k").error
    assert stored == "401: bad key ***; also ***"
    for path in tmp_path.iterdir():  # nowhere on disk: database, write-ahead log, lock file
        assert b"gem-secret-value-123" not in path.read_bytes()


def test_batched_and_one_by_one_recording_store_the_same(tmp_path):
    # Small batches bind parameters, larger ones go through Arrow: both paths must store alike.
    # How fast each path is: benchmarks/bench_store.py.
    batch = [record(f"b{i}", tokens=i) for i in range(256)]
    single = [record(f"s{i}", tokens=i) for i in range(10)]
    with RunStore.open(tmp_path) as store:
        store.record_calls(batch)
        for rec in single:
            store.record_calls([rec])
        assert store.counts()["oracle_calls"] == 266
        by_batch = store.get_calls(r.key for r in batch[:10])
        one_by_one = store.get_calls(r.key for r in single)

    def stored(rec):
        return {k: v for k, v in rec.__dict__.items() if k not in ("key", "created_at", "updated_at")}

    assert [stored(r) for r in by_batch.values()] == [stored(r) for r in one_by_one.values()] == [stored(r) for r in single]


# --- the writer's key filter: never hides a stored call, spares DuckDB the calls never made ----------


def test_key_filter_finds_every_stored_call_and_skips_the_store_for_new_ones(tmp_path, monkeypatch):
    from crome.builder.store.work import import_calls
    from crome.schemas.hashing import Bloom, stable_hash

    req = request()
    resp = OracleResponse(status="ok", parsed=Counterfactual(rewrite="r", change="c"))
    keys = [stable_hash(i) for i in range(300)]
    with RunStore.open(tmp_path / "a") as a:  # a shard's store, imported below in SQL (as a merge does)
        a.record_calls([CallRecord.from_response(k, req, resp, "rules", "rules") for k in keys[200:]])
    with RunStore.open(tmp_path / "b") as store:
        store.record_calls([CallRecord.from_response(k, req, resp, "rules", "rules") for k in [*keys[:100], "k-not-a-hash"]])
        queries = []
        real = store._query
        monkeypatch.setattr(store, "_query", lambda sql, params=None: queries.append(sql) or real(sql, params))
        assert store.get_calls(keys[100:200]) == {}
        assert queries == []  # calls never made: answered by the filter, not by DuckDB
        assert set(store.get_calls([*keys[:150], "k-not-a-hash"])) == {*keys[:100], "k-not-a-hash"}
        import_calls(store, tmp_path / "a" / "crome.duckdb")
        assert set(store.get_calls(keys)) == {*keys[:100], *keys[200:]}  # the import's keys, seen after it
        # Past its capacity the filter is rebuilt from the table, larger: still no stored key hidden.
        store._call_keys, store._call_keys_n = Bloom(1), 10**9
        store.record_calls([CallRecord.from_response(k, req, resp, "rules", "rules") for k in keys[100:110]])
        assert store._call_keys is None
        assert set(store.get_calls(keys)) == {*keys[:110], *keys[200:]}
        assert store._call_keys is not None and store._call_keys.capacity >= 1 << 20


def test_bloom_bulk_add_sets_the_same_bits_and_has_no_false_negatives():
    from crome.schemas.hashing import Bloom, stable_hash

    keys = [stable_hash(i) for i in range(5000)] + ["k1", "plain text key", "x:y"]
    one, bulk = Bloom(5000), Bloom(5000)
    for k in keys:
        one.add(k)
    bulk.add_many(keys)
    assert (one._array == bulk._array).all()
    assert all(k in bulk for k in keys)
    others = [stable_hash(-i) for i in range(1, 5001)]
    assert sum(k in bulk for k in others) < 150  # ~1% at capacity


def test_calls_sharing_a_k64_stay_apart(tmp_path, monkeypatch):
    """Lookups and replacements go by `k64`, then the key: two keys with one k64 never mix."""
    import crome.builder.store.calls as calls_mod
    import crome.builder.store.call_table as call_table_mod

    monkeypatch.setattr(calls_mod, "key_k64", lambda key: 7)
    monkeypatch.setattr(call_table_mod, "key_k64", lambda key: 7)
    with RunStore.open(tmp_path) as store:
        store.record_calls([record("a", rewrite="A1"), record("b", rewrite="B1")])
        store.record_calls([record("a", rewrite="A2")])
        got = store.get_calls(["a", "b", "c"])
        assert {k: r.parsed["rewrite"] for k, r in got.items()} == {"a": "A2", "b": "B1"}
        assert store._query("SELECT key, count(*) FROM oracle_calls GROUP BY key ORDER BY key") == [("a", 1), ("b", 1)]
