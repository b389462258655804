"""Ctrl-C (or SIGTERM) in the middle of a paid build: the calls in flight are awaited and recorded, the process
exits 130, and the resumed build sends none of the answered requests again and equals an uninterrupted one.

The build runs as a real `crome build` process against the fake OpenAI-compatible server in this
process (answering after 0.2 s, so calls are in flight when the signal lands); the server's
request log is the bill.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crome.builder.oracles import get_oracle
from crome.builder.run.config import BuildConfig
from crome.builder.run.pipeline import build
from crome.builder.run.progress import read_progress
from crome.builder.store import RunStore
from fake_llm_server import FakeLLMServer
from money_helpers import provider_key, sent_again_after_an_answer
from test_build import write_pairs
from test_build_llm import responder

pytestmark = pytest.mark.slow
SPEC = "openai:gpt-4o-mini"
N = 40


def outputs(run: Path) -> dict[str, bytes]:
    files = sorted((run / "data").glob("*.parquet")) + [run / "rejections.parquet"]
    return {p.name: p.read_bytes() for p in files}


def crome_build(src: Path, out: Path, server: FakeLLMServer) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "crome", "build", str(src), "--out", str(out), "--oracle", SPEC, "--base-url", server.openai_url,
           "--concurrency", "16", "--timeout", "30", "--quiet"]
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-interrupt", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)


def wait_until(condition, p: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert p.poll() is None, f"the build ended first: {p.stderr.read()}"
        assert time.monotonic() < deadline, "never reached"
        time.sleep(0.01)


_REFERENCE: dict[int, dict[str, bytes]] = {}


def uninterrupted(tmp_path: Path, src: Path, server: FakeLLMServer) -> dict[str, bytes]:
    """The outputs of the same build never interrupted (built once per module; the server log is reset after)."""
    if N not in _REFERENCE:
        oracle = get_oracle(SPEC, base_url=server.openai_url, concurrency=16, timeout=30)
        assert build(BuildConfig(source=str(src), out=str(tmp_path / "ref"), oracle=SPEC), oracle=oracle).summary["status"] == "complete"
        _REFERENCE[N] = outputs(tmp_path / "ref")
        server.reset()
    return _REFERENCE[N]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_records_calls_in_flight_and_the_resume_pays_for_none_again(tmp_path, monkeypatch, sig):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-interrupt")
    src = write_pairs(tmp_path / "pairs.jsonl", n=N)
    with FakeLLMServer(responder=responder, latency=0.2) as server:
        oracle = lambda: get_oracle(SPEC, base_url=server.openai_url, concurrency=16, timeout=30)  # noqa: E731
        expected = uninterrupted(tmp_path, src, server)

        run = tmp_path / "run"
        p = crome_build(src, run, server)
        wait_until(lambda: server.count() >= 60 and server.in_flight > 0, p)
        p.send_signal(sig)
        stderr = p.communicate(timeout=120)[1]
        assert p.returncode == 130, stderr
        assert "waiting up to" in stderr and "in flight" in stderr and "Re-run the same command to resume" in stderr
        assert not (run / "summary.json").exists()  # interrupted, not exported
        interrupted = list(server.requests)
        answered = {provider_key(r) for r in interrupted if r.answered}
        with RunStore.open(run, read_only=True) as store:
            assert set(store.get_calls(answered)) == answered  # everything answered before the exit is recorded
        assert len(interrupted) < 300  # it stopped sending: a whole build needs ~440 requests

        s = build(BuildConfig(source=str(src), out=str(run), oracle=SPEC), oracle=oracle()).summary
    assert s["status"] == "complete" and s["oracle_calls"]["cached"] >= len(answered)
    assert sent_again_after_an_answer(server.requests) == []
    assert outputs(run) == expected


def test_a_second_ctrl_c_exits_at_once(tmp_path):
    src = write_pairs(tmp_path / "pairs.jsonl", n=N)
    run = tmp_path / "run"
    with FakeLLMServer(responder=responder, latency=5.0) as server:
        p = crome_build(src, run, server)
        wait_until(lambda: server.in_flight >= 4, p)
        p.send_signal(signal.SIGINT)
        wait_until(lambda: str((read_progress(run) or {}).get("stage", "")).startswith("interrupted"), p)
        p.send_signal(signal.SIGINT)
        stderr = p.communicate(timeout=60)[1]
        still_in_flight = server.in_flight
    assert p.returncode == 130, stderr
    assert still_in_flight > 0  # it did not wait for the answers (5 s each) to come back
    assert "exited at once" in stderr
