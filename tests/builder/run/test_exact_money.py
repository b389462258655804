"""Exact money: billed attempts add up to what the server reported, identical calls in flight share one request,
a store that cannot write stops the run naming what it lost, and internal errors count as failures."""

from __future__ import annotations

import asyncio
import logging

import duckdb
import pytest
from typer.testing import CliRunner

from crome.builder.oracles import get_oracle
from crome.builder.oracles.llm.pricing import estimate_cost
from crome.builder.run.config import BuildConfig
from crome.builder.run.generate import CachedGenerate
from crome.builder.run.pipeline import build
from crome.builder.stages.causal import CausalStage
from crome.builder.store import RunStore
from crome.cli import app
from crome.prompts import load_template
from crome.schemas import Counterfactual
from crome.schemas.calls import Attempt, OracleResponse
from fake_llm_server import FakeLLMServer, seeded_faults
from helpers_runs import iter_calls
from money_helpers import provider_key, sent_again_after_an_answer, usage_returned
from test_build import write_pairs
from test_build_llm import responder

SPEC = {"openai": "openai:gpt-4o-mini", "gemini": "gemini:gemini-2.0-flash"}
# Faults whose requests the client sees answered (or refused) with usage, or rejected before any work.
BILLED_FAULTS = ("rate_limit", "server_error", "malformed_json", "schema_invalid", "refusal", "truncated")


def oracle(provider: str, server: FakeLLMServer, **kw):
    url = server.openai_url if provider == "openai" else server.url
    return get_oracle(SPEC[provider], base_url=url, timeout=30, backoff_base=0.001, backoff_max=0.01, **kw)


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_spend_is_the_usage_the_server_returned_retries_and_reasks_included(tmp_path, monkeypatch, provider):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-money")
    monkeypatch.setenv("GEMINI_API_KEY", "test-money")
    src = write_pairs(tmp_path / "pairs.jsonl", n=24)
    with FakeLLMServer(responder=responder, faults=seeded_faults(0.2, seed=3, kinds=BILLED_FAULTS), retry_after="0.01") as server:
        s = build(BuildConfig(source=str(src), out=str(tmp_path / "run"), oracle=SPEC[provider], max_failures=1000),
                  oracle=oracle(provider, server)).summary
    assert s["status"] == "complete"
    outcomes = server.outcomes()
    assert outcomes["schema_invalid"] + outcomes["malformed_json"] > 0 and outcomes["rate_limit"] + outcomes["server_error"] > 0
    tokens_in, tokens_out = usage_returned(server.requests)
    money = s["spend"]
    # Every request the server saw is billed once, with exactly the usage it reported...
    assert money["requests"] == s["oracle_calls"]["requests"] == server.count()
    assert (money["input_tokens"], money["output_tokens"]) == (s["tokens"]["input"], s["tokens"]["output"]) == (tokens_in, tokens_out)
    assert money["unanswered_requests"] == outcomes["rate_limit"] + outcomes["server_error"]
    # ...priced to the cent (summed per request, as a provider's invoice does, or at once: the same).
    expected = estimate_cost(SPEC[provider].split(":")[1], tokens_in, tokens_out)
    assert round(money["cost_usd"], 2) == round(expected, 2) and money["cost_usd"] == pytest.approx(expected, abs=1e-6)
    assert round(s["cost_usd"], 2) == round(expected, 2)
    # The kept answers (their re-asks included) cost at most the bill; failed calls are billed, not kept.
    assert 0 < money["kept"]["cost_usd"] <= money["cost_usd"]
    assert money["kept"]["calls"] == s["oracle_calls"]["store"]["total"] - s["oracle_calls"]["store"]["failed"]
    if provider == "openai":  # the dataset card states both figures
        from crome.builder.hub.publish import publish

        publish(tmp_path / "run", str(tmp_path / "published"))
        card = (tmp_path / "published" / "README.md").read_text()
        assert f"| {money['cost_usd']:.4f} | {money['kept']['cost_usd']:.4f} |" in card and "Billed: every request sent" in card


class SlowEcho:
    """An in-process oracle that answers after a pause, so that identical requests meet in flight."""

    provider = "scripted"
    model = "slow"
    from crome.builder.oracles.base import Capabilities as _C

    capabilities = _C()

    def __init__(self) -> None:
        self.sent: list[str] = []

    @property
    def name(self) -> str:
        return "scripted:slow"

    async def agenerate(self, request):
        self.sent.append(request.messages[-1]["content"])
        await asyncio.sleep(0.05)
        return OracleResponse(status="ok", parsed=Counterfactual(rewrite="r", change="c"), input_tokens=10, output_tokens=5,
                              sent=[Attempt("invalid", 4, 2), Attempt("ok", 6, 3)])

    async def aclose(self) -> None:
        return None


def test_identical_requests_in_flight_share_one_call_and_unread_context_shares_the_key(tmp_path):
    template = load_template("degrade@v1")
    variables = {"prompt": "Q?", "answer": "A long answer.", "rubric": {"name": "factuality", "definition": "d"}, "other_rubrics": []}
    oracle = SlowEcho()

    async def main(store):
        generate = CachedGenerate(store, oracle)
        # Five pairs ask for the same rewrite, each with its own donor and seed (which this oracle never reads).
        same = [template.request(context={"donor": f"donor {i}", "seed": i}, **variables) for i in range(5)]
        other = template.request(context={}, **{**variables, "answer": "Another answer."})
        responses = await asyncio.gather(*(generate(r) for r in [*same, other]))
        generate.flush()
        return generate, responses

    with RunStore.open(tmp_path) as store:
        generate, responses = asyncio.run(main(store))
        assert [r.status for r in responses] == ["ok"] * 6
        assert len(oracle.sent) == 2  # one call for the five, one for the other
        assert (generate.stats.new, generate.stats.shared, generate.stats.cached) == (2, 4, 4)
        assert (generate.stats.requests, generate.stats.input_tokens) == (4, 20)  # both attempts of both calls billed
        sent = [e for rec in iter_calls(store) for e in rec.sent]
        assert sorted((e["outcome"], e["input_tokens"]) for e in sent) == [("invalid", 4), ("invalid", 4), ("ok", 6), ("ok", 6)]
        assert store.counts()["oracle_calls"] == 2
        # The record holds what its key holds: no donor or seed of whichever pair happened to ask first.
        assert [rec.request["context"] for rec in iter_calls(store)] == [{}, {}]


def test_a_store_that_cannot_write_stops_the_run_and_names_every_answered_call_it_lost(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-store")
    src = write_pairs(tmp_path / "pairs.jsonl", n=16)
    out = tmp_path / "run"
    real = RunStore.record_calls
    writes = {"n": 0}

    def failing(self, records, **kw):
        writes["n"] += 1
        if writes["n"] > 6:  # the disk fills up mid-run, for good
            raise duckdb.IOException("injected: no space left on device")
        return real(self, records, **kw)

    monkeypatch.setattr(RunStore, "record_calls", failing)
    with FakeLLMServer(responder=responder, latency=0.02) as server:
        result = CliRunner().invoke(app, ["build", str(src), "--out", str(out), "--oracle", SPEC["openai"], "--base-url", server.openai_url,
                                          "--concurrency", "8", "--quiet"])
    monkeypatch.setattr(RunStore, "record_calls", real)
    assert result.exit_code == 1, result.output
    text = "".join(result.output.split())  # keys may be wrapped across lines
    assert "couldnotrecordoraclecalls" in text and "injected" in text
    answered = {provider_key(r) for r in server.requests if r.answered}
    with RunStore.open(out, read_only=True) as store:
        stored = set(store.get_calls(answered))
    lost = answered - stored
    assert stored and lost  # it failed mid-run: some answers were stored, some were not...
    assert all(key in text for key in lost)  # ...and every one that was not is named
    # It stopped sending: far fewer requests than the 16 pairs need.
    assert server.count() < 16 * 5


def test_a_store_write_that_fails_once_is_retried_and_nothing_is_lost(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-store")
    src = write_pairs(tmp_path / "pairs.jsonl", n=6)
    real = RunStore.record_calls
    writes = {"n": 0}

    def flaky(self, records, **kw):
        writes["n"] += 1
        if writes["n"] == 3:
            raise duckdb.IOException("injected: a transient I/O error")
        return real(self, records, **kw)

    monkeypatch.setattr(RunStore, "record_calls", flaky)
    with FakeLLMServer(responder=responder) as server:
        s = build(BuildConfig(source=str(src), out=str(tmp_path / "run"), oracle=SPEC["openai"]), oracle=oracle("openai", server)).summary
    assert s["status"] == "complete" and s["spend"]["requests"] == server.count()
    with RunStore.open(tmp_path / "run", read_only=True) as store:
        assert set(store.get_calls({provider_key(r) for r in server.requests})) == {provider_key(r) for r in server.requests}


def test_a_budget_stop_records_every_answer_and_sends_nothing_after(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-budget")
    import crome.builder.run.estimate as estimate_mod

    # The estimate would stop this build before its first call; the stop under test is the one during the calls.
    real = estimate_mod.estimate
    monkeypatch.setattr(estimate_mod, "estimate", lambda *a, **kw: {**real(*a, **kw), "cost_usd": 0.0, "over_budget": False})
    src = write_pairs(tmp_path / "pairs.jsonl", n=30)
    with FakeLLMServer(responder=responder, latency=0.02) as server:
        s = build(BuildConfig(source=str(src), out=str(tmp_path / "run"), oracle=SPEC["openai"], max_cost=0.002),
                  oracle=oracle("openai", server, concurrency=8)).summary
    assert s["status"] == "stopped: max_cost" and s["counts"]["pending"] > 0
    answered = {provider_key(r) for r in server.requests if r.answered}
    with RunStore.open(tmp_path / "run", read_only=True) as store:
        assert set(store.get_calls(answered)) == answered  # the calls of stopped pairs' siblings too
    assert s["spend"]["requests"] == server.count() and s["spend"]["cost_usd"] <= 0.002


def broken_causal(monkeypatch):
    async def boom(self, ctx):
        raise KeyError("a template variable nobody passes")

    monkeypatch.setattr(CausalStage, "__call__", boom)


def test_a_run_whose_every_pair_fails_internally_exits_non_zero_with_the_traceback(tmp_path, monkeypatch, caplog):
    broken_causal(monkeypatch)
    src = write_pairs(tmp_path / "pairs.jsonl", n=6)
    caplog.set_level(logging.WARNING)
    result = CliRunner().invoke(app, ["build", str(src), "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 1, result.output
    import json

    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["status"] == "stopped: internal_errors" and s["counts"]["internal_errors"] == 6
    assert "KeyError" in s["first_internal_error"]
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "a template variable nobody passes" in caplog.text  # the first, in full


def test_internal_errors_past_max_failures_stop_the_run(tmp_path, monkeypatch):
    broken_causal(monkeypatch)
    src = write_pairs(tmp_path / "pairs.jsonl", n=200)
    s = build(BuildConfig(source=str(src), out=str(tmp_path / "run"), max_failures=3)).summary
    assert s["status"] == "stopped: internal_errors"
    assert 3 < s["counts"]["internal_errors"] < 200 and s["counts"]["pending"] > 0 and s["accounting"]["balanced"]
