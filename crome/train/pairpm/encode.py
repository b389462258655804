"""PairPM inputs: (conversation, answer A, answer B) as one sequence, truncated fairly, in both orders.

Two layouts, chosen by the model's head (see crome.train.pairpm.model):

- `lm` (causal LMs, the paper's setting): the versioned judging instruction
  (crome.train.pairpm.template) with the three slots filled, as the user turn of the model's chat
  template plus its generation prompt (or the instruction plus the template's plain suffix when
  the tokenizer has no chat template). The sequence ends at the answer slot.
- `classifier` (encoders and sequence classifiers): `[CLS] conversation [SEP] Response A: a [SEP]
  Response B: b [SEP]` through the tokenizer's own pair template (segment 0 is the conversation,
  segment 1 both responses; the separator between the two responses is the tokenizer's SEP
  token, or a blank line when it has none); decoders without a pair template get EOS appended.

Fixed text is tokenised once, each slot separately, and the ids are joined, so a slot's tokens do
not depend on its neighbours and truncation can cut inside a slot only. Truncation: when the
sequence would pass `max_length`, the conversation is cut first, from its start (the latest turn
stays), down to a quarter of the budget; the two answers then get equal shares of what is left
(a shorter answer gives its unused share to the other) and are cut from their end, so the end
marker of each answer slot is always there and neither position is favoured. The same cut
applies to both orders. Cut pairs are counted, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from crome.train.data import DataError, KIND_IDS, KINDS, PREFERENCES, as_answer, as_messages, effective_max_length, plain_prompt
from crome.train.pairpm.template import JudgeTemplate

_SENTINEL = "\x1fCROME_SLOT_{}\x1f"
CLASSIFIER_LABELS = ("Response A: ", "Response B: ")


def conversation_text(prompt: list[dict[str, str]]) -> str:
    """The conversation as the judge reads it: `User: ...` / `Assistant: ...` turns (no trailing `Assistant:`)."""
    return plain_prompt(prompt)[: -len("\n\nAssistant:")]


@dataclass(frozen=True)
class PairInput:
    input_ids: list[int]
    token_type_ids: list[int] | None
    prompt_cut: int
    answer_cut: int  # tokens removed from the two answers together


def fit_pair(p: int, a: int, b: int, budget: int) -> tuple[int, int, int]:
    """Tokens kept of (conversation, answer A, answer B): conversation first down to budget // 4, then equal answer shares."""
    if p + a + b <= budget:
        return p, a, b
    floor = min(p, budget // 4)
    room = max(budget - floor, 0)
    half = room // 2
    if a <= half:
        ka, kb = a, min(b, room - a)
    elif b <= half:
        ka, kb = min(a, room - b), b
    else:
        ka = kb = half
    return min(p, budget - ka - kb), ka, kb


class PairPMEncoder:
    """(prompt messages, answer A, answer B) -> ids of one sequence, for the `lm` or `classifier` layout."""

    def __init__(self, tokenizer: Any, head: str, template: JudgeTemplate | None, max_length: int | None, *, model: Any | None = None):
        if head not in ("lm", "classifier"):
            raise ValueError(f"PairPM head must be lm or classifier, got {head!r}")
        self.tokenizer, self.head, self.template = tokenizer, head, template
        self.max_length = effective_max_length(max_length, tokenizer, model)
        self.chat = head == "lm" and bool(getattr(tokenizer, "chat_template", None))
        # (ids, token type) for fixed pieces; a str names a slot.
        self.layout: list[tuple[list[int], int] | str] = self._lm_layout() if head == "lm" else self._classifier_layout()
        self.fixed = sum(len(x[0]) for x in self.layout if not isinstance(x, str))
        self.with_types = head == "classifier" and "token_type_ids" in getattr(tokenizer, "model_input_names", ())
        if self.max_length is not None and self.max_length < self.fixed + 12:
            raise ValueError(f"max_length {self.max_length} leaves no room for text: the PairPM layout alone takes {self.fixed} tokens")

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _lm_layout(self) -> list[Any]:
        if self.template is None:
            raise ValueError("an lm-head PairPM needs a judging template")
        pieces = self.template.pieces()
        text = "".join(_SENTINEL.format(p) if i % 2 else p for i, p in enumerate(pieces))
        if self.chat:
            rendered = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        else:
            rendered = text + self.template.plain_suffix
        layout: list[Any] = []
        for slot in ("conversation", "answer_a", "answer_b"):
            marker = _SENTINEL.format(slot)
            if rendered.count(marker) != 1:
                raise ValueError(f"the chat template changed the judging instruction's slot {slot}; PairPM needs it verbatim")
            head, rendered = rendered.split(marker)
            layout += [(self._ids(head), 0), slot]
        return layout + [(self._ids(rendered), 0)]

    def _classifier_layout(self) -> list[Any]:
        tok = self.tokenizer
        sep = [tok.sep_token_id] if tok.sep_token_id is not None else self._ids("\n\n")
        label_a, label_b = (self._ids(x) for x in CLASSIFIER_LABELS)
        joined, types, i, j = _pair_specials(tok)
        layout: list[Any] = [(joined[:i], types[0] if types else 0), "conversation", (joined[i + 1 : j], types[j])]
        layout += [(label_a, types[j]), "answer_a", (sep + label_b, types[j]), "answer_b", (joined[j + 1 :], types[-1])]
        if len(joined) == 2 and tok.eos_token_id is not None:
            layout.append(([tok.eos_token_id], types[-1]))  # decoders read the logit at the last token: a fixed end marker
        return layout

    def encode(self, conv_ids: list[int], a_ids: list[int], b_ids: list[int], cut: tuple[int, int, int] | None = None) -> PairInput:
        """Join the layout with the slot ids; `cut` (from `fit_pair`) keeps the same truncation across orders."""
        kp, ka, kb = cut or self.fit(len(conv_ids), len(a_ids), len(b_ids))
        slots = {"conversation": conv_ids[len(conv_ids) - kp :], "answer_a": a_ids[:ka], "answer_b": b_ids[:kb]}
        ids: list[int] = []
        types: list[int] = []
        current = 0
        for item in self.layout:
            if isinstance(item, str):
                ids += slots[item]
                types += [current] * len(slots[item])
            else:
                ids += item[0]
                current = item[1]
                types += [current] * len(item[0])
        return PairInput(ids, types if self.with_types else None, len(conv_ids) - kp, len(a_ids) - ka + len(b_ids) - kb)

    def fit(self, p: int, a: int, b: int) -> tuple[int, int, int]:
        if self.max_length is None:
            return p, a, b
        return fit_pair(p, a, b, self.max_length - self.fixed)

    def encode_both(self, prompt: list[dict[str, str]], first: str, second: str) -> tuple[PairInput, PairInput]:
        """(first, second) and (second, first) orders of one pair, with the same fair cut."""
        conv, x, y = self.tokenizer([conversation_text(prompt), first or " ", second or " "], add_special_tokens=False)["input_ids"]
        x, y = (x if first else []), (y if second else [])
        kp, kx, ky = self.fit(len(conv), len(x), len(y))
        return self.encode(conv, x, y, (kp, kx, ky)), self.encode(conv, y, x, (kp, ky, kx))


def _pair_specials(tok: Any) -> tuple[list[int], list[int], int, int]:
    """Where the tokenizer's pair template puts its special tokens: (ids, token types, index of segment 1, of segment 2).

    Read back from the template itself, applied to two one-token segments (-1 and -2 stand for them).
    """
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        import tokenizers

        backend = tokenizers.Tokenizer.from_str(backend.to_str())  # a private copy: tokenizer.json may switch padding on
        backend.no_padding()
        backend.no_truncation()
        a, b = backend.encode("a", add_special_tokens=False), backend.encode("b", add_special_tokens=False)
        if len(a.ids) == 1 and len(b.ids) == 1:
            enc = backend.post_process(a, b, add_special_tokens=True)
            ids = list(enc.ids)
            i = ids.index(a.ids[0])
            j = ids.index(b.ids[0], i + 1)
            ids[i], ids[j] = -1, -2
            return ids, list(enc.type_ids), i, j
    build = getattr(tok, "build_inputs_with_special_tokens", None)
    if build is not None:
        try:
            ids = build([-1], [-2])
            types = tok.create_token_type_ids_from_sequences([-1], [-2])
            return ids, (types if len(types) == len(ids) else [0] * len(ids)), ids.index(-1), ids.index(-2)
        except (AttributeError, NotImplementedError, ValueError):
            pass
    return [-1, -2], [0, 1], 0, 1


# ---------------------------------------------------------------- datasets and batches


def _tokenize_batch(batch: dict[str, list], indices: list[int], encoder: PairPMEncoder) -> dict[str, list]:
    out: dict[str, list] = {k: [] for k in ("ab_input_ids", "ba_input_ids", "preference", "kind_id", "length", "prompt_truncated", "answer_truncated")}
    if encoder.with_types:
        out["ab_token_type_ids"], out["ba_token_type_ids"] = [], []
    ids = batch.get("id") or [None] * len(indices)
    for j, idx in enumerate(indices):
        where = f"row {idx}" + (f" (id {ids[j]})" if ids[j] else "")
        prompt = as_messages(batch["prompt"][j], where=f"{where}: prompt")
        chosen, rejected = as_answer(batch["chosen"][j], where=f"{where}: chosen"), as_answer(batch["rejected"][j], where=f"{where}: rejected")
        pref, kind = batch["preference"][j], batch["kind"][j]
        if pref not in PREFERENCES:
            raise DataError(f"{where}: preference must be 1.0 or 0.5, got {pref!r}")
        if kind not in KIND_IDS:
            raise DataError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        ab, ba = encoder.encode_both(prompt, chosen, rejected)
        out["ab_input_ids"].append(ab.input_ids)
        out["ba_input_ids"].append(ba.input_ids)
        if encoder.with_types:
            out["ab_token_type_ids"].append(ab.token_type_ids)
            out["ba_token_type_ids"].append(ba.token_type_ids)
        out["preference"].append(float(pref))
        out["kind_id"].append(KIND_IDS[kind])
        out["length"].append(len(ab.input_ids))
        out["prompt_truncated"].append(ab.prompt_cut > 0)
        out["answer_truncated"].append(ab.answer_cut > 0)
    return out


def tokenize_pairpm(dataset: Any, encoder: PairPMEncoder, *, num_proc: int | None = None, desc: str = "train") -> Any:
    """One row per pair holding both orders: `ab` has the chosen answer first, `ba` second."""
    return dataset.map(
        _tokenize_batch, with_indices=True, batched=True, fn_kwargs={"encoder": encoder},
        remove_columns=dataset.column_names, num_proc=num_proc, desc=f"Tokenising {desc} pairs (PairPM, both orders)",
    )


def pad_sequences(ids: list[list[int]], types: list[list[int]] | None, pad_id: int, *, left: bool, multiple: int | None = None) -> dict[str, torch.Tensor]:
    """Pad into input_ids / attention_mask (/ token_type_ids); left padding puts every answer slot at position -1."""
    width = max(len(s) for s in ids)
    if multiple:
        width = -(-width // multiple) * multiple
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    token_types = torch.zeros((len(ids), width), dtype=torch.long) if types is not None else None
    for i, s in enumerate(ids):
        span = slice(width - len(s), width) if left else slice(0, len(s))
        input_ids[i, span] = torch.tensor(s, dtype=torch.long)
        mask[i, span] = 1
        if token_types is not None:
            token_types[i, span] = torch.tensor(types[i], dtype=torch.long)
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if token_types is not None:
        batch["token_type_ids"] = token_types
    return batch


@dataclass
class PairPMCollator:
    """Both orders of B pairs as 2B sequences (ab first, then ba) in one forward pass, with preference and kind."""

    pad_token_id: int
    left: bool
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [f["ab_input_ids"] for f in features] + [f["ba_input_ids"] for f in features]
        types = None
        if features[0].get("ab_token_type_ids") is not None:
            types = [f["ab_token_type_ids"] for f in features] + [f["ba_token_type_ids"] for f in features]
        batch = pad_sequences(ids, types, self.pad_token_id, left=self.left, multiple=self.pad_to_multiple_of)
        batch["preference"] = torch.tensor([f["preference"] for f in features], dtype=torch.float32)
        batch["kind"] = torch.tensor([f["kind_id"] for f in features], dtype=torch.long)
        return batch
