import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets/transformers read it

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from train_helpers import tiny_bert, write_run  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from crome.cli import app  # noqa: E402
from crome.schemas import SourcePair  # noqa: E402
from crome.schemas.messages import user  # noqa: E402
from crome.train.evaluate import (  # noqa: E402
    evaluate_pairs,
    load_scorer,
    reward_scores,
    rewardbench_sections,
    rm_bench_scores,
    score_pairs,
)
from crome.train.pairs import EvalPair, load_eval_pairs, subset_from_stem  # noqa: E402
from paths import SHARED_DATA  # noqa: E402

SHARED = SHARED_DATA


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    path = tiny_bert(tmp_path_factory.mktemp("rm") / "model", init_std=0.2)
    return load_scorer(str(path), device="cpu")


def pair(chosen, rejected, *, prompt="q", preference=1.0, subset="s", styles=None):
    return EvalPair([{"role": "user", "content": prompt}], chosen, rejected, preference, subset, styles=styles)


def test_sections_are_example_count_weighted():
    s = rewardbench_sections({"llmbar-natural": 0.5, "llmbar-adver-neighbor": 1.0, "alpacaeval-easy": 0.9})
    assert s["Chat Hard"]["score"] == pytest.approx((0.5 * 100 + 1.0 * 134) / 234)
    assert s["Chat"]["score"] == pytest.approx(0.9) and "Safety" not in s and "Score" not in s
    assert "mt-bench-hard" in s["Chat Hard"]["missing"]


def test_reasoning_weighs_math_like_all_code_subsets_together():
    code = {f"hep-{lang}": 0.0 for lang in ("cpp", "go", "java", "js", "python", "rust")}
    assert rewardbench_sections({"math-prm": 1.0, **code})["Reasoning"]["score"] == pytest.approx(0.5)


def test_overall_score_needs_all_four_sections():
    acc = {"alpacaeval-easy": 1.0, "llmbar-natural": 0.5, "donotanswer": 0.25, "math-prm": 0.75}
    assert rewardbench_sections(acc)["Score"]["score"] == pytest.approx((1.0 + 0.5 + 0.25 + 0.75) / 4)


def test_rm_bench_grid_easy_normal_hard():
    # (chosen style, rejected style) -> correct? Upper triangle (chosen plainer) is hard.
    margins = {(0, 0): 1, (1, 1): 1, (2, 2): -1, (0, 1): -1, (0, 2): -1, (1, 2): 1, (1, 0): 1, (2, 0): 1, (2, 1): 1}
    items = [(pair("a", "b", styles=k), float(d), False) for k, d in margins.items()]
    got = rm_bench_scores(items)["all"]
    assert got == {"n": 9, "easy": 1.0, "normal": pytest.approx(2 / 3), "hard": pytest.approx(1 / 3), "average": pytest.approx(6 / 9)}


def test_score_pairs_is_reward_difference_and_dedups(scorer):
    model, tok = scorer
    p = [{"role": "user", "content": "name a river"}]
    r = dict(zip(["a", "b", "c"], reward_scores(model, tok, [p, p, p], ["the nile", "a fish", "the thames"])[0]))
    pairs = [pair("the nile", "a fish", prompt="name a river"), pair("the thames", "a fish", prompt="name a river")]
    d = score_pairs(model, tok, pairs, batch_size=1)
    assert d == pytest.approx([r["a"] - r["b"], r["c"] - r["b"]], abs=1e-5)
    # Accepts contract objects too.
    sp = SourcePair.make([user("name a river")], "the nile", "a fish", row=0)
    assert score_pairs(model, tok, [sp])[0] == pytest.approx(d[0], abs=1e-5)


def test_ties_are_reported_by_margin_not_counted_as_wins(scorer):
    model, tok = scorer
    pairs = [pair("good answer", "bad answer"), pair("bad answer", "good answer"), pair("good answer", "bad answer", preference=0.5, subset="t")]
    d = score_pairs(model, tok, pairs)
    report = evaluate_pairs(model, tok, pairs)
    assert report["overall"]["n_strict"] == 2 and report["overall"]["accuracy"] == 0.5  # one of a swapped pair wins
    assert report["subsets"]["t"]["n_ties"] == 1 and "accuracy" not in report["subsets"]["t"]
    assert report["subsets"]["t"]["tie_abs_margin"] == pytest.approx(abs(d[2]), abs=1e-6)


def test_load_rewardbench_jsonl_and_crome_rows(tmp_path):
    f = tmp_path / "rb.jsonl"
    rows = [
        {"prompt": "hi", "chosen": "hello", "rejected": "go away", "subset": "alpacaeval-easy", "id": 1},
        {"prompt": "2+2?", "chosen": "4", "rejected": "5", "subset": "math-prm", "id": 2},
        {"prompt": "x", "chosen": "y", "rejected": "z", "id": 3},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows))
    pairs, files = load_eval_pairs(f)
    assert [p.subset for p in pairs] == ["alpacaeval-easy", "math-prm", "rb"]
    assert files[0]["pairs"] == 3 and files[0]["shape"] == "pairs"
    assert len(load_eval_pairs(f, limit=2)[0]) == 2

    write_run(tmp_path / "run", 3, split_test=1)
    crome_pairs, info = load_eval_pairs(tmp_path / "run")
    assert info[0]["split"] == "test" and sorted(p.subset for p in crome_pairs) == ["causal", "neutral", "original"]
    assert [p.preference for p in crome_pairs if p.subset == "neutral"] == [0.5]


def test_llmbar_file_stems_map_to_rewardbench_names():
    assert subset_from_stem(Path("LLMBar_Adversarial_GPTInst.json")) == "llmbar-adver-GPTInst"
    assert subset_from_stem(Path("LLMBar_Natural.json")) == "llmbar-natural"
    assert subset_from_stem(Path("Processed_MT-Bench.json")) == "processed-mt-bench"


def test_missing_data_is_a_clear_error(tmp_path):
    from crome.train.data import DataError

    with pytest.raises(DataError, match="no such file"):
        load_eval_pairs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no data files"):
        load_eval_pairs(tmp_path / "empty")


@pytest.mark.skipif(not (SHARED / "llmbar").exists(), reason="shared data not present")
def test_llmbar_and_rm_bench_through_the_sources_loader(scorer):
    pytest.importorskip("crome.builder.sources")
    model, tok = scorer
    pairs, files = load_eval_pairs(SHARED / "llmbar", limit=2)
    assert {f["shape"] for f in files} == {"llmbar"}
    assert {"llmbar-natural", "llmbar-adver-neighbor", "llmbar-adver-GPTInst", "llmbar-adver-GPTOut", "llmbar-adver-manual"} <= {p.subset for p in pairs}
    report = evaluate_pairs(model, tok, pairs, max_length=128)
    chat_hard = report["rewardbench"]["Chat Hard"]
    assert chat_hard["missing"] == ["mt-bench-hard"] and 0.0 <= chat_hard["score"] <= 1.0

    rm_pairs, rm_files = load_eval_pairs(SHARED / "rm-bench" / "chat_filtered.json", limit=2)
    assert len(rm_pairs) == 18 and rm_files[0]["shape"] == "rmbench"
    rm = evaluate_pairs(model, tok, rm_pairs, max_length=128)
    assert rm["rm_bench"]["alpacaeval"]["n"] == 18 and set(rm["rm_bench"]["all"]) == {"n", "easy", "normal", "hard", "average"}
    assert rm["rewardbench"] == {}  # style grids never feed RewardBench sections


def test_cli_eval_writes_a_json_report(tmp_path, scorer):
    model_dir = tiny_bert(tmp_path / "m")
    f = tmp_path / "rb.json"
    f.write_text(json.dumps([{"prompt": "hi", "chosen": "hello", "rejected": "bye", "subset": "mt-bench-easy"}] * 3))
    result = CliRunner().invoke(app, ["eval", str(model_dir), "--data", str(f), "--out", str(tmp_path / "r.json"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["subsets"]["mt-bench-easy"]["n"] == 3 and "Chat" in report["rewardbench"]
    assert report["model"] == str(model_dir) and report["files"][0]["pairs"] == 3
