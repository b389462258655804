"""PairPM training on `transformers.Trainer`: both orders of every pair in one forward pass, the composite loss on d.

The data, `CromeConfig` (with `--arch pairpm`), LoRA, accelerate/DeepSpeed and every
`TrainingArguments` flag work as for Bradley-Terry training; only the inputs (one sequence per
order, crome.train.pairpm.encode), the head (crome.train.pairpm.model) and the loss
(crome.train.pairpm.loss, read by the same `--tie-weight` and `--loss-normalization`) differ.
Logged metrics are per kind on the order-averaged logit (d_ab - d_ba) / 2, plus
`position_consistency`: the share of pairs whose verdict survives the swap.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from crome import __version__
from crome.train.config import CromeConfig
from crome.train.data import KINDS, load_preference_data, prepare_tokenizer
from crome.train.pairpm.encode import PairPMCollator, PairPMEncoder, tokenize_pairpm
from crome.train.pairpm.loss import pairpm_loss, pairpm_losses
from crome.train.pairpm.model import answer_token_ids, detect_head, load_pairpm_model, pairwise_logits, write_marker
from crome.train.pairpm.template import get_template
from crome.train.trainer import CONFIG_FILE, CromeRewardTrainer, _disable_dropout, _versions, save_trained, tokenize_splits

log = logging.getLogger(__name__)

PAIRPM_COLUMNS = ["ab_input_ids", "ba_input_ids", "ab_token_type_ids", "ba_token_type_ids", "preference", "kind_id", "length"]


class PairPMTrainer(CromeRewardTrainer):
    """`CromeRewardTrainer` whose batches hold both orders of each pair and whose d is a pairwise logit."""

    def __init__(self, *args: Any, head: str, answer_ids: tuple[int, int] | None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.head, self.answer_ids = head, answer_ids
        self._consistent = {"train": [0.0, 0.0], "eval": [0.0, 0.0]}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        preference, kind = inputs.pop("preference"), inputs.pop("kind")
        d_ab, d_ba = torch.chunk(pairwise_logits(model, inputs, self.head, self.answer_ids), 2)
        loss = pairpm_loss(d_ab, d_ba, preference, tie_weight=self.args.tie_weight, normalization=self.args.loss_normalization)
        with torch.no_grad():
            d = 0.5 * (d_ab - d_ba)
            cols = torch.stack([torch.ones_like(d), (d > 0).to(d.dtype), pairpm_losses(d_ab, d_ba, preference), d.abs()], dim=1)
            stats = self.accelerator.reduce(F.one_hot(kind, len(KINDS)).to(d.dtype).T @ cols, reduction="sum")
            self._stats["train" if model.training else "eval"] += stats.detach().cpu().double()
            strict = preference > 0.75
            same = self.accelerator.reduce(torch.stack([((d_ab > 0) != (d_ba > 0))[strict].sum().float(), strict.sum().float()]), reduction="sum")
            counts = self._consistent["train" if model.training else "eval"]
            counts[0] += float(same[0])
            counts[1] += float(same[1])
        return (loss, {"d": torch.stack([d_ab, d_ba], dim=-1)}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        agree, n = self._consistent[mode]
        if n:
            logs[("eval_" if mode == "eval" else "") + "position_consistency"] = agree / n
        self._consistent[mode] = [0.0, 0.0]
        super().log(logs, start_time)

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = list(PAIRPM_COLUMNS)


def _wrap_lora(model: Any, config: CromeConfig, head: str) -> Any:
    try:
        from peft import LoraConfig, TaskType, get_peft_model
    except ImportError as e:  # pragma: no cover - peft is an optional extra
        raise ImportError("--lora needs peft: pip install 'crome[lora]'") from e
    task = TaskType.CAUSAL_LM if head == "lm" else TaskType.SEQ_CLS  # SEQ_CLS keeps the score head trainable and saved
    lora = LoraConfig(
        task_type=task, r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules or "all-linear",
    )
    return get_peft_model(model, lora)


def train(config: CromeConfig) -> Path:
    """Train a PairPM on `config.dataset`; save the model, its tokenizer, `crome_pairpm.json` and `crome_train.json`."""
    from transformers import AutoTokenizer, set_seed

    if not config.model_name_or_path or not config.dataset:
        raise ValueError("model_name_or_path and dataset are required")
    head = detect_head(config.model_name_or_path, config.pairpm_head, trust_remote_code=config.trust_remote_code)
    template = get_template(config.judge_template) if head == "lm" else None
    set_seed(config.seed)
    data = load_preference_data(
        config.dataset, kinds=config.kinds, eval_split=config.eval_split, eval_fraction=config.eval_fraction,
        seed=config.seed, max_rows=config.max_train_rows,
    )
    tokenizer = AutoTokenizer.from_pretrained(config.model_name_or_path, trust_remote_code=config.trust_remote_code)
    model = load_pairpm_model(config.model_name_or_path, head, dtype=config.model_dtype, trust_remote_code=config.trust_remote_code)
    prepare_tokenizer(tokenizer, model)
    answer_ids = answer_token_ids(tokenizer, template) if template is not None else None
    encoder = PairPMEncoder(tokenizer, head, template, config.max_length, model=model)

    train_ds, eval_ds, truncation = tokenize_splits(
        config, data, lambda ds, desc: tokenize_pairpm(ds, encoder, num_proc=config.dataset_num_proc, desc=desc), encoder.max_length,
        sides="conversation side, %d answers too; answers get equal shares")

    if config.lora:
        model = _wrap_lora(model, config, head)
    if config.disable_dropout:
        _disable_dropout(model)
    trainer = PairPMTrainer(
        model=model, args=config, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
        data_collator=PairPMCollator(tokenizer.pad_token_id, left=head == "lm", pad_to_multiple_of=config.pad_to_multiple_of),
        head=head, answer_ids=answer_ids,
    )
    result = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    eval_metrics = trainer.evaluate() if eval_ds is not None else {}

    out = save_trained(trainer, config, tokenizer)
    if trainer.is_world_process_zero():
        write_marker(out, head, template, answer_ids, encoder.max_length)
        record = {
            "crome_version": __version__,
            "arch": "pairpm",
            "pairpm": {"head": head, "template": template.id if template else None, "chat_template": encoder.chat},
            "model": config.model_name_or_path,
            "data": data.info,
            "text_format": "pairpm_" + ("chat_template" if encoder.chat else ("plain_judge" if head == "lm" else "pair_segments")),
            "truncation": truncation,
            "loss": {"tie_weight": config.tie_weight, "normalization": config.loss_normalization,
                     "orders": "both (ab target p, ba target 1 - p); a pair's loss is the mean of its two orders"},
            "train_metrics": result.metrics,
            "eval_metrics": eval_metrics,
            "log_history": trainer.state.log_history,
            "versions": _versions(),
            "config": config.to_dict(),
        }
        (out / CONFIG_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return out
