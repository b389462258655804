"""Verdicts are complete: every other rubric named exactly once, by its name, or the verdict is invalid output.

Through the real openai client against the local fake server (re-ask, then a recorded failure),
through a whole build (nothing passes on an incomplete verdict), a batch build (the requests rebuilt
from the store keep what they are checked against), and a replay of a verdict stored before the check.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter

import pytest
from pydantic import ValidationError

from crome.builder.oracles import get_oracle
from crome.builder.run.batch import rebuild_request, stored_request
from crome.builder.run.config import BuildConfig
from crome.builder.run.pipeline import build
from crome.prompts import load_template
from crome.schemas import Verdict
from crome.schemas.calls import OracleResponse
from fake_llm_server import FakeLLMServer, RequestRecord
from scripted_oracle import ScriptedOracle
from test_build import read_rejections, read_rows, write_pairs
from test_build_llm import other_rubrics, responder

OTHERS = ["relevance", "completeness"]
GOOD = [{"rubric": "relevance", "change": "same"}, {"rubric": "completeness", "change": "same"}]
# Each way a verdict can fail to cover the other rubrics, and the words the re-ask names it with.
DEFECTS = {
    "missing": ([{"rubric": "relevance", "change": "same"}], "missing completeness"),
    "extra": (GOOD + [{"rubric": "safety", "change": "same"}], "not asked about safety"),
    "duplicated": (GOOD + [{"rubric": "relevance", "change": "worse"}], "named more than once relevance"),
    "renamed": ([{"rubric": "Relevance", "change": "same"}, {"rubric": "completeness", "change": "same"}], "missing relevance"),
}


def verdict(others: list[dict], target: str = "worse") -> dict:
    return {"target": target, "others": others, "explanation": "compared"}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_a_verdict_that_does_not_cover_the_other_rubrics_is_invalid(defect):
    others, words = DEFECTS[defect]
    with pytest.raises(ValidationError, match=words):
        Verdict.model_validate(verdict(others), context={"other_rubrics": OTHERS})
    # Read without the request's list only the shape is known; passing still needs the list.
    v = Verdict.model_validate(verdict(others))
    assert words in v.coverage_problem(OTHERS) and not v.passes("degrade", OTHERS)


def test_a_complete_verdict_is_valid_in_any_order_and_empty_only_when_nothing_else_was_asked():
    v = Verdict.model_validate(verdict(GOOD[::-1]), context={"other_rubrics": OTHERS})
    assert v.coverage_problem(OTHERS) is None and v.passes("degrade", OTHERS) and not v.passes("upgrade", OTHERS)
    with pytest.raises(ValidationError, match="missing relevance, completeness"):
        Verdict.model_validate(verdict([]), context={"other_rubrics": OTHERS})
    assert Verdict.model_validate(verdict([]), context={"other_rubrics": []}).passes("degrade", [])


def verify_request():
    template = load_template("verify")
    rubric = {"name": "factuality", "definition": "facts are right"}
    others = [{"name": n, "definition": f"{n} of the answer"} for n in OTHERS]
    return template.request(
        prompt="What is the boiling point of water?", original="100 C at sea level.", rewrite="90 C at sea level.",
        rubric=rubric, other_rubrics=others, direction="degrade", validation={"other_rubrics": OTHERS},
    )


def ask(server: FakeLLMServer, request) -> OracleResponse:
    oracle = get_oracle("openai:gpt-4o-mini", base_url=server.openai_url, timeout=5, backoff_base=0.001, max_reasks=2)

    async def go():
        try:
            return await oracle.agenerate(request)
        finally:
            await oracle.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_the_openai_client_reasks_an_incomplete_verdict_with_what_is_wrong(defect, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    others, words = DEFECTS[defect]

    def judge(record: RequestRecord):
        corrected = any("could not be used" in text for role, text in record.messages if role == "user")
        return verdict(GOOD if corrected else others)

    with FakeLLMServer(responder=judge) as server:
        resp = ask(server, verify_request())
        assert resp.ok and resp.attempts == 2 and resp.parsed.coverage_problem(OTHERS) is None
        reask = server.requests[1].messages[-1][1]
        assert words in reask and "relevance, completeness" in reask


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_a_judge_that_never_completes_its_verdict_ends_as_a_recorded_failure(defect, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    others, words = DEFECTS[defect]
    with FakeLLMServer(responder=lambda record: verdict(others)) as server:
        resp = ask(server, verify_request())
        assert resp.status == "invalid" and resp.parsed is None and resp.attempts == 3  # the answer and two re-asks
        assert words in resp.error and server.count() == 3


def empty_verdicts(record: RequestRecord):
    """Every verdict says only the target moved and names no other rubric; the rest as a good oracle answers."""
    if (record.schema or {}).get("title") == "Verdict":
        return verdict([], target="worse" if "becomes worse" in record.first_user_text else "better")
    return responder(record)


def build_against(tmp_path, judge, name: str, n: int = 40, **kw):
    src = write_pairs(tmp_path / "pairs.jsonl", n=n)
    with FakeLLMServer(responder=judge) as server:
        oracle = get_oracle("openai:gpt-4o-mini", base_url=server.openai_url, timeout=5, backoff_base=0.001)
        cfg = BuildConfig(source=str(src), out=str(tmp_path / name), oracle="openai:gpt-4o-mini", max_failures=10_000, **kw)
        return build(cfg, oracle=oracle).summary


def test_a_server_whose_verdicts_name_no_other_rubric_gets_no_causal_row_verified(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    good = build_against(tmp_path, responder, "good")
    verified = [r for r in read_rows(tmp_path / "good") if "verified" in r["quality"]["checks"]]
    assert len(verified) == good["counts"]["rows_by_kind"]["causal"] > 0  # proper verdicts do pass

    s = build_against(tmp_path, empty_verdicts, "empty")
    rows = read_rows(tmp_path / "empty")
    assert [r for r in rows if r["kind"] == "causal" or "verified" in r["quality"]["checks"]] == []
    rejected = [r for r in read_rejections(tmp_path / "empty") if r["stage"] == "verify"]
    # Every rewrite that reached verification is a failure with the reason, not a pass.
    assert len(rejected) == s["oracle_calls"]["by_task"]["verify"] == good["oracle_calls"]["by_task"]["verify"]
    assert Counter(r["reason"] for r in rejected) == {"oracle_invalid": len(rejected)}
    assert all("missing relevance" in r["detail"] or "missing factuality" in r["detail"] for r in rejected)
    assert s["status"] == "complete" and s["accounting"]["balanced"]


def test_batch_requests_rebuilt_from_the_store_keep_what_their_verdict_is_checked_against():
    request = verify_request()
    rebuilt = rebuild_request(stored_request("k", request))
    assert rebuilt.validation == {"other_rubrics": OTHERS} and rebuilt.cache_key("p", "m", ()) == request.cache_key("p", "m", ())


def test_a_batch_build_whose_verdicts_name_no_other_rubric_verifies_nothing(tmp_path, monkeypatch):
    from fake_batch_server import FakeBatchServer

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    src = write_pairs(tmp_path / "pairs.jsonl", n=4)
    with FakeBatchServer(responder=empty_verdicts) as server:
        oracle = get_oracle("openai:gpt-4o-mini", base_url=server.openai_url, timeout=5)
        cfg = BuildConfig(source=str(src), out=str(tmp_path / "run"), oracle="openai:gpt-4o-mini", batch=True, batch_wait=True,
                          poll_interval=0.01, neutral_ratio=0)
        s = build(cfg, oracle=oracle, sleep=lambda _: None).summary
    assert s["status"] == "complete"
    assert [r for r in read_rows(tmp_path / "run") if r["kind"] == "causal"] == []
    rejected = [r for r in read_rejections(tmp_path / "run") if r["stage"] == "verify"]
    assert rejected and {r["reason"] for r in rejected} == {"oracle_invalid"}
    assert all(re.search(r"missing (relevance|factuality)", r["detail"]) for r in rejected)


def test_a_verdict_stored_before_the_check_is_asked_again_not_replayed(tmp_path):
    src = write_pairs(tmp_path / "pairs.jsonl", n=3)
    cfg = BuildConfig(source=str(src), out=str(tmp_path / "run"), causal=["degrade"], max_attributes=1, neutral_ratio=0)
    lax = ScriptedOracle(verify=lambda req: OracleResponse(status="ok", parsed=Verdict(**verdict([]))))
    build(cfg, oracle=lax)
    assert {r["reason"] for r in read_rejections(tmp_path / "run") if r["stage"] == "verify"} == {"verdict_incomplete"}

    judge = ScriptedOracle()
    s = build(cfg, oracle=judge).summary
    assert len(judge.calls("verify")) == 3 and s["counts"]["rows_by_kind"]["causal"] == 3
    assert all(set(other_rubrics(req.messages[-1]["content"])) == set(req.validation["other_rubrics"]) for req in judge.calls("verify"))
