"""PairPM models: which head, loading, the pairwise logit d, and the record saved beside the weights.

- `lm`: an `AutoModelForCausalLM`; d = logit(answer token A) - logit(answer token B) at the last
  position (the answer slot). Sequences are left-padded with explicit position ids, and only the
  last position's logits are computed (`logits_to_keep=1`), so a 256k vocabulary costs one row.
- `classifier`: an `AutoModelForSequenceClassification` with one label; its logit is d.

`auto` picks `lm` for checkpoints whose architecture is a causal LM (`...ForCausalLM`,
`...LMHeadModel`, `...ForConditionalGeneration`) and `classifier` for everything else (encoders,
checkpoints that already have a sequence-classification head).

A trained PairPM folder holds `crome_pairpm.json` (`MARKER`): the head, the answer token ids and,
for `lm`, the full judging template with its version and sha256. `crome eval` and `crome filter`
recognise a PairPM by that file.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch

from crome.train.pairpm.template import JudgeTemplate

MARKER = "crome_pairpm.json"
LM_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def detect_head(model_path: str, requested: str = "auto", *, trust_remote_code: bool = False) -> str:
    """`lm` or `classifier` for a checkpoint (see the module docstring)."""
    if requested in ("lm", "classifier"):
        return requested
    if requested != "auto":
        raise ValueError(f"--pairpm-head must be auto, lm or classifier, got {requested!r}")
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    return "lm" if any(a.endswith(LM_SUFFIXES) for a in (config.architectures or [])) else "classifier"


def load_pairpm_model(model_path: str, head: str, *, dtype: str = "float32", trust_remote_code: bool = False) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if head == "lm":
        return AutoModelForCausalLM.from_pretrained(model_path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code)
    return AutoModelForSequenceClassification.from_pretrained(
        model_path, num_labels=1, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, ignore_mismatched_sizes=True
    )


def answer_token_ids(tokenizer: Any, template: JudgeTemplate) -> tuple[int, int]:
    """The single token ids of the template's two answers (A, B); an error when either is not one token."""
    ids = []
    for text in template.answer_tokens:
        got = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(got) != 1:
            raise ValueError(f"answer {text!r} of template {template.id} is {len(got)} tokens for this tokenizer; PairPM needs one")
        ids.append(got[0])
    if ids[0] == ids[1]:
        raise ValueError(f"answers {template.answer_tokens} map to the same token")
    return ids[0], ids[1]


def _accepts(model: Any, name: str) -> bool:
    base = getattr(model, "get_base_model", lambda: model)()  # peft wraps the HF model
    params = inspect.signature(base.forward).parameters
    return name in params


def pairwise_logits(model: Any, batch: dict[str, torch.Tensor], head: str, answer_ids: tuple[int, int] | None) -> torch.Tensor:
    """d for each sequence of a padded batch (left-padded for `lm`)."""
    if head == "classifier":
        return model(**batch).logits[:, 0].float()
    mask = batch["attention_mask"]
    inputs = {"input_ids": batch["input_ids"], "attention_mask": mask, "use_cache": False}
    if _accepts(model, "position_ids"):
        inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    if _accepts(model, "logits_to_keep"):
        inputs["logits_to_keep"] = 1
    logits = model(**inputs).logits[:, -1, :]
    a, b = answer_ids  # type: ignore[misc]
    return (logits[:, a] - logits[:, b]).float()


def write_marker(out: Path, head: str, template: JudgeTemplate | None, answer_ids: tuple[int, int] | None, max_length: int | None) -> None:
    record = {
        "kind": "pairpm",
        "head": head,
        "template": template.record() if template is not None else None,
        "answer_token_ids": list(answer_ids) if answer_ids else None,
        "max_length": max_length,
        "orders": "trained on both orders; scored as the mean of P(A > B) and 1 - P(B > A)",
    }
    (out / MARKER).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_marker(model_path: str) -> dict[str, Any] | None:
    """The PairPM record of a local folder or Hub id, or None when the model is not a PairPM (a BT reward model)."""
    local = Path(model_path)
    if local.is_dir():
        f = local / MARKER
        return json.loads(f.read_text()) if f.is_file() else None
    try:
        from transformers.utils import cached_file

        f = cached_file(model_path, MARKER, _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False)
    except (OSError, ValueError):
        return None
    return json.loads(Path(f).read_text()) if f else None
