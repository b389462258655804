"""The DuckDB run store, on a real database file: migrations, call cache, locking, durability."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone

import duckdb
import pytest

from crome.schemas.calls import OracleResponse
from crome.builder.store import (
    FINAL_STATUSES,
    MIGRATIONS,
    RETRY_STATUSES,
    STORE_FILE,
    CallRecord,
    RunInUseError,
    RunStore,
    RunStoreError,
)
from crome.prompts import load_template
from crome.schemas.messages import user
from crome.schemas.oracle import Counterfactual, Rubric, Rubrics
from crome.schemas.rows import DatasetRow, Provenance, Quality, Rejection
from crome.schemas.source import Quarantined, SourcePair

RUBRIC = {"name": "factuality", "definition": "States that Mars has two moons."}
OTHERS = [{"name": "completeness", "definition": "Names both moons."}]


def _request(answer: str = "Mars has two moons: Phobos and Deimos.", task_template: str = "degrade@v1"):
    return load_template(task_template).request(
        context={"side": "chosen"}, prompt="user: How many moons does Mars have?", answer=answer,
        rubric=RUBRIC, other_rubrics=OTHERS,
    )


def _record(key: str, status: str = "ok", *, rewrite: str = "Mars has three moons.", tokens: int = 10, task: str | None = None) -> CallRecord:
    req = _request()
    parsed = Counterfactual(rewrite=rewrite, change="wrong count") if status == "ok" else None
    resp = OracleResponse(
        status=status, parsed=parsed, raw=parsed.model_dump_json() if parsed else "", input_tokens=tokens,
        output_tokens=tokens // 2, latency_s=0.25, attempts=2 if status == "error" else 1,
        error=None if status == "ok" else f"{status} happened",
    )
    rec = CallRecord.from_response(key, req, resp, "gemini", "gemini-2.0-flash")
    if task:
        rec.task = task
    return rec


def _row(i: int, kind: str = "original") -> DatasetRow:
    return DatasetRow.make(
        prompt=[user(f"question {i}?")], chosen=f"good answer {i}", rejected=f"bad answer {i}",
        preference=0.5 if kind == "neutral" else 1.0, kind=kind,
        augmentation={"original": "original", "causal": "degrade", "neutral": "irrelevant_query"}[kind],
        attribute="factuality" if kind == "causal" else None, source_id=f"sha256:{i:064x}",
        provenance=Provenance(oracle="rules", template="degrade" if kind == "causal" else None, builder_version="0.1.0", seed=0),
        quality=Quality(checks=["edit_ratio"], edit_ratio=0.2) if kind == "causal" else None,
    )


def _run_child(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout)


# --- migrations -------------------------------------------------------------------------------


def test_migrations_apply_once_and_are_idempotent_on_reopen(tmp_path):
    with RunStore.open(tmp_path) as store:
        assert store.applied_migrations() == [m.__name__ for m in MIGRATIONS] == ["m001_initial", "m002_sources_in_order"]
        assert (tmp_path / STORE_FILE).exists()
    con = duckdb.connect(str(tmp_path / STORE_FILE), read_only=True)
    first = con.execute("SELECT name, applied_at FROM _migrations").fetchall()
    con.close()
    with RunStore.open(tmp_path) as store:
        assert store.applied_migrations() == ["m001_initial", "m002_sources_in_order"]
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
        assert store.applied_migrations() == ["m001_initial", "m002_sources_in_order", "m099_add_notes"]
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
        assert store.applied_migrations() == ["m001_initial", "m002_sources_in_order", "m099_broken"]


# --- call cache -------------------------------------------------------------------------------


def test_call_round_trip_with_parsed_output(tmp_path):
    req = _request()
    key = req.cache_key("gemini", "gemini-2.0-flash")
    parsed = Counterfactual(rewrite="Mars has three moons: Phobos and Deimos.", change="wrong count")
    resp = OracleResponse(status="ok", parsed=parsed, raw=parsed.model_dump_json(), input_tokens=812, output_tokens=40, latency_s=1.5)
    with RunStore.open(tmp_path) as store:
        store.record_calls([CallRecord.from_response(key, req, resp, "gemini", "gemini-2.0-flash")])
    with RunStore.open(tmp_path, read_only=True) as store:
        rec = store.get_call(key)
        assert store.get_call("sha256:missing") is None
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
        store.record_calls([_record("k1", "error"), _record("k2")])
        before = store.get_calls(["k1", "k2"])
        time.sleep(0.01)
        store.record_calls([_record("k1", "ok", rewrite="Mars has one moon.", tokens=30)])
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
        store.record_calls([_record(f"k-{s}", s) for s in statuses])
        calls = store.get_calls([f"k-{s}" for s in statuses])
        replayable = store.get_replayable([f"k-{s}" for s in statuses] + ["k-missing"])
    assert len(calls) == 7
    assert set(replayable) == {f"k-{s}" for s in ("ok", "refused", "blocked", "unsupported", "truncated")}
    assert not calls["k-error"].replayable and not calls["k-invalid"].replayable
    failed = calls["k-error"].to_response(Counterfactual)
    assert failed.status == "error" and failed.parsed is None and failed.error == "error happened" and failed.attempts == 2


def test_batch_record_and_lookup(tmp_path):
    records = [_record(f"sha256:{i:064x}", tokens=i) for i in range(300)]
    with RunStore.open(tmp_path) as store:
        store.record_calls(records)
        # A key repeated within one batch: the last record wins.
        store.record_calls([_record("dup", "error"), _record("dup", "ok", rewrite="last")])
        wanted = [f"sha256:{i:064x}" for i in (299, 0, 150)] + ["sha256:absent"]
        got = store.get_calls(wanted)
        assert list(got) == wanted[:3]  # in the order asked, missing keys absent
        assert [got[k].input_tokens for k in got] == [299, 0, 150]
        assert store.get_call("dup").parsed["rewrite"] == "last"
        assert len(store.get_calls(r.key for r in records)) == 300
        assert store.get_calls([]) == {}


def test_record_calls_is_one_transaction(tmp_path):
    with RunStore.open(tmp_path) as store:
        store.record_calls([_record("k1", rewrite="original")])
        bad = _record("k2")
        bad.request["context"] = {"unserialisable": object()}
        with pytest.raises(TypeError):
            store.record_calls([_record("k1", rewrite="replacement"), bad])
        assert store.get_call("k1").parsed["rewrite"] == "original"
        assert store.get_call("k2") is None
        store.record_calls([_record("k3")])  # the store is still usable
        assert store.counts()["oracle_calls"] == 2


def test_call_stats_by_status_and_task(tmp_path):
    with RunStore.open(tmp_path) as store:
        store.record_calls([_record("a", tokens=100, task="rubrics"), _record("b", tokens=10, task="rubrics"), _record("c", "error", tokens=4)])
        mark = datetime.now(timezone.utc)
        time.sleep(0.01)
        store.record_calls([_record("d", "invalid", tokens=6)])
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
    rec = _record("k")
    assert set(rec.request) == {"messages", "settings", "schema", "context"}
    with pytest.raises(ValueError, match="request field.*headers.*never headers or keys"):
        CallRecord(**{**rec.__dict__, "request": {**rec.request, "headers": {"Authorization": "Bearer x"}}})
    with pytest.raises(ValueError, match="unknown status 'pending'"):
        CallRecord(**{**rec.__dict__, "status": "pending"})


def test_keys_in_error_text_are_redacted(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "gem-secret-value-123")
    rec = _record("k", "error")
    rec = CallRecord(**{**rec.__dict__, "error": "401: bad key gem-secret-value-123; also sk-proj-abcdefghijklmnopqrstuvwx"})
    with RunStore.open(tmp_path) as store:
        store.record_calls([rec])
        stored = store.get_call("k").error
    assert stored == "401: bad key ***; also ***"
    for path in tmp_path.iterdir():  # nowhere on disk: database, write-ahead log, lock file
        assert b"gem-secret-value-123" not in path.read_bytes()


# --- locking ----------------------------------------------------------------------------------


def test_second_writer_process_gets_run_in_use_error(tmp_path):
    with RunStore.open(tmp_path) as store:
        store.set_meta("owner", "parent")
        child = _run_child(
            f"""
            from crome.builder.store import RunStore, RunInUseError
            for read_only in (False, True):
                try:
                    RunStore.open({str(tmp_path)!r}, read_only=read_only)
                except RunInUseError as e:
                    print("refused:", e)
            """
        )
        assert child.returncode == 0, child.stderr
        lines = child.stdout.strip().splitlines()
        assert len(lines) == 2
        for line in lines:
            assert f"refused: run {tmp_path} is in use by another process (pid {os.getpid()})" in line
        # The same process opening the run a second time is refused too, not silently shared.
        with pytest.raises(RunInUseError, match="already open in this process"):
            RunStore.open(tmp_path)
        assert store.get_meta("owner") == "parent"  # the holder is unaffected


def test_writer_in_child_blocks_us_until_it_exits_then_readers_share(tmp_path):
    code = f"""
        import sys
        from crome.builder.store import RunStore
        with RunStore.open({str(tmp_path)!r}) as store:
            store.set_meta("writer", "child")
            print("ready", flush=True)
            sys.stdin.read()
        """
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(RunInUseError, match=rf"in use by another process \(pid {child.pid}\)"):
            RunStore.open(tmp_path)
        with pytest.raises(RunInUseError, match=rf"pid {child.pid}"):
            RunStore.open(tmp_path, read_only=True)
    finally:
        child.stdin.close()
        assert child.wait(timeout=60) == 0
    # No writer: read-only opens work, several at once (here and in another process).
    with RunStore.open(tmp_path, read_only=True) as reader:
        assert reader.get_meta("writer") == "child"
        other = _run_child(
            f"""
            from crome.builder.store import RunStore
            with RunStore.open({str(tmp_path)!r}, read_only=True) as s:
                print(s.get_meta("writer"))
            """
        )
        assert other.returncode == 0 and other.stdout.strip() == "child", other.stderr
        with pytest.raises(RunStoreError, match="open read-only"):
            reader.set_meta("x", 1)


def test_read_only_open_of_a_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run store at .*crome.duckdb"):
        RunStore.open(tmp_path / "nope", read_only=True)
    assert not (tmp_path / "nope").exists()
    store = RunStore.open(tmp_path)
    store.close()
    store.close()  # closing twice is harmless
    with pytest.raises(RunStoreError, match="closed"):
        store.get_meta("x")


# --- durability -------------------------------------------------------------------------------


def test_calls_survive_a_killed_process(tmp_path):
    child = _run_child(
        f"""
        import os, signal
        from crome.builder.store import CallRecord, RunStore
        from crome.schemas.calls import OracleResponse
        from crome.prompts import load_template
        from crome.schemas.oracle import Counterfactual
        t = load_template("degrade@v1")
        store = RunStore.open({str(tmp_path)!r})
        for i in range(5):
            req = t.request(prompt=f"p{{i}}", answer="a", rubric={{"name": "factuality", "definition": "d"}}, other_rubrics=[])
            resp = OracleResponse(status="ok", parsed=Counterfactual(rewrite=f"r{{i}}", change="c"), input_tokens=i)
            recs = [CallRecord.from_response(f"k{{i}}-{{j}}", req, resp, "rules", "rules") for j in range(50)]
            store.record_calls(recs if i else recs[:1])
        store.put_artifact("rubrics", "p0", {{"rubrics": ["factuality"]}})
        print("recorded", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert child.stdout.strip() == "recorded"
    # Killed before close: the commits live in the write-ahead log, which the next open replays.
    assert (tmp_path / f"{STORE_FILE}.wal").exists()
    with RunStore.open(tmp_path, read_only=True) as store:
        assert store.counts()["oracle_calls"] == 1 + 4 * 50
    with RunStore.open(tmp_path) as store:  # the kill left no lock behind
        assert store.get_call("k3-49").parsed == {"rewrite": "r3", "change": "c"}
        assert store.get_call("k0-0").replayable
        assert store.get_artifact("rubrics", "p0") == {"rubrics": ["factuality"]}


# --- sources, artifacts, meta, rows, rejections -----------------------------------------------


def test_sources_and_quarantine_round_trip(tmp_path):
    pairs = [
        SourcePair.make([user(f"q{i} naïve café 🚀")], f"good {i}", f"bad {i}", row=i, subset="chat" if i % 2 else None, metadata={"score": i / 2})
        for i in (3, 0, 1)
    ]
    # One source row may give several pairs and several quarantines (RM-Bench: 3 x 3 style pairs).
    pairs += [SourcePair.make([user("rm")], f"chosen {j}", "rejected", row=7, subset="chat") for j in range(3)]
    quarantined = [Quarantined(row=2, reason="identical_answers", detail="row 2: chosen == rejected"),
                   Quarantined(row=7, reason="empty_field", detail="chosen[1] is empty"),
                   Quarantined(row=7, reason="empty_field", detail="chosen[2] is empty")]
    with RunStore.open(tmp_path) as store:
        assert store.replace_sources(pairs) == 6
        store.replace_quarantined(quarantined)
        assert list(store.iter_sources()) == pairs  # all kept, in the order given
        assert list(store.iter_quarantined()) == quarantined
        # A build stores its sources again: they replace the previous ones.
        store.replace_sources([SourcePair.make([user("q0 fixed")], "g", "b", row=0)])
        assert [p.prompt_text for p in store.iter_sources()] == ["q0 fixed"]
        assert store.counts()["source_pairs"] == 1


def test_iterating_while_writing(tmp_path):
    with RunStore.open(tmp_path) as store:
        store.replace_sources([SourcePair.make([user(f"q{i}")], "g", f"b{i}", row=i) for i in range(2500)])
        seen = 0
        for pair in store.iter_sources():
            if pair.row % 500 == 0:
                store.record_calls([_record(f"call-{pair.row}")])
            seen += 1
        assert seen == 2500 and store.counts()["oracle_calls"] == 5


def test_artifacts_and_meta(tmp_path):
    rubrics = Rubrics(rubrics=[Rubric(name=n, definition=f"{n} for this prompt") for n in ("factuality", "completeness", "safety")])
    with RunStore.open(tmp_path) as store:
        store.put_artifact("rubrics", "prompt-b", rubrics)
        store.put_artifacts("rubrics", {"prompt-a": {"rubrics": []}, "prompt-c": [1, 2]})
        store.put_artifact("batch_job", "job-1", {"state": "running"})
        store.put_artifact("batch_job", "job-1", {"state": "done"})
        assert Rubrics.model_validate(store.get_artifact("rubrics", "prompt-b")) == rubrics
        assert [k for k, _ in store.iter_artifacts("rubrics")] == ["prompt-a", "prompt-b", "prompt-c"]
        assert list(store.iter_artifacts("batch_job")) == [("job-1", {"state": "done"})]
        assert store.get_artifact("rubrics", "nope", default="dflt") == "dflt"
        store.delete_artifact("rubrics", "prompt-c")
        assert store.get_artifact("rubrics", "prompt-c") is None
        store.set_meta("seed", 7)
        store.set_meta("seed", 8)
        store.set_meta("options", {"causal": ["degrade", "upgrade"], "verify": False})
        assert store.get_meta("seed") == 8 and store.get_meta("options")["causal"] == ["degrade", "upgrade"]
        assert store.get_meta("absent") is None


def test_rows_and_rejections_are_replaced_each_build(tmp_path):
    first = [_row(1), _row(2, "causal"), _row(3, "neutral")]
    rejections = [
        Rejection(source_id="row:7", stage="source", reason="identical_answers", detail="row 7"),
        Rejection(source_id=first[0].source_id, stage="dedup", reason="duplicate", candidate_id="sha256:c",
                  duplicate_of=first[0].id, augmentation="degrade", attribute="factuality",
                  candidate={"prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}),
    ]
    with RunStore.open(tmp_path) as store:
        assert store.replace_rows(first) == 3
        assert store.replace_rejections(rejections) == 2
        assert list(store.iter_rows()) == first
        assert list(store.iter_rejections()) == rejections
        second = [_row(9, "causal"), _row(1)]
        store.replace_rows(second)
        store.replace_rejections(rejections[1:])
        assert list(store.iter_rows()) == second  # in the order given
        assert list(store.iter_rejections()) == rejections[1:]
        with pytest.raises(ValueError, match=r"row 1 has the same id as row 0"):
            store.replace_rows([_row(5), _row(5)])
        assert list(store.iter_rows()) == second  # a refused replacement changes nothing
        store.replace_rows([])
        assert store.counts()["rows"] == 0


def test_rows_columns_are_queryable(tmp_path):
    # The columns audit queries filter on are real columns; the rest is the row's JSON.
    with RunStore.open(tmp_path) as store:
        store.replace_rows([_row(1), _row(2, "causal")])
    con = duckdb.connect(str(tmp_path / STORE_FILE), read_only=True)
    got = con.execute("SELECT kind, augmentation, attribute, data->>'$.provenance.oracle' FROM rows ORDER BY ord").fetchall()
    con.close()
    assert got == [("original", "original", None, "rules"), ("causal", "degrade", "factuality", "rules")]


# --- throughput -------------------------------------------------------------------------------


def test_recording_throughput(tmp_path):
    """Generous floors (the targets are > 2,000/s batched and > 300/s one per transaction)."""
    batch = [_record(f"b{i}") for i in range(1024)]
    single = [_record(f"s{i}") for i in range(100)]
    with RunStore.open(tmp_path) as store:
        start = time.perf_counter()
        for i in range(0, 1024, 256):
            store.record_calls(batch[i : i + 256])
        batched = 1024 / (time.perf_counter() - start)
        start = time.perf_counter()
        for rec in single:
            store.record_calls([rec])
        one_by_one = 100 / (time.perf_counter() - start)
    print(f"record_calls: {batched:,.0f} calls/s in batches of 256, {one_by_one:,.0f} calls/s one per transaction")
    assert batched > 1000 and one_by_one > 100
