"""The LLM's "does this phrase carry content" check, through the real openai client against the fake server.

A source with a planted opening phrase on 85% of chosen answers; the build asks the
`shortcut_content` template once for that phrase. What the oracle says decides whether the phrase
gets ties, and what it decided (or that it could not decide) is in rejections.parquet and in
summary.json: a phrase is neutralised only on an answer that says it carries no content.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from crome.builder.oracles import get_oracle
from crome.builder.run.config import BuildConfig
from crome.builder.run.pipeline import build
from fake_llm_server import FakeLLMServer, RequestRecord
from test_shortcut_neutral import CUE, rows_of, source

PHRASE = CUE.lower()
KEY = "sk-test-shortcut-content"


def is_check(record: RequestRecord) -> bool:
    return (record.schema or {}).get("title") == "PhraseContent"


def judge(carries: bool, reason: str):
    """A responder: the content check answers `carries` with `reason`; any other request gets the default answer."""
    return lambda record: {"carries_content": carries, "reason": reason} if is_check(record) else None


def run_build(tmp_path, server: FakeLLMServer, out: str = "run", **kw):
    oracle = get_oracle("openai:gpt-4o-mini", base_url=server.openai_url, timeout=2.0, backoff_base=0.001, backoff_max=0.01, **kw)
    cfg = BuildConfig(source=str(source(tmp_path)), out=str(tmp_path / out), oracle="openai:gpt-4o-mini", causal=[], neutral_ratio=0,
                      neutralize_shortcuts=True)
    return build(cfg, oracle=oracle).summary


def shortcut_rejections(run) -> list[dict]:
    return [r for r in pq.read_table(run / "rejections.parquet").to_pylist() if r["stage"] == "shortcut"]


def phrase_record(summary: dict) -> dict:
    (p,) = [p for p in summary["shortcuts"]["phrases"] if p["text"] == PHRASE]
    return p


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def test_a_phrase_the_oracle_says_carries_content_gets_no_ties_and_the_reason_is_recorded(tmp_path):
    reason = "It <b>answers</b> the user & sets the tone."
    with FakeLLMServer(responder=judge(True, reason)) as server:
        summary = run_build(tmp_path, server)
        checks = [r for r in server.requests if is_check(r)]
    # One check for the planted phrase, the phrase and answers that hold it in its text; nothing else was asked.
    assert len(checks) == 1 == server.count()
    text = checks[0].first_user_text
    assert f"<phrase>\n{CUE}\n</phrase>" in text and text.count("<answer>") == 3 and "at the start of many answers" in text
    run = tmp_path / "run"
    assert not [r for r in rows_of(run) if r.augmentation == "shortcut_neutral"]
    assert summary["shortcuts"]["ties"] == 0
    p = phrase_record(summary)
    assert p["status"] == "carries_content" and p["reason"] == f"oracle: {reason}"
    (rej,) = [r for r in shortcut_rejections(run) if r["attribute"] == PHRASE]
    assert rej["reason"] == "phrase_carries_content" and rej["augmentation"] == "shortcut_neutral"
    assert rej["detail"] == f"opening {PHRASE!r}: oracle: {reason}"
    assert summary["accounting"]["balanced"]
    assert json.loads((run / "summary.json").read_text())["shortcuts"] == summary["shortcuts"]
    assert summary["oracle_calls"]["by_task"] == {"shortcut_content": 1}


def test_a_phrase_the_oracle_says_is_dress_gets_ties_that_pass_the_contract_and_the_accounting(tmp_path):
    with FakeLLMServer(responder=judge(False, "A greeting; the answer says the same without it.")) as server:
        summary = run_build(tmp_path, server)
        assert sum(is_check(r) for r in server.requests) == 1
    run = tmp_path / "run"
    rows = rows_of(run)  # DatasetRow.model_validate: the data contract
    ties = [r for r in rows if r.augmentation == "shortcut_neutral"]
    assert ties and all(r.kind == "neutral" and r.preference == 0.5 and r.attribute == PHRASE for r in ties)
    for r in ties:  # they differ in the phrase alone
        a, b = r.chosen[0].content, r.rejected[0].content
        longer, shorter = (a, b) if len(a) > len(b) else (b, a)
        assert longer.startswith(CUE) and longer[len(CUE):].strip() == shorter.strip()
        assert r.provenance.shortcut.origin == "found" and r.provenance.oracle == "openai:gpt-4o-mini"
    p = phrase_record(summary)
    assert p["status"] == "used" and p["ties"] == len(ties) == summary["shortcuts"]["ties"]
    assert summary["counts"]["rows_by_augmentation"]["shortcut_neutral"] == len(ties)
    assert summary["accounting"]["balanced"]
    assert not [r for r in shortcut_rejections(run) if r["reason"] in ("phrase_carries_content", "phrase_check_failed")]


@pytest.mark.parametrize("failure", ["invalid_output", "refusal", "server_down"])
def test_a_check_that_fails_leaves_the_phrase_alone_records_why_and_does_not_stop_the_build(tmp_path, failure):
    def responder(record: RequestRecord):
        if is_check(record) and failure == "invalid_output":
            return {"carries_content": "perhaps", "why": "not the schema"}  # JSON that breaks the schema, every time
        return None

    with FakeLLMServer(responder=responder) as server:
        if failure == "refusal":
            server.faults = ["refusal"]
        elif failure == "server_down":
            server.faults = ["server_error"] * 50
        summary = run_build(tmp_path, server, max_reasks=1, max_transport_retries=2)
        sent = sum(is_check(r) for r in server.requests)
    status = {"invalid_output": "invalid", "refusal": "refused", "server_down": "error"}[failure]
    assert summary["status"] == "complete" and summary["accounting"]["balanced"]
    run = tmp_path / "run"
    assert not [r for r in rows_of(run) if r.augmentation == "shortcut_neutral"] and summary["shortcuts"]["ties"] == 0
    p = phrase_record(summary)
    assert p["status"] == "check_failed" and p["reason"].startswith(f"content check: {status} after")
    (rej,) = [r for r in shortcut_rejections(run) if r["attribute"] == PHRASE]
    assert rej["reason"] == "phrase_check_failed" and f"content check: {status} after" in rej["detail"]
    # One call, recorded as what it ended as: two requests (a re-ask), one (a refusal is final) or three (two retries).
    assert summary["oracle_calls"]["by_status"] == {status: 1}
    assert sent == {"invalid_output": 2, "refusal": 1, "server_down": 3}[failure]

    if failure == "invalid_output":
        # A failure is not a decision: the next build asks again, and a working oracle's "no content" neutralises the phrase.
        with FakeLLMServer(responder=judge(False, "filler")) as server:
            again = run_build(tmp_path, server)
            assert sum(is_check(r) for r in server.requests) == 1
        assert phrase_record(again)["status"] == "used" and again["shortcuts"]["ties"] > 0 and again["accounting"]["balanced"]


def test_a_check_stopped_by_the_budget_ends_the_build_as_a_stop_with_the_phrase_left_alone(tmp_path):
    # The check is this build's only call: --max-cost stops the run there, in the ordered phase (it used to escape as an exception).
    with FakeLLMServer(responder=judge(False, "filler")) as server:
        oracle = get_oracle("openai:gpt-4o-mini", base_url=server.openai_url, timeout=2.0)
        result = build(BuildConfig(source=str(source(tmp_path)), out=str(tmp_path / "run"), oracle="openai:gpt-4o-mini", causal=[],
                                   neutral_ratio=0, neutralize_shortcuts=True, max_cost=1e-7), oracle=oracle)
        assert server.count() == 0
    summary = result.summary
    assert result.stopped == "max_cost" and summary["accounting"]["balanced"] and summary["shortcuts"]["ties"] == 0
    p = phrase_record(summary)
    assert p["status"] == "check_failed" and "not answered in this run: BuildStopped" in p["reason"]
    assert [r["reason"] for r in shortcut_rejections(tmp_path / "run")] == ["phrase_check_failed"]


def test_in_batch_mode_the_check_waits_for_its_job_and_the_next_pass_neutralises(tmp_path):
    from fake_batch_server import FakeBatchServer

    src = source(tmp_path)
    with FakeBatchServer(responder=judge(False, "filler")) as server:
        def one_pass():
            oracle = get_oracle("openai:gpt-4o-mini", base_url=server.openai_url, timeout=5)
            return build(BuildConfig(source=str(src), out=str(tmp_path / "run"), oracle="openai:gpt-4o-mini", causal=[], neutral_ratio=0,
                                     neutralize_shortcuts=True, batch=True), oracle=oracle)

        first = one_pass()  # the check joins this pass's batch job: the pass ends pending, not with an exception
        assert first.stopped == "batch_pending" and first.summary["shortcuts"]["ties"] == 0
        assert "waits on a batch job" in phrase_record(first.summary)["reason"]
        second = one_pass()
    assert second.stopped is None and phrase_record(second.summary)["status"] == "used"
    assert second.summary["shortcuts"]["ties"] > 0 and second.summary["accounting"]["balanced"]


def test_a_rejected_key_at_the_check_still_ends_the_build_with_the_oracle_error(tmp_path):
    from crome.builder.oracles.base import SystematicOracleError

    with FakeLLMServer(responder=judge(False, "filler"), mode="auth_error") as server:
        with pytest.raises(SystematicOracleError, match="401"):
            run_build(tmp_path, server)
    assert not (tmp_path / "run" / "summary.json").exists()  # nothing exported as if the check had been made
