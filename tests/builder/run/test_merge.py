"""`crome build --shard i/N` then `crome merge`: the same dataset as one unsharded build, cross-shard dedup included."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from crome.builder.run.config import BuildConfig
from crome.builder.run.merge import MergeError, merge
from crome.builder.oracles import get_oracle
from crome.builder.run.pipeline import build, in_shard
from crome.builder.store import RunStore
from crome.cli import app
from crome.schemas import Message, SourcePair
from fake_llm_server import FakeLLMServer
from helpers_runs import rewrite_export
from test_build import write_pairs
from test_build_llm import responder


def outputs(run_dir: Path) -> dict[str, bytes]:
    files = sorted((run_dir / "data").glob("*.parquet")) + [run_dir / "rejections.parquet"]
    return {p.name: p.read_bytes() for p in files}


def source_with_cross_shard_duplicate(tmp_path: Path, n: int, shards: int) -> Path:
    """write_pairs(n) plus a copy of pair 0 that differs only by end punctuation and falls in another shard."""
    src = write_pairs(tmp_path / "pairs.jsonl", n=n)
    rows = [json.loads(line) for line in src.read_text().splitlines()]
    first = rows[0]
    home = SourcePair.make([Message(role="user", content=first["prompt"])], first["chosen"], first["rejected"], row=0).source_id
    for end in ("!", "?", "!!", "...", "?!", "!?"):
        copy = {**first, "rejected": first["rejected"] + end}
        sid = SourcePair.make([Message(role="user", content=copy["prompt"])], copy["chosen"], copy["rejected"], row=0).source_id
        if not any(in_shard(home, (i, shards)) and in_shard(sid, (i, shards)) for i in range(shards)):
            break
    else:
        raise AssertionError("no variant falls in another shard")
    src.write_text("\n".join(json.dumps(r) for r in [*rows[:-1], copy, rows[-1]]) + "\n")
    return src


def test_merged_shards_equal_the_unsharded_build(tmp_path):
    src = source_with_cross_shard_duplicate(tmp_path, n=12, shards=3)
    whole = build(BuildConfig(source=str(src), out=str(tmp_path / "whole"))).summary
    shard_dirs = [tmp_path / f"shard{i}" for i in range(3)]
    shard_summaries = [build(BuildConfig(source=str(src), out=str(d), shard=(i, 3))).summary for i, d in enumerate(shard_dirs)]

    result = CliRunner().invoke(app, ["merge", *map(str, reversed(shard_dirs)), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    assert outputs(tmp_path / "merged") == outputs(tmp_path / "whole")  # byte for byte

    merged = json.loads((tmp_path / "merged" / "summary.json").read_text())
    assert merged["status"] == "complete" and merged["counts"] == whole["counts"] and merged["accounting"]["balanced"]
    assert merged["oracle_calls"]["new"] == 0  # every call came from a shard's cache
    assert merged["options"] == whole["options"] and merged["options"]["shard"] is None
    # The shards' counts add up to the whole; only cross-shard duplicates make their rows more.
    totals = merged["shards"]["totals"]
    assert merged["shards"]["count"] == 3
    assert totals["source_pairs"] == whole["counts"]["source_pairs"] == sum(s["counts"]["source_pairs"] for s in shard_summaries)
    assert totals["quarantined"] == whole["counts"]["quarantined"] == 1
    assert totals["rows"] == sum(s["counts"]["rows"] for s in shard_summaries) > merged["counts"]["rows"]
    stores = []
    for d in shard_dirs:
        with RunStore.open(d, read_only=True) as store:
            stores.append(store.call_stats()["total"])
    assert totals["calls"] == sum(stores)
    # a duplicate of a row from another shard is caught in the merge, as in the unsharded build
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "merged" / "data" / "train-00000-of-00001.parquet").to_pylist()}
    shard_of = lambda sid: next(i for i in range(3) if in_shard(sid, (i, 3)))  # noqa: E731
    dups = [r for r in pq.read_table(tmp_path / "merged" / "rejections.parquet").to_pylist() if r["stage"] == "dedup"]
    assert any(shard_of(r["source_id"]) != shard_of(rows[r["duplicate_of"]]["source_id"]) for r in dups)
    assert sum(s["counts"]["rejections_by_stage"].get("dedup", {}).get("exact_duplicate", 0) for s in shard_summaries) < len(dups)


def test_merge_of_llm_shards_needs_no_key_and_replays_their_failures(tmp_path, monkeypatch):
    for env in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(env, raising=False)

    def invalid_for_case_3(record):  # one rubric call never validates: a recorded failure in its shard
        if (record.schema or {}).get("title") == "Rubrics" and "(case 3)" in record.first_user_text:
            return {"rubrics": []}
        return responder(record)

    src = write_pairs(tmp_path / "pairs.jsonl", n=8)
    spec = "openai:gpt-4o-mini"
    with FakeLLMServer(responder=invalid_for_case_3) as server:
        def run(out: Path, shard=None) -> dict:
            oracle = get_oracle(spec, base_url=server.openai_url, timeout=5, backoff_base=0.001)
            return build(BuildConfig(source=str(src), out=str(out), oracle=spec, shard=shard), oracle=oracle).summary

        whole = run(tmp_path / "whole")
        shards = [run(tmp_path / f"s{i}", (i, 2)) for i in range(2)]
    assert whole["counts"]["rejections_by_stage"]["rubrics"] == {"oracle_invalid": 1}

    result = merge([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged")  # the server is gone, no key is set
    assert outputs(tmp_path / "merged") == outputs(tmp_path / "whole")
    s = result.summary
    assert s["oracle"] == spec and s["cost_usd"] == 0 and "replay_misses" not in s["shards"]
    assert s["oracle_calls"]["new"] == 1  # the failed call, replayed from its shard at no cost
    spent = [sh["spend"]["cost_usd"] for sh in s["shards"]["shards"]]
    assert all(c > 0 for c in spent) and s["shards"]["totals"]["cost_usd"] == pytest.approx(sum(spent), abs=1e-6)
    assert s["shards"]["totals"]["calls"] == sum(x["oracle_calls"]["store"]["total"] for x in shards)


def test_merge_refuses_what_is_not_one_complete_set_of_shards(tmp_path):
    src = write_pairs(tmp_path / "pairs.jsonl", n=4)
    for i in range(2):
        build(BuildConfig(source=str(src), out=str(tmp_path / f"s{i}"), shard=(i, 2)))
    build(BuildConfig(source=str(src), out=str(tmp_path / "other_seed"), shard=(1, 2), seed=7))
    build(BuildConfig(source=str(src), out=str(tmp_path / "whole")))
    s0, s1 = tmp_path / "s0", tmp_path / "s1"

    with pytest.raises(MergeError, match=r"shard\(s\) 1/2 missing"):
        merge([s0], tmp_path / "m")
    with pytest.raises(MergeError, match="given twice"):
        merge([s0, s0, s1], tmp_path / "m")
    with pytest.raises(MergeError, match="seed=7"):
        merge([s0, tmp_path / "other_seed"], tmp_path / "m")
    with pytest.raises(MergeError, match="not a shard"):
        merge([s0, tmp_path / "whole"], tmp_path / "m")
    with pytest.raises(MergeError, match="one of the shards"):
        merge([s0, s1], s1)

    moved = tmp_path / "elsewhere" / "pairs.jsonl"
    moved.parent.mkdir()
    shutil.move(src, moved)
    result = CliRunner().invoke(app, ["merge", str(s0), str(s1), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "cannot read the source" in result.output and "--source" in result.output
    assert merge([s0, s1], tmp_path / "m", source=str(moved)).summary["status"] == "complete"
    (tmp_path / "changed.jsonl").write_text(moved.read_text().replace("case 2", "case two"))
    with pytest.raises(MergeError, match="not the data the shards were built from"):
        merge([s0, s1], tmp_path / "m2", source=str(tmp_path / "changed.jsonl"))

    summary = json.loads((s1 / "summary.json").read_text())
    (s1 / "summary.json").write_text(json.dumps({**summary, "status": "stopped: max_cost"}))
    with pytest.raises(MergeError, match="summary.json changed after `crome build` wrote it"):
        merge([s0, s1], tmp_path / "m3")  # a hand-edited shard is not the export its build wrote
    rewrite_export(s1, {"summary.json": lambda p: p.write_text(json.dumps({**summary, "status": "stopped: max_cost"}))})
    with pytest.raises(MergeError, match="not complete"):
        merge([s0, s1], tmp_path / "m3")
