import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets/transformers read it

import json  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from train_helpers import tiny_bert, tiny_gpt2, write_run  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from crome.cli import app  # noqa: E402
from crome.train.config import CromeConfig  # noqa: E402
from crome.train.trainer import CONFIG_FILE, CromeRewardTrainer, load_reward_model, summarize, train  # noqa: E402


def params(path):
    return {k: v.detach().clone() for k, v in load_reward_model(str(path)).named_parameters()}


def config(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"), model_name_or_path=str(tmp_path / "model"), dataset=str(tmp_path / "run"),
        max_steps=8, per_device_train_batch_size=8, learning_rate=5e-3, logging_steps=1, save_strategy="no",
        use_cpu=True, max_length=64, seed=0, disable_tqdm=True,
    )
    base.update(kw)
    return CromeConfig(**base)


@pytest.fixture
def bert_run(tmp_path):
    tiny_bert(tmp_path / "model", init_std=0.2)
    write_run(tmp_path / "run", 8)
    return tmp_path


def test_short_run_changes_every_parameter_and_lowers_the_loss(bert_run):
    before = params(bert_run / "model")
    out = train(config(bert_run, eval_fraction=0.25))
    after = params(out)
    assert before.keys() == after.keys()
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, f"parameters that did not train: {unchanged}"

    record = json.loads((out / CONFIG_FILE).read_text())
    losses = [h["loss"] for h in record["log_history"] if "loss" in h]
    assert len(losses) == 8
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2
    logged = set().union(*[h.keys() for h in record["log_history"] if "loss" in h])
    assert {"original_accuracy", "causal_accuracy", "strict_accuracy", "neutral_abs_margin", "tie_loss"} <= logged
    assert {"eval_strict_accuracy", "eval_neutral_abs_margin", "eval_tie_loss", "eval_loss"} <= set(record["eval_metrics"])
    assert record["data"]["eval_rows"] + record["data"]["train_rows"] == 24
    assert record["text_format"] == "plain" and record["config"]["tie_weight"] == 1.0
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()


def test_baseline_trains_on_original_rows_only(bert_run):
    out = train(config(bert_run, kinds=["original"], max_steps=2))
    record = json.loads((out / CONFIG_FILE).read_text())
    assert record["data"]["train_rows_by_kind"] == {"original": 8}
    logged = set().union(*[h.keys() for h in record["log_history"]])
    assert "original_accuracy" in logged and "tie_loss" not in logged and "causal_accuracy" not in logged


def test_truncated_pairs_are_counted_not_dropped(bert_run, caplog):
    out = train(config(bert_run, max_length=16, max_steps=1))
    rep = json.loads((out / CONFIG_FILE).read_text())["truncation"]["train"]
    assert rep["pairs"] == 24 and rep["truncated_pairs"] == 24
    assert "24 of 24 pairs truncated" in caplog.text


def test_metrics_summary_per_kind():
    stats = torch.tensor([[4, 3, 2.0, 8.0], [2, 1, 1.0, 2.0], [5, 0, 4.0, 2.5]], dtype=torch.float64)
    m = summarize(stats)
    assert m["original_accuracy"] == 0.75 and m["causal_accuracy"] == 0.5
    assert m["strict_accuracy"] == pytest.approx(4 / 6)
    assert m["neutral_abs_margin"] == 0.5 and m["tie_loss"] == 0.8 and m["original_loss"] == 0.5


def test_base_lm_gets_a_fresh_head_and_a_pad_token(tmp_path):
    tiny_gpt2(tmp_path / "model")
    write_run(tmp_path / "run", 6)
    out = train(config(tmp_path, max_steps=3, learning_rate=1e-3))
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.num_labels == 1 and tok.pad_token == tok.eos_token
    assert model.config.pad_token_id == tok.eos_token_id


def test_lora_saves_a_merged_plain_model(bert_run):
    pytest.importorskip("peft")
    before = params(bert_run / "model")
    out = train(config(bert_run, lora=True, lora_r=4, lora_alpha=8, max_steps=3, learning_rate=1e-2))
    after = params(out)  # loads without peft: the adapters were merged
    assert before.keys() == after.keys()
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])  # the head trains fully
    assert not torch.equal(before["bert.encoder.layer.0.attention.self.query.weight"], after["bert.encoder.layer.0.attention.self.query.weight"])
    assert torch.equal(before["bert.embeddings.word_embeddings.weight"], after["bert.embeddings.word_embeddings.weight"])


def test_length_grouped_sampler_is_the_default(bert_run):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from crome.train.data import PairCollator, PairEncoder, load_preference_data, tokenize_pairs

    cfg = config(bert_run)
    assert cfg.train_sampling_strategy == "group_by_length" and cfg.remove_unused_columns is False
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bert_run / "model")
    ds = tokenize_pairs(load_preference_data(bert_run / "run").train, PairEncoder(tok, 64))
    trainer = CromeRewardTrainer(
        model=load_reward_model(str(bert_run / "model")), args=cfg, train_dataset=ds, processing_class=tok,
        data_collator=PairCollator(tok.pad_token_id),
    )
    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)


def test_cli_train_passes_training_arguments_through(bert_run):
    result = CliRunner().invoke(
        app,
        [
            "train", str(bert_run / "run"), "--model", str(bert_run / "model"), "--out", str(bert_run / "cli"),
            "--max-steps", "2", "--batch-size", "4", "--max-length", "48", "--tie-weight", "0.5", "--kinds", "original,neutral",
            "--save_strategy", "no", "--use_cpu", "True", "--warmup_steps", "1", "--disable_tqdm", "True",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((bert_run / "cli" / CONFIG_FILE).read_text())
    assert record["config"]["warmup_steps"] == 1 and record["config"]["tie_weight"] == 0.5
    assert record["data"]["train_rows_by_kind"] == {"original": 8, "neutral": 8}
    assert record["config"]["per_device_train_batch_size"] == 4


def test_cli_train_reports_bad_data_without_a_traceback(tmp_path):
    tiny_bert(tmp_path / "model")
    result = CliRunner().invoke(app, ["train", str(tmp_path / "nope"), "--model", str(tmp_path / "model"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "no such file or directory" in result.output
