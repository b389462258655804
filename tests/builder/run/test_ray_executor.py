"""`crome build --executor ray --shards N` on a local Ray (`ray.init(num_cpus=2)`): the unsharded dataset, with a killed task retried.

Kept small for CI: one Ray start (the expensive part), 2 shards of 80 UltraFeedback pairs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crome.builder.run.config import BuildConfig
from crome.builder.run.executor import shard_dir
from crome.builder.run.pipeline import build
from crome.builder.run.progress import read_progress
from paths import SHARED_DATA

UF = SHARED_DATA / "ultrafeedback-binarized-sample" / "train_clean.jsonl"
PAIRS = 80
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not UF.exists(), reason="../shared/data not present")]
ray = pytest.importorskip("ray")


def outputs(run: Path) -> dict[str, bytes]:
    files = sorted((run / "data").glob("*.parquet")) + [run / "rejections.parquet"]
    return {p.name: p.read_bytes() for p in files}


# Imported at start-up by every Python process of the test's build (the CLI and the Ray workers, which
# inherit PYTHONPATH): the worker building shard 1 SIGKILLs itself once it has written its first batch of
# pairs, before its export, the first time only (the marker file says where and who). Written pairs have
# their calls committed; before that the rules oracle's answers may still wait in the writer's buffer. In-process, so it lands at the same point of the
# work on a fast or a loaded machine; polling the progress file from outside raced a fast build.
SITECUSTOMIZE = """
import os, signal
from pathlib import Path

target = os.environ.get("CROME_TEST_KILL_SHARD_DIR")
if target:
    from crome.builder.run import progress

    real_update = progress.ProgressFile.update

    def update(self, *, force=False, **fields):
        real_update(self, force=force, **fields)
        marker = Path(os.environ["CROME_TEST_KILL_MARKER"])
        if (self.path.parent.resolve() == Path(target) and self.state.get("stage") == "oracle stages"
                and self.state.get("pairs_written", 0) > 0 and not marker.exists()):
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)

    progress.ProgressFile.update = update
"""


def crome_ray(out: Path, kill_marker: Path | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "crome", "build", str(UF), "--out", str(out), "--limit", str(PAIRS), "--cross-prompt",
           "--executor", "ray", "--shards", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": "", "RAY_USAGE_STATS_ENABLED": "0"}
    if kill_marker is not None:
        site = kill_marker.parent / "site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env.update(PYTHONPATH=os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]),
                   CROME_TEST_KILL_SHARD_DIR=str(shard_dir(out.resolve(), 1, 2)), CROME_TEST_KILL_MARKER=str(kill_marker))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_ray_shards_with_a_killed_task_equal_the_unsharded_build_and_resume(tmp_path):
    whole = tmp_path / "whole"
    build(BuildConfig(source=str(UF), out=str(whole), limit=PAIRS, cross_prompt=True))

    run = tmp_path / "ray"
    marker = tmp_path / "killed.pid"
    p = crome_ray(run, kill_marker=marker)
    _, stderr = p.communicate(timeout=900)
    assert p.returncode == 0, stderr
    killed = int(marker.read_text())  # the worker of shard 1 was SIGKILLed mid-build
    assert outputs(run) == outputs(whole)  # byte for byte: the merge of the shards is the unsharded build
    # Ray ran shard 1 again in another worker; the retry resumed from the shard's store.
    shard1 = shard_dir(run.resolve(), 1, 2)
    assert read_progress(shard1)["pid"] != killed
    assert json.loads((shard1 / "summary.json").read_text())["oracle_calls"]["cached"] > 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["shards"]["count"] == 2
    assert "2 shards on Ray (0 already complete)" in stderr

    # Run again: both shards are complete, so nothing goes to Ray; only the merge runs, to the same files.
    again = crome_ray(run)
    _, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr
    assert "(2 already complete)" in stderr and outputs(run) == outputs(whole)
