"""Scoring with a trained PairPM: P(A > B) averaged over both orders, position consistency, the margin the reports use.

For a pair (A, B) the judge reads both orders: P_ab = sigmoid(d(A, B)) and P_ba = sigmoid(d(B, A)),
and reports P = (P_ab + 1 - P_ba) / 2, so position bias cancels: P(B, A) = 1 - P(A, B) exactly.
Reports that take a margin (accuracy, RewardBench sections, `--perturb`, `crome filter`) get
logit(P): its sign is the verdict and its units are those of a Bradley-Terry margin, so a
filter threshold tau reads the same way. `position_bias` is the mean of (P_ab + P_ba - 1) / 2:
how far the raw model leans to the first slot (0: none).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import torch

from crome.train.data import prepare_tokenizer
from crome.train.pairpm.encode import PairPMCollator, PairPMEncoder
from crome.train.pairpm.model import DTYPES, load_pairpm_model, pairwise_logits, read_marker
from crome.train.pairpm.template import JudgeTemplate
from crome.train.pairs import EvalPair, as_eval_pair

ENCODE_CHUNK = 2048  # pairs encoded at a time: bounds the token ids held in memory


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


class PairPMJudge:
    """A PairPM and its tokenizer: P(A > B) for pairs, memoised by (prompt, A, B); callable as a margin `score_fn`."""

    def __init__(self, model: Any, tokenizer: Any, record: dict[str, Any], *, batch_size: int = 16, max_length: int | None = 1024):
        self.model, self.tokenizer, self.record = model, tokenizer, record
        self.head = record["head"]
        self.template = JudgeTemplate.from_record(record["template"]) if record.get("template") else None
        self.answer_ids = tuple(record["answer_token_ids"]) if record.get("answer_token_ids") else None
        prepare_tokenizer(tokenizer, model)
        self.encoder = PairPMEncoder(tokenizer, self.head, self.template, max_length, model=model)
        self.max_length = max_length
        self.batch_size = batch_size
        self._collate = PairPMCollator(tokenizer.pad_token_id, left=self.head == "lm")
        self._cache: dict[tuple, tuple[float, float, bool]] = {}

    def configure(self, batch_size: int, max_length: int | None) -> "PairPMJudge":
        """Use these settings from now on; a new max_length re-encodes (the memo is cleared)."""
        self.batch_size = batch_size
        if max_length != self.max_length:
            self.encoder = PairPMEncoder(self.tokenizer, self.head, self.template, max_length, model=self.model)
            self.max_length = max_length
            self._cache.clear()
        return self

    @property
    def config(self) -> Any:
        return self.model.config

    def __len__(self) -> int:
        return len(self._cache)

    @staticmethod
    def _key(p: EvalPair) -> tuple:
        return tuple((m["role"], m["content"]) for m in p.prompt), p.chosen, p.rejected

    @torch.inference_mode()
    def _score(self, todo: list[EvalPair]) -> None:
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        for start in range(0, len(todo), ENCODE_CHUNK):
            chunk = todo[start : start + ENCODE_CHUNK]
            encoded = [self.encoder.encode_both(p.prompt, p.chosen, p.rejected) for p in chunk]
            order = sorted(range(len(chunk)), key=lambda i: -len(encoded[i][0].input_ids))
            per_batch = max(1, self.batch_size // 2)  # two sequences per pair
            for b in range(0, len(order), per_batch):
                idx = order[b : b + per_batch]
                feats = [
                    {"ab_input_ids": encoded[i][0].input_ids, "ba_input_ids": encoded[i][1].input_ids,
                     "ab_token_type_ids": encoded[i][0].token_type_ids, "ba_token_type_ids": encoded[i][1].token_type_ids,
                     "preference": 1.0, "kind_id": 0}
                    for i in idx
                ]  # fmt: skip
                batch = self._collate(feats)
                batch.pop("preference"), batch.pop("kind")
                d = pairwise_logits(self.model, {k: v.to(device) for k, v in batch.items()}, self.head, self.answer_ids)
                d_ab, d_ba = torch.chunk(d.cpu(), 2)
                for i, x, y in zip(idx, torch.sigmoid(d_ab).tolist(), torch.sigmoid(d_ba).tolist()):
                    cut = encoded[i][0].prompt_cut > 0 or encoded[i][0].answer_cut > 0
                    self._cache[self._key(chunk[i])] = (x, y, cut)
        self.model.train(was_training)

    def probabilities(self, pairs: Iterable[Any]) -> list[tuple[float, float, bool]]:
        """(P_ab, P_ba, truncated) for each pair: P(chosen > rejected) read with chosen first, and P(rejected > chosen) with it second."""
        normalised = [as_eval_pair(p, where=f"pair {i}") for i, p in enumerate(pairs)]
        todo: dict[tuple, EvalPair] = {}
        for p in normalised:
            key = self._key(p)
            if key not in self._cache and key not in todo:
                todo[key] = p
        if todo:
            self._score(list(todo.values()))
        return [self._cache[self._key(p)] for p in normalised]

    def preference(self, pairs: Iterable[Any]) -> list[float]:
        """P(chosen > rejected), averaged over both orders."""
        return [(x + 1.0 - y) / 2 for x, y, _ in self.probabilities(pairs)]

    def margins(self, pairs: Iterable[Any]) -> tuple[list[float], list[bool]]:
        """logit of the order-averaged P(chosen > rejected), and whether the pair was truncated."""
        probs = self.probabilities(pairs)
        return [_logit((x + 1.0 - y) / 2) for x, y, _ in probs], [c for _, _, c in probs]

    def __call__(self, pairs: Iterable[Any]) -> list[float]:
        return self.margins(pairs)[0]


def position_report(pairs: Sequence[EvalPair], probs: Sequence[tuple[float, float, bool]]) -> dict[str, Any]:
    """Position consistency, position bias, mean P on strict pairs and |P - 0.5| on ties."""
    strict = [(x, y) for p, (x, y, _) in zip(pairs, probs) if p.preference != 0.5]
    ties = [(x, y) for p, (x, y, _) in zip(pairs, probs) if p.preference == 0.5]
    every = strict + ties
    out: dict[str, Any] = {"n": len(every)}
    if every:
        # The verdict survives the swap when the model prefers the same answer in both orders.
        out["position_consistency"] = sum((x > 0.5) == (y < 0.5) for x, y in every) / len(every)
        out["position_bias"] = sum((x + y - 1.0) / 2 for x, y in every) / len(every)
    if strict:
        out.update(n_strict=len(strict), accuracy=sum((x + 1 - y) / 2 > 0.5 for x, y in strict) / len(strict),
                   mean_p=sum((x + 1 - y) / 2 for x, y in strict) / len(strict))  # fmt: skip
    if ties:
        out.update(n_ties=len(ties), tie_abs_p=sum(abs((x + 1 - y) / 2 - 0.5) for x, y in ties) / len(ties))
    return out


def load_judge(model_path: str, *, dtype: str = "auto", device: str | None = None, trust_remote_code: bool = False,
               batch_size: int = 16, max_length: int | None = 1024) -> PairPMJudge:  # fmt: skip
    """A saved PairPM (a folder with crome_pairpm.json, or a Hub id) ready to score."""
    from transformers import AutoTokenizer

    record = read_marker(model_path)
    if record is None:
        raise ValueError(f"{model_path}: not a PairPM (no crome_pairpm.json)")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    model = load_pairpm_model(model_path, record["head"], dtype=dtype, trust_remote_code=trust_remote_code)
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.eval()
    return PairPMJudge(model, tokenizer, record, batch_size=batch_size, max_length=max_length)
