"""`crome build --batch` through the real openai and google-genai clients against a fake with the batch endpoints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crome.builder.run.batch import JOB_KIND
from crome.builder.run.config import BuildConfig
from crome.builder.oracles import get_oracle
from crome.builder.oracles.llm.pricing import estimate_cost
from crome.builder.run.pipeline import build
from crome.builder.store import RunStore
from crome.cli import app
from fake_batch_server import FakeBatchServer
from helpers_runs import get_call, iter_calls
from test_build import write_pairs
from test_build_llm import responder

SPEC = {"openai": "openai:gpt-4o-mini", "gemini": "gemini:gemini-2.0-flash"}
N_PAIRS = 12
N_FAULT = 6


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch):
    # The fake takes any key; a local base URL needs none. Nothing may reach a real provider.
    for env in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(env, raising=False)


def url(provider: str, server: FakeBatchServer) -> str:
    return server.openai_url if provider == "openai" else server.url


def run(src: Path, out: Path, provider: str, server: FakeBatchServer, **kw):
    oracle = get_oracle(SPEC[provider], base_url=url(provider, server), timeout=5)
    return build(BuildConfig(source=str(src), out=str(out), oracle=SPEC[provider], **kw), oracle=oracle)


def outputs(run_dir: Path) -> dict[str, bytes]:
    files = sorted((run_dir / "data").glob("*.parquet")) + [run_dir / "rejections.parquet"]
    return {p.name: p.read_bytes() for p in files}


def batch_until_done(src: Path, out: Path, provider: str, server: FakeBatchServer, max_passes: int = 10) -> list[dict]:
    """Re-run the same batch build until it completes; the summary of every pass."""
    summaries = []
    for _ in range(max_passes):
        result = run(src, out, provider, server, batch=True)
        summaries.append(result.summary)
        if result.stopped is None:
            return summaries
        assert result.stopped == "batch_pending"
    raise AssertionError(f"not complete after {max_passes} passes")


def jobs(out: Path) -> list[dict]:
    with RunStore.open(out, read_only=True) as store:
        return sorted((v for _, v in store.iter_artifacts(JOB_KIND)), key=lambda j: j["seq"])


_ONLINE: dict[tuple[str, int], tuple[dict[str, bytes], dict]] = {}


def online_reference(tmp_path: Path, n: int, provider: str) -> tuple[dict[str, bytes], dict]:
    """The online build of write_pairs(n) against the same fake: what every batch build must equal (built once per module)."""
    if (provider, n) not in _ONLINE:
        src = write_pairs(tmp_path / "online_pairs.jsonl", n=n)
        with FakeBatchServer(responder=responder) as online:
            s = run(src, tmp_path / "online", provider, online).summary
            assert s["status"] == "complete"
        _ONLINE[provider, n] = outputs(tmp_path / "online"), s
    return _ONLINE[provider, n]


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_batch_build_passes_stage_by_stage_and_equals_the_online_build(tmp_path, provider):
    src = write_pairs(tmp_path / "pairs.jsonl", n=N_PAIRS)
    expected, online = online_reference(tmp_path, N_PAIRS, provider)

    out = tmp_path / "batch"
    with FakeBatchServer(responder=responder) as server:
        passes = batch_until_done(src, out, provider, server)
        # One job per pass, each holding the calls the pass reached: rubrics, ratings, rewrites, verdicts.
        assert [p["batch"]["submitted_now"] != [] for p in passes] == [True, True, True, True, False]
        tasks = [set(j["tasks"]) for j in jobs(out)]
        assert tasks == [{"rubrics"}, {"rate"}, {"degrade", "upgrade"}, {"verify"}]
        assert [sum(j["tasks"].values()) for j in jobs(out)] == [N_PAIRS, 2 * N_PAIRS, 4 * N_PAIRS, 4 * N_PAIRS]
        assert all(p["counts"]["pending"] == N_PAIRS and p["accounting"]["balanced"] for p in passes[:-1])
        assert len(server.created()) == 4 and server.count() == online["oracle_calls"]["new"]  # each call answered once
        if provider == "openai":
            job = server.created()[0]
            assert server.files[job.input_file_id]["filename"].startswith("crome-")
            assert job.metadata["crome_intent"].startswith("sha256:")
            assert {item["custom_id"] for item in job.items} == set(jobs(out)[0]["keys"])
        else:
            assert server.created()[0].display_name.startswith("crome-")

    final = passes[-1]
    assert final["status"] == "complete" and final["counts"]["pending"] == 0 and final["accounting"]["balanced"]
    assert outputs(out) == expected  # the same rows and rejections, byte for byte
    assert final["counts"] == online["counts"]
    # Same tokens at half the price: the batch cost is what estimate_cost(batch=True) gives.
    with RunStore.open(out, read_only=True) as store:
        calls = list(iter_calls(store))
    assert calls and all(c.batch_job_id for c in calls)
    tin, tout = sum(c.input_tokens for c in calls), sum(c.output_tokens for c in calls)
    assert (tin, tout) == (online["tokens"]["input"], online["tokens"]["output"])
    model = SPEC[provider].split(":")[1]
    assert final["batch"]["cost_usd"] == pytest.approx(estimate_cost(model, tin, tout, batch=True), abs=1e-6)
    assert final["batch"]["cost_usd"] == pytest.approx(online["cost_usd"] / 2, rel=1e-3)


@pytest.mark.parametrize("provider, fault", [("openai", "partial"), ("gemini", "partial"), ("openai", "expire"), ("gemini", "expire")])
def test_failed_and_expired_items_alone_are_sent_again(tmp_path, provider, fault):
    src = write_pairs(tmp_path / "pairs.jsonl", n=N_FAULT)
    expected, _ = online_reference(tmp_path, N_FAULT, provider)
    out = tmp_path / "batch"
    with FakeBatchServer(responder=responder, job_plan=[fault]) as server:
        run(src, out, provider, server, batch=True)
        s = run(src, out, provider, server, batch=True).summary
        first, second = jobs(out)[:2]
        lost = {k for k, c in [(k, store_call(out, k)) for k in first["keys"]] if c.status == "error"}
        if fault == "partial":  # every third item failed at the provider
            assert len(lost) == N_FAULT // 3 and first["counts"]["failed"] == len(lost) and first["counts"]["missing"] == 0
        else:  # the job expired half way: the rest never ran (OpenAI lists them in the error file, Gemini leaves them out)
            assert len(lost) == N_FAULT // 2 and first["counts"]["failed"] + first["counts"]["missing"] == len(lost)
            assert first["outcome"] == "expired" and all("expired" in store_call(out, k).error for k in lost)
        # The next job carries the lost rubric calls again and none of the answered ones.
        assert second["tasks"] == {"rate": 2 * (N_FAULT - len(lost)), "rubrics": len(lost)}
        assert set(second["keys"]) & set(first["keys"]) == lost
        assert s["counts"]["pending"] == N_FAULT and s["status"] == "stopped: batch_pending"
        passes = batch_until_done(src, out, provider, server)
    assert passes[-1]["status"] == "complete"
    assert outputs(out) == expected


def store_call(out: Path, key: str):
    with RunStore.open(out, read_only=True) as store:
        return get_call(store, key)


def test_invalid_batch_output_is_a_failure_sent_again_not_a_reask(tmp_path):
    src = write_pairs(tmp_path / "pairs.jsonl", n=4)
    out = tmp_path / "batch"
    with FakeBatchServer(responder=responder, faults=["schema_invalid"]) as server:
        run(src, out, "openai", server, batch=True)
        run(src, out, "openai", server, batch=True)
        first, second = jobs(out)[:2]
        invalid = [k for k in first["keys"] if store_call(out, k).status == "invalid"]
        assert len(invalid) == 1 and "no re-ask" in store_call(out, invalid[0]).error
        assert first["counts"] == {"items": 4, "ok": 3, "failed": 1, "missing": 0, "final": 0}
        assert invalid[0] in second["keys"]
        assert batch_until_done(src, out, "openai", server)[-1]["status"] == "complete"
        assert store_call(out, invalid[0]).status == "ok" and store_call(out, invalid[0]).attempts == 2


def test_an_item_failing_every_batch_attempt_ends_as_a_rejection(tmp_path):
    src = write_pairs(tmp_path / "pairs.jsonl", n=3)
    out = tmp_path / "batch"

    def refuse_case_1(record):  # the rubric call of one pair never validates
        if (record.schema or {}).get("title") == "Rubrics" and "(case 1)" in record.first_user_text:
            return {"rubrics": []}
        return responder(record)

    with FakeBatchServer(responder=refuse_case_1) as server:
        s = batch_until_done(src, out, "openai", server)[-1]
    assert s["status"] == "complete" and s["accounting"]["balanced"]
    assert s["counts"]["rejections_by_stage"]["rubrics"] == {"oracle_invalid": 1}
    rubric_jobs = [j for j in jobs(out) if "rubrics" in j["tasks"]]
    assert [j["tasks"]["rubrics"] for j in rubric_jobs] == [3, 1, 1]  # three batch attempts, then it stands


def test_rerun_while_a_job_is_in_flight_submits_nothing(tmp_path):
    src = write_pairs(tmp_path / "pairs.jsonl", n=4)
    out = tmp_path / "batch"
    with FakeBatchServer(responder=responder, polls_to_finish=1) as server:
        run(src, out, "openai", server, batch=True)
        r = run(src, out, "openai", server, batch=True)  # the job is still running
        assert r.stopped == "batch_pending" and r.summary["batch"]["submitted_now"] == []
        assert r.summary["batch"]["waiting"] == 4 and len(server.created()) == 1
        assert [j["state"] for j in jobs(out)] == ["submitted"] and jobs(out)[0]["provider_state"] == "in_progress"
        run(src, out, "openai", server, batch=True)  # now it has finished: collected, next job out
        assert len(server.created()) == 2 and [j["state"] for j in jobs(out)] == ["ingested", "submitted"]


# The crash adoption must survive: the process dies right after the provider created a job, before
# the job id is recorded. The CLI runs with the backend's submit wrapped to exit there.
EXIT_AFTER_SUBMIT_CODE = 86
CRASH_AFTER_SUBMIT = f"""
import os, sys
from crome.builder.oracles.llm.openai import OpenAIBatch
submit = OpenAIBatch.submit
def submit_then_die(self, items, intent):
    submit(self, items, intent)
    os._exit({EXIT_AFTER_SUBMIT_CODE})
OpenAIBatch.submit = submit_then_die
from crome.cli import app
app(args=sys.argv[1:], prog_name="crome")
"""


def test_process_killed_right_after_submit_rerun_adopts_the_job(tmp_path):
    src = write_pairs(tmp_path / "pairs.jsonl", n=4)
    out = tmp_path / "batch"
    with FakeBatchServer(responder=responder, polls_to_finish=1) as server:
        args = ["build", str(src), "--out", str(out), "--oracle", SPEC["openai"], "--base-url", server.openai_url, "--batch", "--quiet"]
        cmd = [sys.executable, "-c", CRASH_AFTER_SUBMIT, *args]
        p = subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, timeout=120)
        assert p.returncode == EXIT_AFTER_SUBMIT_CODE, p.stderr.decode()
        assert len(server.created()) == 1  # the provider has the job...
        (job,) = jobs(out)
        assert job["state"] == "submitting" and job["job_id"] is None  # ...the store only the intent

        r = run(src, out, "openai", server, batch=True)
        assert len(server.created()) == 1  # adopted, not submitted again
        (job,) = jobs(out)
        assert job["adopted"] and job["job_id"] == server.created()[0].id and job["state"] == "submitted"
        assert r.stopped == "batch_pending" and r.summary["batch"]["submitted_now"] == []
        passes = batch_until_done(src, out, "openai", server)
        assert passes[-1]["status"] == "complete"
        # every rubric request reached the responder once
        assert sum(1 for r in server.requests if (r.schema or {}).get("title") == "Rubrics") == 4


def test_a_submit_that_never_reached_the_provider_is_sent_once_on_the_next_pass(tmp_path, monkeypatch):
    from crome.builder.oracles.llm.openai import OpenAIBatch

    src = write_pairs(tmp_path / "pairs.jsonl", n=4)
    out = tmp_path / "batch"
    with FakeBatchServer(responder=responder) as server:
        def down(self, items, intent):
            raise ConnectionError("network unreachable")

        with monkeypatch.context() as m:
            m.setattr(OpenAIBatch, "submit", down)
            r = run(src, out, "openai", server, batch=True)
        assert r.stopped == "batch_pending" and "network unreachable" in r.summary["batch"]["errors"][0]
        assert [j["state"] for j in jobs(out)] == ["submitting"] and not server.created()
        run(src, out, "openai", server, batch=True)  # looks for the job, finds none, sends it
        assert [j["state"] for j in jobs(out)] == ["abandoned", "submitted"]
        assert jobs(out)[0]["keys"] == jobs(out)[1]["keys"] and len(server.created()) == 1


def test_cli_batch_exit_code_status_and_wait(tmp_path):
    src = write_pairs(tmp_path / "pairs.jsonl", n=4)
    out = tmp_path / "batch"
    runner = CliRunner()
    with FakeBatchServer(responder=responder, polls_to_finish=1) as server:
        base = ["build", str(src), "--out", str(out), "--oracle", SPEC["openai"], "--base-url", server.openai_url, "--batch"]
        r = runner.invoke(app, base)
        assert r.exit_code == 5, r.output
        assert "batch job(s) in flight" in r.output and "crome status" in r.output

        r = runner.invoke(app, ["status", str(out), "--json"])
        assert r.exit_code == 0, r.output
        report = json.loads(r.output)
        assert report["batch_mode"] and report["status"] == "stopped: batch_pending"
        (job,) = report["batch"]["jobs"]
        assert job["state"] == "submitted" and job["items"] == 4 and job["tasks"] == {"rubrics": 4} and job["estimated_cost_usd"] > 0
        assert report["batch"]["in_flight"] == {"jobs": 1, "items": 4, "estimated_cost_usd": pytest.approx(job["estimated_cost_usd"], abs=1e-6)}

        r = runner.invoke(app, [*base, "--wait", "--poll-interval", "0.01"])
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["status", str(out), "--json"])
    report = json.loads(r.output)
    assert report["status"] == "complete" and report["batch"]["in_flight"]["jobs"] == 0
    assert report["spend"]["batch_calls"] == report["calls"]["total"] > 0
    assert report["spend"]["cost_usd"] == pytest.approx(report["batch"]["cost_usd"]) and report["spend"]["online_cost_usd"] == 0
    r = runner.invoke(app, ["status", str(out)])
    assert r.exit_code == 0 and "batch jobs" in r.output and "complete" in r.output


def test_an_online_rerun_does_not_duplicate_requests_in_flight(tmp_path):
    src = write_pairs(tmp_path / "pairs.jsonl", n=2)
    out = tmp_path / "batch"
    with FakeBatchServer(responder=responder) as server:
        run(src, out, "openai", server, batch=True)
        with pytest.raises(ValueError, match="1 batch job.* in flight with 2 requests: re-run with --batch"):
            run(src, out, "openai", server)
        assert server.count() == 0  # nothing was sent online
        batch_until_done(src, out, "openai", server)  # all collected: an online run may go on, and replays everything
        assert run(src, out, "openai", server).summary["oracle_calls"]["new"] == 0


def test_batch_needs_an_llm_oracle(tmp_path):
    src = write_pairs(tmp_path / "pairs.jsonl", n=2)
    r = CliRunner().invoke(app, ["build", str(src), "--out", str(tmp_path / "run"), "--batch"])
    assert r.exit_code == 2 and "nothing to batch" in r.output
    r = CliRunner().invoke(app, ["status", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and "nowhere does not exist" in r.output


def test_batch_pairs_that_share_answers_put_each_request_in_one_job_line(tmp_path):
    """Single flight in batch mode: the pairs of a prompt share rate and rewrite requests (one line each), and
    collecting the answers sends nothing more; the result equals the online build."""
    src = tmp_path / "shared.jsonl"
    shutil.copy(Path(__file__).resolve().parents[2] / "data" / "legacy_keys" / "source.jsonl", src)  # 4 x 2 x 2 pairs, shared answers
    with FakeBatchServer(responder=responder) as server:
        batch_until_done(src, tmp_path / "batch", "openai", server)
        lines = [json.dumps(item["body"], sort_keys=True) for job in server.created() for item in job.items]
        assert server.count() == len(lines)  # every request answered once, inside a job
        with FakeBatchServer(responder=responder) as online:
            run(src, tmp_path / "online", "openai", online)
    assert len(lines) == len(set(lines)) > 0
    assert outputs(tmp_path / "batch") == outputs(tmp_path / "online")


def test_a_job_submitted_under_the_old_keys_is_collected_under_the_new_ones(tmp_path):
    """Upgrading crome while a job is in flight: its items (custom_id = the old key, which hashed the whole
    context) land under today's keys, the next pass does not send them again, and the build completes."""
    from crome.builder.run.batch import REQUEST_KIND, rebuild_request
    from crome.schemas.calls import output_schema
    from crome.schemas.hashing import stable_hash

    src = write_pairs(tmp_path / "pairs.jsonl", n=4)
    expected, _ = online_reference(tmp_path, 4, "openai")
    out = tmp_path / "batch"
    with FakeBatchServer(responder=responder, polls_to_finish=1) as server:
        assert run(src, out, "openai", server, batch=True).stopped == "batch_pending"
        # What a crome before key_version 2 would have recorded and sent for the same job.
        with RunStore.open(out) as store:
            (job,) = [v for _, v in store.iter_artifacts(JOB_KIND)]
            stored = store.get_artifacts(REQUEST_KIND, job["keys"])
            old = {}
            for key, value in stored.items():
                r = rebuild_request(value)
                old[key] = stable_hash({"provider": "openai", "model": "gpt-4o-mini", "messages": list(r.messages),
                                        "settings": {"temperature": r.temperature, "max_output_tokens": r.max_output_tokens},
                                        "schema": output_schema(r.output_model), "context": r.context})
            assert all(old[k] != k for k in old)
            store.delete_artifacts(REQUEST_KIND, list(stored))
            store.put_artifacts(REQUEST_KIND, {old[k]: v for k, v in stored.items()})
            job["keys"] = [old[k] for k in job["keys"]]
            del job["key_version"]
            store.put_artifact(JOB_KIND, job["intent"], job)
        for item in server.created()[0].items:
            item["custom_id"] = old[item["custom_id"]]
        passes = batch_until_done(src, out, "openai", server)
        lines = [json.dumps(item["body"], sort_keys=True) for j in server.created() for item in j.items]
    assert len(lines) == len(set(lines))  # the old job's requests were not sent again
    assert passes[-1]["status"] == "complete" and outputs(out) == expected
