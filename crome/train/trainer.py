"""Reward-model training with the Crome loss on `transformers.Trainer`.

`CromeConfig` (in crome.train.config) subclasses `TrainingArguments` and adds only crome's own
fields, so every Trainer feature (accelerate launch, DeepSpeed, FSDP, bf16, gradient accumulation,
checkpoints) works as usual; `CromeRewardTrainer` only replaces `compute_loss` and logs per-kind metrics.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler

from crome import __version__
from crome.train.config import DTYPES, CromeConfig
from crome.train.data import KINDS, PairCollator, PairEncoder, load_preference_data, prepare_tokenizer, tokenize_pairs, truncation_report
from crome.train.loss import crome_loss, pair_losses

log = logging.getLogger(__name__)

CONFIG_FILE = "crome_train.json"
# Columns of a tokenised pair dataset that the collator reads (Trainer would drop them as "unused").
PAIR_COLUMNS = [
    "chosen_input_ids", "rejected_input_ids", "chosen_token_type_ids", "rejected_token_type_ids",
    "preference", "kind_id", "length",
]


def summarize(stats: torch.Tensor) -> dict[str, float]:
    """Per-kind metrics from summed stats rows [n, correct, loss, |d|] (one row per kind)."""
    out: dict[str, float] = {}
    for i, kind in enumerate(KINDS):
        n, correct, loss, abs_d = stats[i].tolist()
        if n == 0:
            continue
        if kind == "neutral":
            out["neutral_abs_margin"] = abs_d / n
            out["tie_loss"] = loss / n
        else:
            out[f"{kind}_accuracy"] = correct / n
            out[f"{kind}_loss"] = loss / n
    n_strict = stats[:2, 0].sum().item()
    if n_strict:
        out["strict_accuracy"] = stats[:2, 1].sum().item() / n_strict
    return out


class CromeRewardTrainer(Trainer):
    """`Trainer` whose loss is the Crome objective over chosen/rejected stacked in one forward pass."""

    args: CromeConfig
    # compute_loss returns a per-batch mean; Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Eval must call compute_loss even though there are no `labels`.
        self.can_return_loss = True
        self.label_names = []
        self._stats = {"train": torch.zeros(len(KINDS), 4, dtype=torch.float64), "eval": torch.zeros(len(KINDS), 4, dtype=torch.float64)}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        preference, kind = inputs.pop("preference"), inputs.pop("kind")
        if getattr(self.accelerator.unwrap_model(model).config, "use_cache", None) is not None:
            inputs["use_cache"] = False
        rewards = model(**inputs).logits.squeeze(-1).float()
        chosen, rejected = torch.chunk(rewards, 2)
        loss = crome_loss(chosen, rejected, preference, tie_weight=self.args.tie_weight, center_rewards=self.args.center_rewards,
                          normalization=self.args.loss_normalization)

        with torch.no_grad():
            d = chosen - rejected
            cols = torch.stack([torch.ones_like(d), (d > 0).to(d.dtype), pair_losses(d, preference), d.abs()], dim=1)
            stats = F.one_hot(kind, len(KINDS)).to(d.dtype).T @ cols
            stats = self.accelerator.reduce(stats, reduction="sum")
            self._stats["train" if model.training else "eval"] += stats.detach().cpu().double()
        return (loss, {"rewards": torch.stack([chosen, rejected], dim=-1)}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        metrics = summarize(self._stats[mode])
        self._stats[mode].zero_()
        logs.update({f"eval_{k}" if mode == "eval" else k: v for k, v in metrics.items()})
        super().log(logs, start_time)

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = list(PAIR_COLUMNS)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and "length" in getattr(dataset, "column_names", ()):
            # A plain list: indexing a datasets Column element by element inside the sampler is slow.
            return LengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps, lengths=list(dataset["length"])
            )
        return super()._get_train_sampler(train_dataset)


def load_reward_model(path: str, *, dtype: str = "float32", trust_remote_code: bool = False) -> Any:
    """`AutoModelForSequenceClassification` with one label; a base LM or a classifier with other labels gets a fresh head."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, ignore_mismatched_sizes=True
    )


def _wrap_lora(model: Any, config: CromeConfig) -> Any:
    try:
        from peft import LoraConfig, TaskType, get_peft_model
    except ImportError as e:  # pragma: no cover - peft is an optional extra
        raise ImportError("--lora needs peft: pip install 'crome[lora]'") from e
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,  # keeps the score/classifier head fully trainable and saved
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules or "all-linear",
    )
    return get_peft_model(model, lora)


def _disable_dropout(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def _versions() -> dict[str, str]:
    import datasets
    import transformers

    return {"crome": __version__, "transformers": transformers.__version__, "torch": torch.__version__, "datasets": datasets.__version__}


def tokenize_splits(config: CromeConfig, data: Any, tokenize: Any, max_length: int | None, *, sides: str) -> tuple[Any, Any, dict]:
    """Tokenise the train and eval splits (`tokenize(dataset, desc)`), report and log their truncated pairs.

    `sides` names the two truncation counts in the log line, e.g. "prompt side, %d answer too".
    """
    with config.main_process_first(desc="tokenising pairs"):
        train_ds = tokenize(data.train, "train")
        eval_ds = tokenize(data.eval, "eval") if data.eval is not None and len(data.eval) else None
    truncation = {"train": truncation_report(train_ds, max_length)}
    if eval_ds is not None:
        truncation["eval"] = truncation_report(eval_ds, max_length)
    for split, rep in truncation.items():
        if rep["truncated_pairs"]:
            log.warning(f"%s: %d of %d pairs truncated to %s tokens (%d {sides})",
                        split, rep["truncated_pairs"], rep["pairs"], rep["max_length"], rep["prompt_truncated"], rep["answer_truncated"])
    return train_ds, eval_ds, truncation


def save_trained(trainer: Any, config: CromeConfig, tokenizer: Any) -> Path:
    """Save the trained model and tokenizer to `output_dir`; a LoRA model merged into a plain one."""
    out = Path(config.output_dir)
    if config.lora:
        # Save a plain model so `crome eval` / `crome filter` / other tools load it without peft.
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        if trainer.is_world_process_zero():
            merged.save_pretrained(out)
            tokenizer.save_pretrained(out)
    else:
        trainer.save_model(str(out))
    return out


def train(config: CromeConfig) -> Path:
    """Train a reward model on `config.dataset` and save it, its tokenizer and `crome_train.json` to `output_dir`."""
    from transformers import AutoTokenizer, set_seed

    if not config.model_name_or_path or not config.dataset:
        raise ValueError("model_name_or_path and dataset are required")
    set_seed(config.seed)  # before loading: a fresh score head is randomly initialised
    data = load_preference_data(
        config.dataset, kinds=config.kinds, eval_split=config.eval_split, eval_fraction=config.eval_fraction,
        seed=config.seed, max_rows=config.max_train_rows,
    )
    tokenizer = AutoTokenizer.from_pretrained(config.model_name_or_path, trust_remote_code=config.trust_remote_code)
    model = load_reward_model(config.model_name_or_path, dtype=config.model_dtype, trust_remote_code=config.trust_remote_code)
    prepare_tokenizer(tokenizer, model)
    encoder = PairEncoder(tokenizer, config.max_length, model=model)

    train_ds, eval_ds, truncation = tokenize_splits(config, data, lambda ds, desc: tokenize_pairs(
        ds, encoder, num_proc=config.dataset_num_proc, desc=desc), encoder.max_length, sides="prompt side, %d answer too")

    if config.lora:
        model = _wrap_lora(model, config)
    if config.disable_dropout:
        _disable_dropout(model)

    trainer = CromeRewardTrainer(
        model=model,
        args=config,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        data_collator=PairCollator(tokenizer.pad_token_id, config.pad_to_multiple_of),
    )
    result = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    eval_metrics = trainer.evaluate() if eval_ds is not None else {}

    out = save_trained(trainer, config, tokenizer)
    if trainer.is_world_process_zero():
        record = {
            "crome_version": __version__,
            "model": config.model_name_or_path,
            "data": data.info,
            "text_format": "chat_template" if encoder.chat else "plain",
            "truncation": truncation,
            "loss": {"tie_weight": config.tie_weight, "center_rewards": config.center_rewards,
                     "normalization": config.loss_normalization},
            "train_metrics": result.metrics,
            "eval_metrics": eval_metrics,
            "log_history": trainer.state.log_history,
            "versions": _versions(),
            "config": config.to_dict(),
        }
        (out / CONFIG_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return out
