"""The build pipeline end to end: contract, accounting, replay, stage decisions (rules and a scripted oracle)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from crome.builder.run.config import BuildConfig
from crome.schemas.calls import OracleResponse
from crome.builder.run.pipeline import build
from crome.builder.store import RunStore
from crome.schemas import ROW_COLUMNS, DatasetRow, arrow_schema
from helpers_runs import iter_sources
from scripted_oracle import ScriptedOracle
from paths import SHARED_DATA

SHARED = SHARED_DATA
UF = SHARED / "ultrafeedback-binarized-sample" / "train_clean.jsonl"
needs_shared = pytest.mark.skipif(not UF.exists(), reason="../shared/data not present")

TOPICS = [
    ("How do I bake sourdough bread at home?", "flour water starter salt oven loaf crust"),
    ("Explain how a bicycle gear system works.", "chain cassette derailleur sprocket pedal ratio"),
    ("What causes the seasons on Earth?", "axis tilt orbit sunlight hemisphere summer"),
    ("Give tips for a job interview in finance.", "resume questions market valuation handshake"),
    ("How do vaccines train the immune system?", "antigen antibody memory cells booster dose"),
    ("Describe the rules of chess castling.", "king rook squares check moved rank"),
    ("How can I reduce my home's energy bill?", "insulation thermostat LED appliances heating"),
    ("What is the history of the printing press?", "Gutenberg movable type 1450 Mainz books"),
]


def answer(words: str, good: bool, i: int) -> str:
    w = words.split()
    body = " ".join(f"The {w[j % len(w)]} matters because step {j + 1} depends on it." for j in range(8 if good else 3))
    return f"Great question number {i}!\n\n{body}\n\nI hope this helps."


def write_pairs(path: Path, n: int = 8, dup_first: bool = False) -> Path:
    rows = []
    for i in range(n):
        q, words = TOPICS[i % len(TOPICS)]
        rows.append({"prompt": f"{q} (case {i})", "chosen": answer(words, True, i), "rejected": answer(words, False, i)})
    if dup_first:
        rows.append(dict(rows[0]))
    rows.append({"prompt": "broken", "chosen": "same", "rejected": "same"})  # quarantined
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def read_rows(run: Path) -> list[dict]:
    return pq.read_table(sorted((run / "data").glob("*.parquet"))[0]).to_pylist()


def read_rejections(run: Path) -> list[dict]:
    return pq.read_table(run / "rejections.parquet").to_pylist()


def cfg(src: Path, out: Path, **kw) -> BuildConfig:
    return BuildConfig(source=str(src), out=str(out), **kw)


@needs_shared
def test_rules_build_on_real_data_follows_the_contract_and_adds_up(tmp_path):
    out = tmp_path / "run"
    result = build(cfg(UF, out, limit=120))
    table = pq.read_table(out / "data" / "train-00000-of-00001.parquet")
    assert table.schema.names == ROW_COLUMNS
    assert table.schema.equals(arrow_schema(DatasetRow), check_metadata=False)
    rows = table.to_pylist()
    for r in rows:  # every row validates against the contract, id included
        DatasetRow.model_validate({**r})
    kinds = Counter(r["kind"] for r in rows)
    assert kinds["original"] > 100 and kinds["causal"] > 60 and kinds["neutral"] > 100

    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "complete" and s["accounting"]["balanced"]
    assert s["counts"]["rows"] == len(rows) == result.rows
    assert s["counts"]["rows_by_kind"] == dict(kinds)
    assert s["counts"]["source_rows"] == 120
    assert s["counts"]["source_pairs"] + s["counts"]["quarantined"] == 120
    rejections = read_rejections(out)
    assert len(rejections) == s["counts"]["rejections"]
    by_stage = Counter((r["stage"], r["reason"]) for r in rejections)
    assert sum(by_stage.values()) == sum(sum(v.values()) for v in s["counts"]["rejections_by_stage"].values())
    # every source pair is accounted for: it has rows or only rejections
    pair_ids = {r["source_id"] for r in rows} | {r["source_id"] for r in rejections if r["stage"] != "source"}
    assert len(pair_ids) == s["counts"]["source_pairs"]
    # rules cannot upgrade: recorded as unsupported, never faked
    assert not [r for r in rows if r["augmentation"] == "upgrade"]
    assert by_stage[("causal", "unsupported")] > 0
    assert str(tmp_path) not in (out / "summary.json").read_text()
    assert str(tmp_path) not in (out / "config.json").read_text()


@needs_shared
def test_rows_mean_what_the_contract_says(tmp_path):
    out = tmp_path / "run"
    build(cfg(UF, out, limit=60))
    rows = read_rows(out)
    originals = {r["source_id"]: r for r in rows if r["kind"] == "original"}
    for r in rows:
        o = originals[r["source_id"]]
        if r["augmentation"] == "degrade":  # chosen (original) > its degraded copy, same prompt
            assert r["preference"] == 1.0 and r["prompt"] == o["prompt"]
            assert r["chosen"] == o["chosen"] and r["rejected"] != o["rejected"]
            assert r["attribute"] and r["provenance"]["template"] == "degrade" and len(r["provenance"]["template_sha256"]) == 64
            assert r["quality"]["edit_ratio"] is not None and r["quality"]["length_ratio"] is not None
        if r["kind"] == "neutral":  # a tie under somebody else's prompt, answers of this source
            assert r["preference"] == 0.5 and r["prompt"] != o["prompt"]
            assert r["quality"]["prompt_similarity"] < 0.2
    neutral = [r for r in rows if r["kind"] == "neutral"]
    # the two answers are in random order: the original chosen answer is first in some ties, second in others
    first = sum(r["chosen"] == originals[r["source_id"]]["chosen"] for r in neutral)
    second = sum(r["rejected"] == originals[r["source_id"]]["chosen"] for r in neutral)
    assert first > 0 and second > 0


@needs_shared
def test_rerun_replays_everything_and_writes_identical_files(tmp_path):
    out = tmp_path / "run"
    first = build(cfg(UF, out, limit=80)).summary
    files = {p.name: p.read_bytes() for p in [*(out / "data").glob("*.parquet"), out / "rejections.parquet"]}
    second = build(cfg(UF, out, limit=80)).summary
    assert first["oracle_calls"]["new"] > 0
    assert second["oracle_calls"]["new"] == 0
    assert second["oracle_calls"]["cached"] == first["oracle_calls"]["total"]
    assert {p.name: p.read_bytes() for p in [*(out / "data").glob("*.parquet"), out / "rejections.parquet"]} == files


def test_quarantine_duplicates_and_accounting(tmp_path):
    src = write_pairs(tmp_path / "pairs.jsonl", n=8, dup_first=True)
    out = tmp_path / "run"
    build(cfg(src, out), oracle=ScriptedOracle())
    rejections = read_rejections(out)
    q = [r for r in rejections if r["stage"] == "source"]
    assert [(r["source_id"], r["reason"]) for r in q] == [("row:9", "identical_answers")]
    dups = [r for r in rejections if r["stage"] == "dedup"]
    assert dups and all(r["duplicate_of"] for r in dups)
    ids = {r["id"] for r in read_rows(out)}
    assert all(r["duplicate_of"] in ids for r in dups)
    assert len(ids) == len(read_rows(out))  # no duplicate ids


def test_upgrade_and_degrade_pairs_are_oriented_and_verified(tmp_path):
    src = write_pairs(tmp_path / "pairs.jsonl")
    oracle = ScriptedOracle()
    build(cfg(src, tmp_path / "run", max_attributes=1), oracle=oracle)
    rows = read_rows(tmp_path / "run")
    up = [r for r in rows if r["augmentation"] == "upgrade"]
    down = [r for r in rows if r["augmentation"] == "degrade"]
    assert len(up) == len(down) == 8  # one rubric per pair, both directions apply (chosen strong, rejected weak)
    assert all("precisely" in r["chosen"][0]["content"] and "precisely" not in r["rejected"][0]["content"] for r in up)
    assert all("wrongly" in r["rejected"][0]["content"] for r in down)
    assert all(r["quality"]["verification"].startswith("pass") and "verified" in r["quality"]["checks"] for r in up + down)
    assert len(oracle.calls("verify")) == 16  # verify is on by default for LLM oracles
    assert len(oracle.calls("rubrics")) == 8 and len(oracle.calls("rate")) == 16


@pytest.mark.parametrize(
    "target, moved, reason",
    [("same", None, "target_not_moved"), ("worse", 0, "other_rubrics_changed"), ("worse", -1, "other_rubrics_changed")],
)
def test_verification_rejects_with_the_verdict(tmp_path, target, moved, reason):
    from crome.schemas import Verdict

    def verdict(req):
        names = req.validation["other_rubrics"]
        others = [{"rubric": n, "change": "worse" if moved is not None and n == names[moved] else "same"} for n in names]
        return OracleResponse(status="ok", parsed=Verdict(target=target, others=others, explanation="because"))

    src = write_pairs(tmp_path / "pairs.jsonl", n=3)
    oracle = ScriptedOracle(verify=verdict)
    build(cfg(src, tmp_path / "run", causal=["degrade"], max_attributes=1, neutral_ratio=0), oracle=oracle)
    assert not [r for r in read_rows(tmp_path / "run") if r["kind"] == "causal"]
    rej = [r for r in read_rejections(tmp_path / "run") if r["stage"] == "verify"]
    assert len(rej) == 3 and {r["reason"] for r in rej} == {reason}
    assert all("because" in r["detail"] and r["candidate"] for r in rej)


def test_failed_calls_are_recorded_and_retried_on_rerun(tmp_path):
    src = write_pairs(tmp_path / "pairs.jsonl", n=4)
    calls = {"n": 0}

    def flaky_rubrics(req):
        calls["n"] += 1
        if "case 1)" in req.context["prompt"]:
            return OracleResponse(status="error", error="HTTP 503 after 6 attempts", attempts=6)
        from scripted_oracle import default_rubrics

        return default_rubrics(req)

    out = tmp_path / "run"
    s1 = build(cfg(src, out, neutral_ratio=0), oracle=ScriptedOracle(rubrics=flaky_rubrics)).summary
    rej = [r for r in read_rejections(out) if r["stage"] == "rubrics"]
    assert [r["reason"] for r in rej] == ["oracle_error"] and "503" in rej[0]["detail"]
    assert s1["oracle_calls"]["failed"] == 1 and s1["accounting"]["balanced"]
    # the failed pair still has its original row
    assert Counter(r["kind"] for r in read_rows(out))["original"] == 4
    with RunStore.open(out) as store:
        assert store.call_stats()["by_status"].get("error") == 1
    # a re-run calls again only for the failure (and what depends on it)
    oracle = ScriptedOracle()
    s2 = build(cfg(src, out, neutral_ratio=0), oracle=oracle).summary
    assert len(oracle.calls("rubrics")) == 1 and "case 1)" in oracle.calls("rubrics")[0].context["prompt"]
    assert s2["oracle_calls"]["failed"] == 0
    assert not [r for r in read_rejections(out) if r["stage"] == "rubrics"]


def test_new_template_version_reruns_only_its_calls(tmp_path):
    import shutil

    from crome.prompts import TEMPLATES_DIR

    src = write_pairs(tmp_path / "pairs.jsonl", n=4)
    out = tmp_path / "run"
    build(cfg(src, out, verify=False), oracle=ScriptedOracle())
    mine = tmp_path / "prompts" / "degrade"
    mine.mkdir(parents=True)
    text = (TEMPLATES_DIR / "degrade" / "v1.jinja").read_text().replace("version: v1", "version: v2")
    (mine / "v2.jinja").write_text(text.replace("clearly WORSE", "noticeably WORSE"))
    oracle = ScriptedOracle()
    build(cfg(src, out, verify=False, templates_dir=str(tmp_path / "prompts")), oracle=oracle)
    assert {r.task for r in oracle.history} == {"degrade"}
    assert all(r.template == "degrade@v2" for r in oracle.history)
    rows = read_rows(out)
    assert {r["provenance"]["template_version"] for r in rows if r["augmentation"] == "degrade"} == {"v2"}
    assert {r["provenance"]["template_version"] for r in rows if r["augmentation"] == "upgrade"} == {"v1"}


def test_neutral_prompts_are_drawn_from_unrelated_pairs(tmp_path):
    src = write_pairs(tmp_path / "pairs.jsonl", n=8)
    out = tmp_path / "run"
    build(cfg(src, out, causal=["degrade"], neutral_ratio=2, seed=3), oracle=ScriptedOracle())
    rows = read_rows(out)
    neutral = [r for r in rows if r["kind"] == "neutral"]
    assert len(neutral) == 16
    originals = {r["source_id"]: r["prompt"] for r in rows if r["kind"] == "original"}
    assert all(r["prompt"] != originals[r["source_id"]] and r["prompt"] in originals.values() for r in neutral)
    # same seed, same draws; another seed, other draws
    build(cfg(src, tmp_path / "again", causal=["degrade"], neutral_ratio=2, seed=3), oracle=ScriptedOracle())
    assert read_rows(tmp_path / "again") == rows
    build(cfg(src, tmp_path / "other", causal=["degrade"], neutral_ratio=2, seed=4), oracle=ScriptedOracle())
    assert [r["prompt"] for r in read_rows(tmp_path / "other") if r["kind"] == "neutral"] != [r["prompt"] for r in neutral]


def test_cross_prompt_pairs_prefer_the_on_topic_answer(tmp_path):
    src = write_pairs(tmp_path / "pairs.jsonl", n=6)
    build(cfg(src, tmp_path / "run", causal=["degrade"], neutral_ratio=0, cross_prompt=True), oracle=ScriptedOracle())
    rows = read_rows(tmp_path / "run")
    cross = [r for r in rows if r["augmentation"] == "cross_prompt"]
    originals = {r["source_id"]: r for r in rows if r["kind"] == "original"}
    assert len(cross) == 6
    for r in cross:
        o = originals[r["source_id"]]
        assert r["prompt"] == o["prompt"] and r["chosen"] == o["chosen"] and r["preference"] == 1.0
        assert r["rejected"] not in (o["chosen"], o["rejected"]) and r["attribute"] == "relevance"


def test_validation_failures_are_rejections_with_figures(tmp_path):
    src = write_pairs(tmp_path / "pairs.jsonl", n=3)
    same = lambda req: OracleResponse(status="ok", parsed=__import__("crome.schemas", fromlist=["Counterfactual"]).Counterfactual(rewrite=req.context["answer"], change="nothing"))
    meta = lambda req: OracleResponse(status="ok", parsed=__import__("crome.schemas", fromlist=["Counterfactual"]).Counterfactual(rewrite="Here is the rewritten response:\n\n" + req.context["answer"].replace("matters", "is irrelevant"), change="x"))
    build(cfg(src, tmp_path / "run", max_attributes=1, neutral_ratio=0, verify=False), oracle=ScriptedOracle(degrade=same, upgrade=meta))
    rej = Counter((r["augmentation"], r["reason"]) for r in read_rejections(tmp_path / "run") if r["stage"] == "validate")
    assert rej[("degrade", "edit_ratio_too_low")] == 3
    assert sum(n for (aug, reason), n in rej.items() if aug == "upgrade" and "meta" in reason) == 3


def test_budget_stops_cleanly_and_resumes(tmp_path):
    from crome.builder.run.generate import CachedGenerate

    src = write_pairs(tmp_path / "pairs.jsonl", n=8)
    out = tmp_path / "run"
    price = lambda i, o: (i + o) / 1_000_000  # $1 per million tokens
    orig_init = CachedGenerate.__init__

    def with_price(self, *a, **kw):
        kw["price"] = price
        orig_init(self, *a, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(CachedGenerate, "__init__", with_price)
    try:
        s = build(cfg(src, out, max_cost=0.004, neutral_ratio=0), oracle=ScriptedOracle()).summary
        assert s["status"] == "stopped: max_cost" and s["accounting"]["balanced"] and s["counts"]["pending"] > 0
        assert s["cost_usd"] <= 0.004
        spent = s["oracle_calls"]["new"]
        s2 = build(cfg(src, out, neutral_ratio=0), oracle=ScriptedOracle()).summary
        assert s2["status"] == "complete" and s2["counts"]["pending"] == 0
        assert s2["oracle_calls"]["cached"] >= spent - 0  # nothing paid twice
    finally:
        mp.undo()


def test_too_many_failures_stop_the_run(tmp_path):
    src = write_pairs(tmp_path / "pairs.jsonl", n=8)
    bad = lambda req: OracleResponse(status="error", error="HTTP 500")
    s = build(cfg(src, tmp_path / "run", max_failures=2, neutral_ratio=0), oracle=ScriptedOracle(rubrics=bad)).summary
    assert s["status"] == "stopped: max_failures"
    assert s["accounting"]["balanced"]


def test_systematic_oracle_error_stops_at_once(tmp_path):
    from crome.builder.oracles.base import SystematicOracleError

    src = write_pairs(tmp_path / "pairs.jsonl", n=8)

    def unauthorised(req):
        raise SystematicOracleError("401: invalid API key (OPENAI_API_KEY)")

    oracle = ScriptedOracle(rubrics=unauthorised)
    with pytest.raises(SystematicOracleError, match="invalid API key"):
        build(cfg(src, tmp_path / "run"), oracle=oracle)
    assert len(oracle.history) <= 8  # the calls already in flight, no more


def test_oracle_exceptions_are_recorded_not_fatal(tmp_path):
    src = write_pairs(tmp_path / "pairs.jsonl", n=3)

    def boom(req):
        raise RuntimeError("unexpected bug")

    s = build(cfg(src, tmp_path / "run", neutral_ratio=0), oracle=ScriptedOracle(rate=boom)).summary
    assert s["status"] == "complete" and s["accounting"]["balanced"]
    assert s["counts"]["rejections_by_stage"]["rate"] == {"oracle_error": 6}  # both answers of 3 pairs


def test_seeded_attribute_choice_is_stable_and_varies_by_seed(tmp_path):
    from scripted_oracle import contexts

    src = write_pairs(tmp_path / "pairs.jsonl", n=8)
    picks = []
    for seed in (1, 1, 2):
        o = ScriptedOracle()
        build(cfg(src, tmp_path / f"r{seed}{random.random()}", seed=seed, max_attributes=1, causal=["degrade"], neutral_ratio=0, verify=False), oracle=o)
        picks.append(sorted((c["prompt"], c["rubric"]) for c in contexts(o, "degrade")))
    assert picks[0] == picks[1] and picks[0] != picks[2]


@pytest.mark.skipif(not (SHARED / "rm-bench" / "chat_filtered.json").exists(), reason="../shared/data not present")
def test_a_source_row_with_several_pairs_keeps_them_all(tmp_path):
    out = tmp_path / "run"
    s = build(cfg(SHARED / "rm-bench" / "chat_filtered.json", out, limit=4)).summary
    assert s["counts"]["source_rows"] == 4 and s["counts"]["source_pairs"] == 36  # 3 x 3 style pairs per prompt
    assert s["accounting"]["balanced"] and s["accounting"]["with_rows"] == 36
    with RunStore.open(out, read_only=True) as store:
        assert len(list(iter_sources(store))) == 36
