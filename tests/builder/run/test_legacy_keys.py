"""A run directory written before cache keys left out unread context replays with no new request.

`tests/data/legacy_keys/run` was built by crome at commit ceafd9e (see make_fixture.py there) with
the OpenAI oracle against the fake server: its keys hash the whole request context (donors and
all), and pairs that shared an answer sent the same rewrite several times under several keys.
Opening it migrates the store (m003, m004): each call is re-filed under the key of what the
provider saw, duplicates collapse to one, and the usage it recorded stays in the spend. Only what
today's checks refuse is asked again (its verdicts are incomplete by issue 13's rule).
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from crome.builder.oracles import get_oracle
from crome.builder.run.config import BuildConfig
from crome.builder.run.pipeline import build
from crome.builder.run.status import run_status
from crome.builder.store import RunStore
from crome.cli import app
from fake_llm_server import FakeLLMServer
from helpers_runs import iter_calls
from test_build_llm import responder

FIXTURE = Path(__file__).resolve().parents[2] / "data" / "legacy_keys"
SPEC = "openai:gpt-4o-mini"


def legacy_run(tmp_path: Path) -> tuple[Path, Path]:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE / "run", run)
    with gzip.open(run / "crome.duckdb.gz", "rb") as f, open(run / "crome.duckdb", "wb") as g:
        shutil.copyfileobj(f, g)
    (run / "crome.duckdb.gz").unlink()
    src = tmp_path / "source.jsonl"
    shutil.copy(FIXTURE / "source.jsonl", src)
    return run, src


def test_a_run_made_with_the_old_keys_resends_only_what_todays_checks_refuse(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-legacy")
    run, src = legacy_run(tmp_path)
    old_rows = {r["id"]: r for r in pq.read_table(run / "data" / "train-00000-of-00001.parquet").to_pylist()}
    with FakeLLMServer(responder=responder) as server:
        oracle = get_oracle(SPEC, base_url=server.openai_url)
        s = build(BuildConfig(source=str(src), out=str(run), oracle=SPEC), oracle=oracle).summary
    assert s["status"] == "complete"
    # The old store kept 117 calls (of the 164 requests it sent; the others overwrote one another
    # and their cost is lost to it). Rewrites and verdicts asked with other donors collapse.
    with RunStore.open(run, read_only=True) as store:
        records = list(iter_calls(store))
    old_sent = [e for r in records for e in r.sent if e.get("backfilled")]
    assert len(old_sent) == 117
    # Keys decide caching: no rubric, rating or rewrite is asked again. The fixture's verdicts named
    # one of the two other rubrics (as the tests' responder did then); a verdict must name every
    # one of them now (issue 13), so those stored verdicts are no answers and only they are sent again.
    resent = [r for r in records if any(not e.get("backfilled") for e in r.sent)]
    assert server.count() == s["oracle_calls"]["new"] == len(resent) > 0 and {r.task for r in resent} == {"verify"}
    assert s["spend"]["requests"] == 117 + server.count() and s["spend"]["kept"]["calls"] == len(records) < 117
    assert s["spend"]["cost_usd"] > s["spend"]["kept"]["cost_usd"] > 0  # the collapsed duplicates were billed
    # The same verdicts ("as intended"), complete now: every original and causal row is the one the old build wrote
    # (the IQN ties are drawn another way since issue 13).
    new_rows = {r["id"]: r for r in pq.read_table(run / "data" / "train-00000-of-00001.parquet").to_pylist()}
    assert {i for i, r in new_rows.items() if r["kind"] != "neutral"} == {i for i, r in old_rows.items() if r["kind"] != "neutral"}


def test_crome_status_reads_a_migrated_legacy_run(tmp_path):
    run, _ = legacy_run(tmp_path)
    RunStore.open(run).close()  # a build (or any write) migrates it; status only reads
    report = run_status(run)
    assert report["spend"]["requests"] == 117 and report["spend"]["cost_usd"] > 0
    result = CliRunner().invoke(app, ["status", str(run)])
    assert result.exit_code == 0 and "117 requests sent" in result.output and "kept" in result.output
