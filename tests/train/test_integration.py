"""all-MiniLM-L6-v2 end to end: train a few steps on a small run, save, reload, evaluate on LLMBar."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets/transformers read it

import json  # noqa: E402

import pytest  # noqa: E402
from train_helpers import minilm_dir, write_run  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from crome.cli import app  # noqa: E402
from crome.train.evaluate import load_scorer, score_pairs  # noqa: E402
from crome.train.trainer import CONFIG_FILE  # noqa: E402
from paths import SHARED_DATA

LLMBAR = SHARED_DATA / "llmbar"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not LLMBAR.exists(), reason="shared LLMBar data not present")]


def test_minilm_trains_saves_reloads_and_evaluates_on_llmbar(tmp_path):
    import math

    runner = CliRunner()
    write_run(tmp_path / "run", 12)
    out = tmp_path / "rm"
    result = runner.invoke(
        app,
        [
            "train", str(tmp_path / "run"), "--model", str(minilm_dir()), "--out", str(out), "--max-steps", "3",
            "--batch-size", "4", "--max-length", "96", "--lr", "5e-4", "--logging-steps", "1", "--eval-fraction", "0.34",
            "--save_strategy", "no", "--use_cpu", "True", "--disable_tqdm", "True",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / CONFIG_FILE).read_text())
    assert len([h for h in record["log_history"] if "loss" in h]) == 3
    assert record["data"]["train_rows"] + record["data"]["eval_rows"] == 36 and record["data"]["eval_rows"] > 0

    # The saved model is the trained one: reloaded, it reproduces the eval metrics the trainer logged
    # after its last step (computed here from its scores, by the formulas of the loss, not by the trainer).
    from crome.train.data import load_preference_data

    held_out = load_preference_data(tmp_path / "run", eval_fraction=0.34, seed=0).eval.to_list()
    assert len(held_out) == record["data"]["eval_rows"]
    d = score_pairs(*load_scorer(str(out), device="cpu"), held_out, max_length=96)
    strict = [m for m, r in zip(d, held_out) if r["preference"] == 1.0]
    ties = [m for m, r in zip(d, held_out) if r["preference"] == 0.5]
    ev = record["eval_metrics"]
    assert ev["eval_strict_accuracy"] == pytest.approx(sum(m > 0 for m in strict) / len(strict))
    assert ev["eval_neutral_abs_margin"] == pytest.approx(sum(abs(m) for m in ties) / len(ties), abs=1e-4)
    by_hand = [0.5 * (math.log1p(math.exp(-m)) + math.log1p(math.exp(m))) for m in ties]
    assert ev["eval_tie_loss"] == pytest.approx(sum(by_hand) / len(by_hand), abs=1e-4)
    # ... and training moved it: the same held-out pairs scored by the untrained start (same seed, fresh head) differ.
    from transformers import set_seed

    from crome.train.trainer import load_reward_model

    set_seed(0)
    start = load_reward_model(str(minilm_dir()))
    d0 = score_pairs(start, load_scorer(str(out), device="cpu")[1], held_out, max_length=96)
    assert max(abs(a - b) for a, b in zip(d, d0)) > 1e-3

    # LLMBar through the sources loader, two pairs per file: 5 Chat Hard subsets + 3 human-label sets.
    report_path = tmp_path / "report.json"
    result = runner.invoke(
        app, ["eval", str(out), "--data", str(LLMBAR), "--limit", "2", "--max-length", "128", "--out", str(report_path), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert set(report["rewardbench"]) == {"Chat Hard"}
    assert report["rewardbench"]["Chat Hard"]["subsets"] == [
        "llmbar-natural", "llmbar-adver-neighbor", "llmbar-adver-GPTInst", "llmbar-adver-GPTOut", "llmbar-adver-manual",
    ]
    assert report["overall"]["n"] == sum(f["pairs"] for f in report["files"]) >= 16
    assert all(0.0 <= s.get("accuracy", 0.0) <= 1.0 for s in report["subsets"].values())
