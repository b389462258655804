"""A build killed with SIGKILL and re-run gives exactly the output of an uninterrupted build."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crome.builder.store import RunStore
from paths import SHARED_DATA

SHARED = SHARED_DATA
UF = SHARED / "ultrafeedback-binarized-sample" / "train_clean.jsonl"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not UF.exists(), reason="../shared/data not present")]


def crome_build(out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "crome", "build", str(UF), "--out", str(out), "--quiet", "--limit", "600", "--cross-prompt"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def outputs(run: Path) -> dict[str, bytes]:
    files = sorted((run / "data").glob("*.parquet")) + [run / "rejections.parquet"]
    return {p.name: p.read_bytes() for p in files}


def test_sigkill_at_any_point_then_resume_equals_uninterrupted(tmp_path):
    ref = tmp_path / "ref"
    t0 = time.monotonic()
    p = crome_build(ref)
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    elapsed = time.monotonic() - t0
    expected = outputs(ref)

    run = tmp_path / "killed"
    p = crome_build(run)
    time.sleep(elapsed * 0.5)
    assert p.poll() is None, "the build finished before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (run / "summary.json").exists()  # it really died mid-run
    with RunStore.open(run, read_only=True) as store:
        recorded = store.call_stats()["total"]
    assert recorded > 0  # and some paid work was already in the store

    # killed again early in the resumed run (it may already be done replaying: either is fine)
    p = crome_build(run)
    time.sleep(elapsed * 0.2)
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
    p.wait()

    p = crome_build(run)
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    assert outputs(run) == expected
    import json

    s = json.loads((run / "summary.json").read_text())
    assert s["oracle_calls"]["cached"] >= recorded  # nothing recorded before the kill was made again
    assert s["oracle_calls"]["new"] == s["oracle_calls"]["total"] - s["oracle_calls"]["cached"]
