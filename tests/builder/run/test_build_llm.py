"""`crome build` with the real openai and google-genai clients against the local fake server, faults included."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from crome.builder.run.config import BuildConfig
from crome.builder.oracles import get_oracle
from crome.builder.run.pipeline import build
from crome.cli import app
from fake_llm_server import RETRIED, FakeLLMServer, expected_requests, seeded_faults
from llm_responder import RUBRICS, _between, other_rubrics, responder  # noqa: F401 - re-exported to the other build tests
from test_build import write_pairs

KEY = "sk-proj-PLANTEDsecretKEY0123456789abcdefXYZ"


@pytest.fixture
def server():
    # A "slow" answer comes 2 s after the client's 1 s timeout: an event loop stalled by a loaded
    # machine for less than that still times it out (at 0.5 s past, a stall let one through).
    with FakeLLMServer(responder=responder, slow_s=3.0, retry_after="0.01") as s:
        yield s


def oracle_for(provider: str, server: FakeLLMServer, concurrency: int = 16, **kw):
    url = server.openai_url if provider == "openai" else server.url
    model = "gpt-4o-mini" if provider == "openai" else "gemini-2.0-flash"
    return get_oracle(f"{provider}:{model}", base_url=url, concurrency=concurrency, timeout=1.0, backoff_base=0.001, backoff_max=0.01, **kw)


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_build_with_20_percent_faults_accounts_for_every_pair(tmp_path, server, monkeypatch, provider):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    plan = seeded_faults(0.2, seed=7)
    server.faults = plan
    src = write_pairs(tmp_path / "pairs.jsonl", n=200)
    out = tmp_path / "run"
    # Five re-asks, as in the oracle contract: with two, three invalid outputs in a row for one item
    # (about a one-in-three chance over ~1,900 items, depending on arrival order) exhausted a budget.
    oracle = oracle_for(provider, server, max_reasks=5)
    s = build(BuildConfig(source=str(src), out=str(out), oracle=f"{provider}:m", max_failures=1000), oracle=oracle).summary

    assert s["status"] == "complete" and s["accounting"]["balanced"]
    assert s["accounting"]["with_rows"] + s["accounting"]["only_rejections"] == 200
    calls = s["oracle_calls"]
    assert calls["new"] == calls["total"] - calls["cached"] > 1000
    # every request the server saw is a first try or a retry its fault plan explains: no storm, no repeats.
    # Each item sends one request per retried fault plus one final request, except an item whose
    # budget ran out: its last request was itself a retried fault ("invalid" or "error").
    exhausted = calls["by_status"].get("invalid", 0) + calls["by_status"].get("error", 0)
    retried = sum(r.fault in RETRIED for r in server.requests)
    assert server.count() == calls["new"] - exhausted + retried
    if not exhausted:
        assert server.count() == expected_requests(plan, calls["new"])
    ok_per_item = {}
    for r in server.requests:
        if r.outcome == "ok":
            key = (json.dumps(r.messages[:2]), r.schema.get("title") if r.schema else None)
            ok_per_item[key] = ok_per_item.get(key, 0) + 1
    assert max(ok_per_item.values()) == 1  # no successful call made twice
    # final faults are recorded as what they are
    statuses = calls["by_status"]
    assert statuses.get("refused", 0) + statuses.get("blocked", 0) + statuses.get("truncated", 0) > 0
    rows = pq.read_table(out / "data" / "train-00000-of-00001.parquet").to_pylist()
    assert {r["augmentation"] for r in rows} >= {"original", "degrade", "upgrade", "irrelevant_query"}
    assert all(r["provenance"]["oracle"] == oracle_for(provider, server).name for r in rows if r["kind"] == "causal")
    assert s["tokens"]["input"] > 0 and s["cost_usd"] > 0
    # a first run spent what the store holds (both figures are rounded to the micro-dollar, so one unit apart at most)
    assert s["spend"]["cost_usd"] == pytest.approx(s["cost_usd"], abs=1.01e-6)

    # the same command again: everything replays, the server sees nothing new
    before = server.count()
    s2 = build(BuildConfig(source=str(src), out=str(out), oracle=f"{provider}:m", max_failures=1000), oracle=oracle_for(provider, server)).summary
    assert server.count() - before == sum(1 for r in server.requests[before:])  # (bookkeeping)
    failed_before = s["oracle_calls"]["by_status"].get("error", 0) + s["oracle_calls"]["by_status"].get("invalid", 0)
    assert s2["oracle_calls"]["new"] == failed_before  # only the failures are tried again
    # the dataset's price is still all it ever cost, though this run spent (almost) nothing
    assert s2["spend"]["cost_usd"] >= s["spend"]["cost_usd"] > s2["cost_usd"]


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_cli_build_keeps_the_key_out_of_every_output(tmp_path, server, monkeypatch, caplog, provider):
    import logging

    caplog.set_level(logging.DEBUG)
    env_name = "OPENAI_API_KEY" if provider == "openai" else "GEMINI_API_KEY"
    monkeypatch.setenv(env_name, KEY)
    server.faults = ["server_error", None, "refusal", None, "schema_invalid"]
    src = write_pairs(tmp_path / "pairs.jsonl", n=6)
    out = tmp_path / "run"
    url = server.openai_url if provider == "openai" else server.url
    model = "gpt-4o-mini" if provider == "openai" else "gemini-2.0-flash"
    result = CliRunner().invoke(app, ["-v", "build", str(src), "--out", str(out), "--oracle", f"{provider}:{model}", "--base-url", url, "--timeout", "2"])
    assert result.exit_code == 0, result.output
    assert KEY in server.credentials()  # the key was really sent to the server...
    assert KEY not in result.output and KEY not in caplog.text  # ...and is nowhere we print, log or write
    assert caplog.records  # (debug logging was on)
    for path in out.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    summary = json.loads((out / "summary.json").read_text())
    assert summary["oracle"] == f"{provider}:{model}" and summary["options"]["base_url"] == "set"
    assert summary["oracle_calls"]["by_status"].get("refused", 0) + summary["oracle_calls"]["by_status"].get("blocked", 0) >= 1


def test_bad_key_stops_the_build_at_the_first_call(tmp_path, server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server.mode = "auth_error"
    src = write_pairs(tmp_path / "pairs.jsonl", n=20)
    result = CliRunner().invoke(app, ["build", str(src), "--out", str(tmp_path / "run"), "--oracle", "openai:gpt-4o-mini", "--base-url", server.openai_url])
    assert result.exit_code == 3
    assert "oracle error" in result.output and KEY not in result.output
    assert server.count() <= 16  # the calls already in flight at most, then it stops


def test_max_cost_stops_before_the_budget_and_resumes(tmp_path, server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    src = write_pairs(tmp_path / "pairs.jsonl", n=30)
    out = tmp_path / "run"
    cfg = dict(source=str(src), out=str(out), oracle="openai:gpt-4o-mini")
    # The estimate passes the cap: the build stops before its first call.
    stopped = build(BuildConfig(**cfg, max_cost=0.002), oracle=oracle_for("openai", server, concurrency=4))
    assert stopped.stopped == "estimate_over_budget" and stopped.summary["over_budget"] and server.count() == 0
    assert stopped.summary["cost_usd"] > 0.002 and len(stopped.summary["top_pairs"]) == 5

    # An estimate can be low (output lengths are guesses): the calls themselves still stop at the cap.
    import crome.builder.run.estimate as estimate_mod

    real = estimate_mod.estimate
    monkeypatch.setattr(estimate_mod, "estimate", lambda *a, **kw: {**real(*a, **kw), "cost_usd": 0.0, "over_budget": False})
    s = build(BuildConfig(**cfg, max_cost=0.002), oracle=oracle_for("openai", server, concurrency=4)).summary
    assert s["status"] == "stopped: max_cost" and s["cost_usd"] <= 0.002 and s["counts"]["pending"] > 0
    assert s["accounting"]["balanced"]
    spent = server.count()
    s2 = build(BuildConfig(**cfg), oracle=oracle_for("openai", server)).summary
    assert s2["status"] == "complete" and s2["oracle_calls"]["cached"] >= spent


def test_dry_run_estimates_without_calling(tmp_path, server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    src = write_pairs(tmp_path / "pairs.jsonl", n=10)
    result = CliRunner().invoke(app, ["build", str(src), "--out", str(tmp_path / "run"), "--oracle", "openai:gpt-4o-mini", "--base-url", server.openai_url, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert server.count() == 0
    assert "dry run" in result.output and "rubrics" in result.output and "$" in result.output
