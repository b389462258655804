"""The run store on a real database file: durability, sources, artifacts, meta, rows, rejections."""

from __future__ import annotations

import signal

import pytest
from helpers_runs import get_call, iter_sources
from store_helpers import (
    iter_rejections, query, record, replace_quarantined, replace_rejections, replace_rows, replace_sources, row, run_child,
    stored_rows,
)

from crome.builder.store import STORE_FILE, RunStore
from crome.schemas.messages import user
from crome.schemas.oracle import Rubric, Rubrics
from crome.schemas.rows import Rejection
from crome.schemas.source import Quarantined, SourcePair


# --- durability -------------------------------------------------------------------------------


def test_calls_survive_a_killed_process(tmp_path):
    child = run_child(
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
        assert get_call(store, "k3-49").parsed == {"rewrite": "r3", "change": "c"}
        assert get_call(store, "k0-0").replayable
        assert store.get_artifacts("rubrics", ["p0"]) == {"p0": {"rubrics": ["factuality"]}}


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
        assert replace_sources(store, pairs) == 6
        replace_quarantined(store, quarantined)
        assert list(iter_sources(store)) == pairs  # all kept, in the order given
        assert list(store.iter_quarantined()) == quarantined
        # A build stores its sources again: they replace the previous ones.
        replace_sources(store, [SourcePair.make([user("q0 fixed")], "g", "b", row=0)])
        assert [p.prompt_text for p in iter_sources(store)] == ["q0 fixed"]
        assert store.counts()["source_pairs"] == 1


def test_iterating_while_writing(tmp_path):
    with RunStore.open(tmp_path) as store:
        replace_sources(store, [SourcePair.make([user(f"q{i}")], "g", f"b{i}", row=i) for i in range(2500)])
        seen = 0
        for pair in iter_sources(store):
            if pair.row % 500 == 0:
                store.record_calls([record(f"call-{pair.row}")])
            seen += 1
        assert seen == 2500 and store.counts()["oracle_calls"] == 5


def test_artifacts_and_meta(tmp_path):
    rubrics = Rubrics(rubrics=[Rubric(name=n, definition=f"{n} for this prompt") for n in ("factuality", "completeness", "safety")])
    with RunStore.open(tmp_path) as store:
        store.put_artifact("rubrics", "prompt-b", rubrics)
        store.put_artifacts("rubrics", {"prompt-a": {"rubrics": []}, "prompt-c": [1, 2]})
        store.put_artifact("batch_job", "job-1", {"state": "running"})
        store.put_artifact("batch_job", "job-1", {"state": "done"})
        assert Rubrics.model_validate(store.get_artifacts("rubrics", ["prompt-b"])["prompt-b"]) == rubrics
        assert [k for k, _ in store.iter_artifacts("rubrics")] == ["prompt-a", "prompt-b", "prompt-c"]
        assert list(store.iter_artifacts("batch_job")) == [("job-1", {"state": "done"})]
        assert store.get_artifacts("rubrics", ["nope", "prompt-a"]) == {"prompt-a": {"rubrics": []}}  # missing keys absent
        store.delete_artifacts("rubrics", ["prompt-c"])
        assert store.get_artifacts("rubrics", ["prompt-c"]) == {}
        assert [k for k, _ in store.iter_artifacts("rubrics")] == ["prompt-a", "prompt-b"]  # only that one deleted
        store.set_meta("seed", 7)
        store.set_meta("seed", 8)
        store.set_meta("options", {"causal": ["degrade", "upgrade"], "verify": False})
        assert store.get_meta("seed") == 8 and store.get_meta("options")["causal"] == ["degrade", "upgrade"]
        assert store.get_meta("absent") is None


def test_rows_and_rejections_are_replaced_each_build(tmp_path):
    first = [row(1), row(2, "causal"), row(3, "neutral")]
    rejections = [
        Rejection(source_id="row:7", stage="source", reason="identical_answers", detail="row 7"),
        Rejection(source_id=first[0].source_id, stage="dedup", reason="duplicate", candidate_id="sha256:c",
                  duplicate_of=first[0].id, augmentation="degrade", attribute="factuality",
                  candidate={"prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}),
    ]
    # The store only writes rows: they are read back with SQL on the closed run.
    with RunStore.open(tmp_path) as store:
        assert replace_rows(store, first) == 3
        assert replace_rejections(store, rejections) == 2
        assert list(iter_rejections(store)) == rejections
    assert stored_rows(tmp_path) == first
    second = [row(9, "causal"), row(1)]
    with RunStore.open(tmp_path) as store:
        replace_rows(store, second)
        replace_rejections(store, rejections[1:])
        assert list(iter_rejections(store)) == rejections[1:]
    assert stored_rows(tmp_path) == second  # in the order given
    with RunStore.open(tmp_path) as store:
        with pytest.raises(ValueError, match=r"row 1 has the same id as row 0"):
            replace_rows(store, [row(5), row(5)])
    assert stored_rows(tmp_path) == second  # a refused replacement changes nothing
    with RunStore.open(tmp_path) as store:
        replace_rows(store, [])
        assert store.counts()["rows"] == 0


def test_rows_columns_are_queryable(tmp_path):
    # The columns audit queries filter on are real columns; the rest is the row's JSON.
    with RunStore.open(tmp_path) as store:
        replace_rows(store, [row(1), row(2, "causal")])
    got = query(tmp_path, "SELECT kind, augmentation, attribute, data->>'$.provenance.oracle' FROM rows ORDER BY ord")
    assert got == [("original", "original", None, "rules"), ("causal", "degrade", "factuality", "rules")]
