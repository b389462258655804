import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets/transformers read it

import json  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from paths import SHARED_DATA  # noqa: E402
from train_helpers import minilm_dir, tiny_bert, tiny_gpt2, write_run  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from crome.cli import app  # noqa: E402
from crome.train.config import CromeConfig  # noqa: E402
from crome.train.pairpm.encode import PairPMEncoder  # noqa: E402
from crome.train.pairpm import trainer as pairpm_trainer  # noqa: E402
from crome.train.pairpm.judge import PairPMJudge, load_judge  # noqa: E402
from crome.train.pairpm.model import load_pairpm_model  # noqa: E402
from crome.train.pairpm.template import JUDGE_V1, get_template  # noqa: E402
from crome.train.pairpm.trainer import train  # noqa: E402
from crome.train.pairs import EvalPair, load_eval_pairs  # noqa: E402

CHAT = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
PAIRS = [
    EvalPair(prompt=[{"role": "user", "content": "Explain bees to me in two sentences."}],
             chosen="Bees are fascinating. Here is a clear, correct and helpful explanation of bees.",
             rejected="I do not know. Something wrong and unhelpful about bees, sorry."),
    EvalPair(prompt=[{"role": "user", "content": "Explain tides to me in two sentences."}],
             chosen="Tides are fascinating. Here is a vague, wrong explanation of tides.",
             rejected="Tides are fascinating. Here is a clear, correct and helpful explanation of tides."),
]  # fmt: skip


def tiny_chat_lm(path):
    """The tiny GPT-2 LM of train_helpers with room for the judging instruction and a chat template."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tiny_gpt2(path)
    config = GPT2Config.from_pretrained(path)
    config.n_positions = 1024
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    tok.chat_template = CHAT
    tok.save_pretrained(path)
    return path


def cfg(tmp_path, model, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"), model_name_or_path=str(model), dataset=str(tmp_path / "run"), arch="pairpm",
        max_steps=4, per_device_train_batch_size=8, learning_rate=5e-3, logging_steps=1, save_strategy="no",
        use_cpu=True, max_length=600, seed=0, disable_tqdm=True, report_to=[],
    )  # fmt: skip
    base.update(kw)
    return CromeConfig(**base)


def probabilities_before_save(monkeypatch, pairs):
    """Wrap the PairPM trainer's save: (P_ab, P_ba) of `pairs` read from the trained model in memory just before it is
    saved (for LoRA: the adapters still unmerged). The dict it returns holds them under "probs" once `train` has run."""
    seen, real = {}, pairpm_trainer.save_trained

    def save(trainer, config, tokenizer):
        record = {"head": trainer.head, "answer_token_ids": trainer.answer_ids,
                  "template": get_template(config.judge_template).record() if trainer.head == "lm" else None}  # fmt: skip
        seen["probs"] = PairPMJudge(trainer.model, tokenizer, record).probabilities(pairs)
        return real(trainer, config, tokenizer)

    monkeypatch.setattr(pairpm_trainer, "save_trained", save)
    return seen


def same_probabilities(got, expected, tol=1e-5):
    return len(got) == len(expected) and all(
        abs(x - x0) <= tol and abs(y - y0) <= tol for (x, y, _), (x0, y0, _) in zip(got, expected)
    )


def test_causal_lm_pairpm_trains_saves_reloads_and_reads_the_answer_slot(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    write_run(tmp_path / "run", 8)
    model_dir = tiny_chat_lm(tmp_path / "lm")
    before = {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(model_dir).named_parameters()}
    in_memory = probabilities_before_save(monkeypatch, PAIRS)
    out = train(cfg(tmp_path, model_dir))

    marker = json.loads((out / "crome_pairpm.json").read_text())
    assert marker["head"] == "lm" and marker["template"]["sha256"] == JUDGE_V1.sha256 and marker["template"]["text"] == JUDGE_V1.text
    record = json.loads((out / "crome_train.json").read_text())
    assert record["arch"] == "pairpm" and record["text_format"] == "pairpm_chat_template"
    assert len([h for h in record["log_history"] if "loss" in h]) == 4
    after = dict(AutoModelForCausalLM.from_pretrained(out).named_parameters())
    assert [k for k in before if not torch.equal(before[k], after[k])], "nothing trained"

    # Reload twice: the same P; and P equals d = logit("A") - logit("B") read at the end of the chat-rendered instruction.
    judge = load_judge(str(out), device="cpu", dtype="float32")
    again = load_judge(str(out), device="cpu", dtype="float32")
    probs = judge.probabilities(PAIRS)
    assert probs == again.probabilities(PAIRS)
    # ... and the P of the trained model in memory, read before it was saved.
    assert same_probabilities(probs, in_memory["probs"]), (probs, in_memory["probs"])
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    a_id, b_id = tok("A", add_special_tokens=False)["input_ids"][0], tok("B", add_special_tokens=False)["input_ids"][0]
    assert marker["answer_token_ids"] == [a_id, b_id]
    for pair, (p_ab, p_ba, _) in zip(PAIRS, probs):
        for first, second, expected in ((pair.chosen, pair.rejected, p_ab), (pair.rejected, pair.chosen, p_ba)):
            text = JUDGE_V1.text.replace("{conversation}", "User: " + pair.prompt[0]["content"])
            text = text.replace("{answer_a}", first).replace("{answer_b}", second)
            ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
            with torch.no_grad():
                logits = model(**tok(ids, return_tensors="pt", add_special_tokens=False)).logits[0, -1]
            assert torch.sigmoid(logits[a_id] - logits[b_id]).item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("head", ["lm", "classifier"])
def test_lora_pairpm_trains_saves_merged_and_reloads_to_the_same_p(tmp_path, monkeypatch, head):
    pytest.importorskip("peft")
    from crome.train.evaluate import load_scorer

    write_run(tmp_path / "run", 4)
    model_dir = tiny_chat_lm(tmp_path / "m") if head == "lm" else tiny_bert(tmp_path / "m", init_std=0.2)
    before = {k: v.detach().clone() for k, v in load_pairpm_model(str(model_dir), head).named_parameters()}
    in_memory = probabilities_before_save(monkeypatch, PAIRS)
    # lora_target_modules unset: peft's "all-linear" (GPT-2's Conv1D included, the output layer excluded), as for BT.
    out = train(cfg(tmp_path, model_dir, pairpm_head=head, lora=True, lora_r=4, lora_alpha=8, max_steps=3, learning_rate=1e-2,
                    per_device_train_batch_size=6, max_length=600 if head == "lm" else 200))  # fmt: skip

    record = json.loads((out / "crome_train.json").read_text())
    assert record["config"]["lora"] is True and len([h for h in record["log_history"] if "loss" in h]) == 3
    assert json.loads((out / "crome_pairpm.json").read_text())["head"] == head
    assert not (out / "adapter_config.json").exists()  # the adapters were merged: a plain model, loaded without peft
    after = dict(load_pairpm_model(str(out), head).named_parameters())
    assert before.keys() == after.keys()
    adapted, embeddings = {
        "lm": ("transformer.h.0.attn.c_attn.weight", "transformer.wte.weight"),
        "classifier": ("bert.encoder.layer.0.attention.self.query.weight", "bert.embeddings.word_embeddings.weight"),
    }[head]  # fmt: skip
    assert not torch.equal(before[adapted], after[adapted])  # LoRA trained and was merged in
    assert torch.equal(before[embeddings], after[embeddings])  # not adapted
    if head == "classifier":
        assert not torch.equal(before["classifier.weight"], after["classifier.weight"])  # the head trains fully

    # Reloaded through crome eval's loader: the same P as the unmerged LoRA model in memory before saving.
    judge, _ = load_scorer(str(out), dtype="float32", device="cpu")
    assert isinstance(judge, PairPMJudge) and judge.head == head
    probs = judge.probabilities(PAIRS)
    assert same_probabilities(probs, in_memory["probs"]), (probs, in_memory["probs"])


def test_pairpm_trains_with_the_loss_normalization_it_is_given(tmp_path):
    # One step on one batch holding every row: the logged loss is the configured reduction of the per-kind mean pair
    # losses logged from the same forward pass (each pair's loss the mean of its two orders).
    write_run(tmp_path / "run", 4)
    model_dir = tiny_bert(tmp_path / "bert", init_std=0.2)
    for normalization in ("pairs", "per_kind"):
        out = train(cfg(tmp_path, model_dir, output_dir=str(tmp_path / normalization), loss_normalization=normalization,
                        tie_weight=0.5, max_steps=1, per_device_train_batch_size=12, max_length=200))  # fmt: skip
        record = json.loads((out / "crome_train.json").read_text())
        assert record["loss"]["normalization"] == normalization and record["loss"]["tie_weight"] == 0.5
        counts = record["data"]["train_rows_by_kind"]
        assert counts == {"original": 4, "causal": 4, "neutral": 4}
        (step,) = [h for h in record["log_history"] if "loss" in h]
        strict_mean = (step["original_loss"] + step["causal_loss"]) / 2  # 4 pairs each
        if normalization == "pairs":
            expected = (8 * strict_mean + 0.5 * 4 * step["tie_loss"]) / 12
        else:
            expected = strict_mean + 0.5 * step["tie_loss"]
        assert step["loss"] == pytest.approx(expected, rel=1e-5)


def test_minilm_pairpm_trains_evaluates_and_filters(tmp_path):
    write_run(tmp_path / "run", 8)
    out = tmp_path / "pm"
    r = CliRunner().invoke(app, [
        "train", str(tmp_path / "run"), "--arch", "pairpm", "--model", str(minilm_dir()), "--out", str(out), "--max-steps", "3",
        "--batch-size", "8", "--lr", "5e-4", "--max-length", "128", "--use_cpu", "True", "--report_to", "none",
    ])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads((out / "crome_pairpm.json").read_text())["head"] == "classifier"

    r = CliRunner().invoke(app, ["eval", str(out), "--data", str(SHARED_DATA / "rm-bench" / "chat_filtered.json"), "--limit", "1",
                                 "--out", str(tmp_path / "rmb.json"), "--device", "cpu"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "rmb.json").read_text())["rm_bench"]["all"]["n"] == 9
    r = CliRunner().invoke(app, ["eval", str(out), "--data", str(tmp_path / "run"), "--perturb", "add_quotes",
                                 "--out", str(tmp_path / "ev.json"), "--device", "cpu"])  # fmt: skip
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "ev.json").read_text())
    assert report["arch"] == "pairpm" and report["pairpm"]["head"] == "classifier"
    assert report["robustness"]["transforms"]["add_quotes"]["covered"] == 16
    pm = report["pairpm"]
    assert pm["subsets"]["neutral"]["n_ties"] == 8 and 0 <= pm["subsets"]["neutral"]["tie_abs_p"] <= 0.5
    judge = load_judge(str(out), device="cpu", max_length=1024)
    pairs = load_eval_pairs(tmp_path / "run")[0]
    probs = judge.probabilities(pairs)
    # The report's figures are the judge's: accuracy on strict pairs, consistency, bias, ties by |P - 0.5|.
    strict = [(x, y) for p, (x, y, _) in zip(pairs, probs) if p.preference == 1.0]
    assert pm["overall"]["accuracy"] == report["overall"]["accuracy"] == pytest.approx(sum((x + 1 - y) / 2 > 0.5 for x, y in strict) / 16)
    ties = [(x, y) for p, (x, y, _) in zip(pairs, probs) if p.preference == 0.5]
    assert pm["overall"]["tie_abs_p"] == pytest.approx(sum(abs((x + 1 - y) / 2 - 0.5) for x, y in ties) / 8)
    every = [(x, y) for x, y, _ in probs]
    assert pm["overall"]["position_consistency"] == pytest.approx(sum((x > 0.5) == (y < 0.5) for x, y in every) / len(every))
    bias = pm["overall"]["position_bias"]
    assert bias == pytest.approx(sum((x + y - 1) / 2 for x, y in every) / len(every))

    # Swapping the answers: the order-averaged P becomes exactly 1 - P; the raw one-order P becomes 1 - P up to the
    # measured position bias (per pair within a small spread around it).
    swapped = [EvalPair(prompt=p.prompt, chosen=p.rejected, rejected=p.chosen, preference=p.preference) for p in pairs]
    p_avg, p_swapped = judge.preference(pairs), judge.preference(swapped)
    assert all(abs(a + b - 1) < 1e-6 for a, b in zip(p_avg, p_swapped))
    raw_swapped = [x for x, _, _ in judge.probabilities(swapped)]
    gaps = [sw - (1 - x) for sw, (x, _, _) in zip(raw_swapped, probs)]
    assert sum(gaps) / len(gaps) == pytest.approx(2 * bias, abs=1e-6)
    assert max(abs(g - 2 * bias) for g in gaps) < 0.1

    # crome filter --rm accepts the PairPM: its margins are logit P.
    from crome.train.filter import filter_run

    summary = filter_run(tmp_path / "run", tmp_path / "filtered", baseline=str(out), keep_margin=0.0, tie_margin=0.0, device="cpu")
    assert summary["filter"]["scored"] == 16
    assert sum(summary["filter"]["kept"].values()) + sum(summary["filter"]["dropped"].values()) == 16


def test_pairpm_encoder_cuts_both_answers_fairly(tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_bert(tmp_path / "b")))
    enc = PairPMEncoder(tok, "classifier", None, 64)
    long_a, short_b = "alpha " * 200, "beta " * 5
    ab, ba = enc.encode_both([{"role": "user", "content": "question " * 100}], long_a, short_b)
    assert len(ab.input_ids) == len(ba.input_ids) == 64
    text = tok.decode(ab.input_ids)
    # Every slot keeps its end marker; the short answer is whole; the long one takes the rest.
    assert text.startswith("[CLS]") and text.endswith("[SEP]") and "response b : " + "beta " * 4 + "beta [SEP]" in text
    assert ab.prompt_cut > 0 and ab.answer_cut == ba.answer_cut > 0 and ab.prompt_cut == ba.prompt_cut
    assert ab.token_type_ids[0] == 0 and ab.token_type_ids[-1] == 1
