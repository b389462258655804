"""all-MiniLM-L6-v2 end to end: train a few steps on a small run, save, reload, evaluate on LLMBar."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets/transformers read it

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from train_helpers import minilm_dir, write_run  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from crome.cli import app  # noqa: E402
from crome.train.evaluate import load_scorer, score_pairs  # noqa: E402
from crome.train.trainer import CONFIG_FILE  # noqa: E402
from paths import SHARED_DATA

LLMBAR = SHARED_DATA / "llmbar"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not LLMBAR.exists(), reason="shared LLMBar data not present")]


def test_minilm_trains_saves_reloads_and_evaluates_on_llmbar(tmp_path):
    runner = CliRunner()
    write_run(tmp_path / "run", 8)
    out = tmp_path / "rm"
    result = runner.invoke(
        app,
        [
            "train", str(tmp_path / "run"), "--model", str(minilm_dir()), "--out", str(out), "--max-steps", "3",
            "--batch-size", "4", "--max-length", "96", "--lr", "5e-5", "--logging-steps", "1",
            "--save_strategy", "no", "--use_cpu", "True", "--disable_tqdm", "True",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / CONFIG_FILE).read_text())
    assert len([h for h in record["log_history"] if "loss" in h]) == 3
    assert record["data"]["train_rows"] == 24 and record["truncation"]["train"]["pairs"] == 24

    # Reloaded, the saved model scores exactly like the trained one did at the end of training.
    model, tok = load_scorer(str(out), device="cpu")
    assert model.config.num_labels == 1
    from crome.train.data import load_preference_data

    rows = load_preference_data(tmp_path / "run").train.select(range(4)).to_list()
    again = score_pairs(*load_scorer(str(out), device="cpu"), rows, max_length=96)
    assert torch.allclose(torch.tensor(score_pairs(model, tok, rows, max_length=96)), torch.tensor(again), atol=1e-5)

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
