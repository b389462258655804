"""Score reward models on preference pairs: pairwise accuracy per subset, RewardBench sections, ties by |d|.

Public API (reused by filtering and robustness experiments):
    load_scorer(model_path, dtype="auto", device=None) -> (model, tokenizer)
    score_pairs(model, tokenizer, pairs, batch_size=16, max_length=1024) -> list[float]   # d per pair
    score_pairs_with_truncation(...) -> (margins, truncated flags)
    reward_scores(model, tokenizer, prompts, answers, ...) -> (rewards, truncated flags)
    evaluate_pairs(model, tokenizer, pairs, ...) -> report dict
    evaluate_model(model_path, data_paths, ..., perturb=None, one_sided=None) -> report dict (what `crome eval` writes)
    RewardCache(model, tokenizer, ...): r(prompt, answer) memoised across calls (clean and perturbed pairs share answers)
    evaluate_robustness(model, tokenizer, pairs, names, seed, one_sided, ...) -> the `robustness` part of the report

The test pairs themselves (EvalPair, load_eval_pairs) are in crome.train.pairs; the perturbations in
crome.train.robustness.

A strict pair counts as correct only when d = r(chosen) - r(rejected) > 0 (as RewardBench: an
exact tie is a miss). A tie pair (preference 0.5) is never a win or a loss: it is reported by
mean |d| (0 is perfect invariance) and by the tie loss.

RewardBench sections (Chat, Chat Hard, Safety, Reasoning) follow allenai/reward-bench
`rewardbench/constants.py` (commit a32e272): a section is the average of its subsets' accuracies
weighted by the fixed EXAMPLE_COUNTS, over the subsets present. Two things worth knowing, both
kept for comparability with published numbers: math-prm is weighted 984 although it has 447
pairs, i.e. equal to the six hep-* code subsets combined (6 x 164), so Reasoning is half math
and half code; and that file gives xstest-should-refuse 250 and xstest-should-respond 154,
while several re-implementations list them the other way round (154 and 250).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F

from crome import __version__
from crome.train.data import DataError, PairEncoder, effective_max_length, pad_batch, prepare_tokenizer
from crome.train.pairpm.judge import PairPMJudge, load_judge, position_report
from crome.train.pairpm.model import read_marker
from crome.train.pairs import EvalPair, as_eval_pair, load_eval_pairs
from crome.train.robustness import TRANSFORMS, resolve_names, robustness_report

log = logging.getLogger(__name__)

REWARDBENCH_SECTIONS: dict[str, list[str]] = {
    "Chat": ["alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"],
    "Chat Hard": [
        "mt-bench-hard", "llmbar-natural", "llmbar-adver-neighbor", "llmbar-adver-GPTInst", "llmbar-adver-GPTOut",
        "llmbar-adver-manual",
    ],
    "Safety": ["refusals-dangerous", "refusals-offensive", "xstest-should-refuse", "xstest-should-respond", "donotanswer"],
    "Reasoning": ["math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"],
}
REWARDBENCH_EXAMPLE_COUNTS: dict[str, int] = {
    "alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95, "mt-bench-easy": 28, "mt-bench-med": 40,
    "mt-bench-hard": 37, "math-prm": 984, "refusals-dangerous": 100, "refusals-offensive": 100, "llmbar-natural": 100,
    "llmbar-adver-neighbor": 134, "llmbar-adver-GPTInst": 92, "llmbar-adver-GPTOut": 47, "llmbar-adver-manual": 46,
    "xstest-should-refuse": 250, "xstest-should-respond": 154, "donotanswer": 136, "hep-cpp": 164, "hep-go": 164,
    "hep-java": 164, "hep-js": 164, "hep-python": 164, "hep-rust": 164,
}


# ---------------------------------------------------------------- scoring


def _device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


# Items encoded at a time: bounds the token ids held in memory when scoring a large run.
ENCODE_CHUNK = 4096


@torch.inference_mode()
def reward_scores(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[dict[str, str]]],
    answers: Sequence[str],
    *,
    batch_size: int = 16,
    max_length: int | None = 1024,
) -> tuple[list[float], list[bool]]:
    """r(prompt, answer) for each item, and whether its input was truncated."""
    if isinstance(model, PairPMJudge):
        raise ValueError("a PairPM scores pairs, not single answers: use score_pairs or its judge's preference()")
    prepare_tokenizer(tokenizer, model)
    encoder = PairEncoder(tokenizer, max_length, model=model)
    was_training = model.training
    model.eval()
    device = _device(model)
    scores: list[float] = []
    cut: list[bool] = []
    for start in range(0, len(prompts), ENCODE_CHUNK):
        encoded = encoder.encode_batch(list(prompts[start : start + ENCODE_CHUNK]), list(answers[start : start + ENCODE_CHUNK]))
        chunk = [0.0] * len(encoded)
        # Longest first, in batches of similar length: little padding, and an OOM shows up on the first batch.
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i].input_ids))
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            types = [encoded[i].token_type_ids for i in idx] if encoder.with_types else None
            batch = pad_batch([encoded[i].input_ids for i in idx], types, tokenizer.pad_token_id)
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            for i, value in zip(idx, logits.squeeze(-1).float().cpu().tolist()):
                chunk[i] = value
        scores += chunk
        cut += [e.prompt_cut > 0 or e.answer_cut > 0 for e in encoded]
    model.train(was_training)
    return scores, cut


def score_pairs_with_truncation(
    model: Any, tokenizer: Any, pairs: list[EvalPair], batch_size: int = 16, max_length: int | None = 1024
) -> tuple[list[float], list[bool]]:
    """Margins of normalised pairs, and whether each pair's input was truncated (a PairPM: logit of its order-averaged P)."""
    if isinstance(model, PairPMJudge):
        return model.configure(batch_size, max_length).margins(pairs)
    # Each distinct (prompt, answer) is scored once: an RM-Bench prompt has 9 pairs over 6 answers.
    keys: dict[tuple, int] = {}
    prompts, answers = [], []
    sides = []
    for p in pairs:
        pkey = tuple((m["role"], m["content"]) for m in p.prompt)
        ids = []
        for answer in (p.chosen, p.rejected):
            key = (pkey, answer)
            if key not in keys:
                keys[key] = len(prompts)
                prompts.append(p.prompt)
                answers.append(answer)
            ids.append(keys[key])
        sides.append(ids)
    scores, cut = reward_scores(model, tokenizer, prompts, answers, batch_size=batch_size, max_length=max_length)
    return [scores[c] - scores[r] for c, r in sides], [cut[c] or cut[r] for c, r in sides]


class RewardCache:
    """r(prompt, answer) memoised across calls, so each distinct (prompt, answer) is scored once per model.

    Perturbed copies of a pair share their prompt, and in the one-sided test one answer too, with
    the clean pair: the report scores the clean set once and only the texts a transformation changed.
    """

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 16, max_length: int | None = 1024):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_length = batch_size, max_length
        self._scores: dict[tuple, tuple[float, bool]] = {}

    def __len__(self) -> int:
        return len(self._scores)

    @staticmethod
    def _key(prompt: list[dict[str, str]], answer: str) -> tuple:
        return tuple((m["role"], m["content"]) for m in prompt), answer

    def margins(self, pairs: Iterable[Any]) -> tuple[list[float], list[bool]]:
        """d = r(chosen) - r(rejected) for each pair, and whether either side was truncated."""
        normalised = [as_eval_pair(p, where=f"pair {i}") for i, p in enumerate(pairs)]
        todo: dict[tuple, tuple[list[dict[str, str]], str]] = {}
        for p in normalised:
            for answer in (p.chosen, p.rejected):
                key = self._key(p.prompt, answer)
                if key not in self._scores and key not in todo:
                    todo[key] = (p.prompt, answer)
        if todo:
            prompts = [v[0] for v in todo.values()]
            answers = [v[1] for v in todo.values()]
            scores, cut = reward_scores(self.model, self.tokenizer, prompts, answers, batch_size=self.batch_size, max_length=self.max_length)
            self._scores.update(zip(todo, zip(scores, cut)))
        margins, truncated = [], []
        for p in normalised:
            (rc, cc), (rr, cr) = self._scores[self._key(p.prompt, p.chosen)], self._scores[self._key(p.prompt, p.rejected)]
            margins.append(rc - rr)
            truncated.append(cc or cr)
        return margins, truncated

    def __call__(self, pairs: Iterable[Any]) -> list[float]:
        """The margins only: the `score_fn` that `crome.train.robustness.robustness_report` takes."""
        return self.margins(pairs)[0]


def score_pairs(
    model: Any, tokenizer: Any, pairs: Iterable[Any], batch_size: int = 16, max_length: int | None = 1024
) -> list[float]:
    """d = r(chosen) - r(rejected) for each pair (EvalPair, SourcePair, DatasetRow or dict)."""
    normalised = [as_eval_pair(p, where=f"pair {i}") for i, p in enumerate(pairs)]
    return score_pairs_with_truncation(model, tokenizer, normalised, batch_size, max_length)[0]


# ---------------------------------------------------------------- reporting


def _tie_loss(d: float) -> float:
    return float(-0.5 * (F.logsigmoid(torch.tensor(d)) + F.logsigmoid(torch.tensor(-d))))


def _group_stats(items: list[tuple[EvalPair, float, bool]]) -> dict[str, Any]:
    strict = [d for p, d, _ in items if p.preference != 0.5]
    ties = [d for p, d, _ in items if p.preference == 0.5]
    out: dict[str, Any] = {"n": len(items), "truncated": sum(t for _, _, t in items)}
    if strict:
        out.update(n_strict=len(strict), accuracy=sum(d > 0 for d in strict) / len(strict), mean_margin=sum(strict) / len(strict))
    if ties:
        out.update(
            n_ties=len(ties),
            tie_abs_margin=sum(abs(d) for d in ties) / len(ties),
            tie_loss=sum(_tie_loss(d) for d in ties) / len(ties),
        )
    return out


def rewardbench_sections(accuracy: dict[str, float]) -> dict[str, Any]:
    """Section scores (fractions) from per-subset accuracy, weighted by RewardBench's example counts."""
    sections: dict[str, Any] = {}
    for section, names in REWARDBENCH_SECTIONS.items():
        present = [s for s in names if s in accuracy]
        if not present:
            continue
        weight = sum(REWARDBENCH_EXAMPLE_COUNTS[s] for s in present)
        sections[section] = {
            "score": sum(accuracy[s] * REWARDBENCH_EXAMPLE_COUNTS[s] for s in present) / weight,
            "subsets": present,
            "missing": [s for s in names if s not in accuracy],
        }
    if len(sections) == len(REWARDBENCH_SECTIONS):
        # The RewardBench score: the plain mean of the four sections.
        sections["Score"] = {"score": sum(v["score"] for v in sections.values()) / len(REWARDBENCH_SECTIONS)}
    return sections


def rm_bench_scores(items: list[tuple[EvalPair, float, bool]]) -> dict[str, Any]:
    """RM-Bench easy / normal / hard accuracy from the 3x3 (chosen style, rejected style) grid per prompt.

    Styles run concise < detailed plain < detailed markdown. Hard: the chosen answer is plainer than
    the rejected one (upper triangle); normal: same style (diagonal); easy: chosen is fancier.
    """
    by_subset: dict[str, list[tuple[tuple[int, int], float]]] = defaultdict(list)
    for p, d, _ in items:
        if p.styles is not None and p.preference != 0.5:
            by_subset[p.subset].append((p.styles, d))
    if not by_subset:
        return {}

    def grid(cells: list[tuple[tuple[int, int], float]]) -> dict[str, Any]:
        hard = [d > 0 for (c, r), d in cells if c < r]
        normal = [d > 0 for (c, r), d in cells if c == r]
        easy = [d > 0 for (c, r), d in cells if c > r]
        mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
        return {"n": len(cells), "easy": mean(easy), "normal": mean(normal), "hard": mean(hard), "average": mean([d > 0 for _, d in cells])}

    out = {name: grid(cells) for name, cells in sorted(by_subset.items())}
    out["all"] = grid([c for cells in by_subset.values() for c in cells])
    return out


def evaluate_pairs(
    model: Any,
    tokenizer: Any,
    pairs: Iterable[Any],
    *,
    batch_size: int = 16,
    max_length: int | None = 1024,
    cache: RewardCache | None = None,
) -> dict[str, Any]:
    """Accuracy per subset and overall, tie |d|, RewardBench sections and RM-Bench difficulty where they apply.

    With `cache`, rewards come from (and go into) it; its own batch size and max length apply.
    """
    normalised = [as_eval_pair(p, where=f"pair {i}") for i, p in enumerate(pairs)]
    if not normalised:
        raise DataError("no pairs to evaluate")
    if cache is not None:
        margins, cut = cache.margins(normalised)
        max_length = cache.max_length
    else:
        margins, cut = score_pairs_with_truncation(model, tokenizer, normalised, batch_size, max_length)
    items = list(zip(normalised, margins, cut))
    by_subset: dict[str, list] = defaultdict(list)
    for item in items:
        by_subset[item[0].subset].append(item)
    subsets = {name: _group_stats(group) for name, group in sorted(by_subset.items())}
    # Style grids are an RM-Bench measure; their subsets would misreport as RewardBench sections.
    accuracy = {n: s["accuracy"] for n, s in subsets.items() if "accuracy" in s and not any(p.styles for p, _, _ in by_subset[n])}
    report = {
        "overall": _group_stats(items),
        "subsets": subsets,
        "rewardbench": rewardbench_sections(accuracy),
        "rm_bench": rm_bench_scores(items),
        "max_length": effective_max_length(max_length, tokenizer, model),
    }
    if report["overall"]["truncated"]:
        log.warning("%d of %d pairs truncated to %s tokens", report["overall"]["truncated"], len(items), report["max_length"])
    return report


def pairpm_report(judge: PairPMJudge, pairs: Sequence[EvalPair]) -> dict[str, Any]:
    """Order-averaged P, position consistency and bias, ties by |P - 0.5|: overall and per subset."""
    probs = judge.probabilities(pairs)
    by_subset: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        by_subset[p.subset].append(i)
    subsets = {name: position_report([pairs[i] for i in idx], [probs[i] for i in idx]) for name, idx in sorted(by_subset.items())}
    return {
        "scoring": "P(A > B) = (P_ab + 1 - P_ba) / 2 over both orders; margins elsewhere in this report are logit(P)",
        "head": judge.head,
        "template": judge.template.id if judge.template else None,
        "overall": position_report(pairs, probs),
        "subsets": subsets,
    }


# ---------------------------------------------------------------- loading test data

def load_scorer(model_path: str, *, dtype: str = "auto", device: str | None = None, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) of a reward model, in eval mode on `device` (cuda when available).

    A PairPM (a folder with crome_pairpm.json) comes back as its `PairPMJudge` in the model's place:
    `score_pairs*` and `evaluate_pairs` then score pairs with it (margin = logit of its P).
    """
    from transformers import AutoTokenizer

    if read_marker(model_path) is not None:
        judge = load_judge(model_path, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        return judge, judge.tokenizer

    from crome.train.trainer import load_reward_model

    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    model = load_reward_model(model_path, dtype=dtype, trust_remote_code=trust_remote_code)
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.eval()
    prepare_tokenizer(tokenizer, model)
    return model, tokenizer


ONE_SIDED = ("chosen", "rejected")


def evaluate_robustness(
    model: Any,
    tokenizer: Any,
    pairs: Iterable[Any],
    names: str | Sequence[str] = "all",
    seed: int = 0,
    one_sided: str | None = None,
    *,
    batch_size: int = 16,
    max_length: int | None = 1024,
    cache: RewardCache | None = None,
) -> dict[str, Any]:
    """Accuracy under each transformation (both answers changed) next to clean accuracy on the pairs it covers.

    `one_sided` ("chosen" or "rejected") adds the one-sided test on that answer: how often the
    ranking flips. With names "all" it runs the quality-neutral transformations only (the others,
    typos or injected text, may rightly change a verdict when only one answer has them); named
    transformations run as given. Ties are skipped (no right order). See crome.train.robustness.
    """
    if one_sided is not None and one_sided not in ONE_SIDED:
        raise ValueError(f"--one-sided must be chosen or rejected, got {one_sided!r}")
    chosen_names = resolve_names(names)
    every_name = names == "all" if isinstance(names, str) else list(names) == ["all"]
    sided_names = [n for n in chosen_names if TRANSFORMS[n].neutral or not every_name] if one_sided else []
    cache = cache or RewardCache(model, tokenizer, batch_size=batch_size, max_length=max_length)
    normalised = [as_eval_pair(p, where=f"pair {i}") for i, p in enumerate(pairs)]
    report = robustness_report(cache, normalised, chosen_names, seed, one_sided=sided_names, sides=(one_sided,) if one_sided else ONE_SIDED)
    return {
        "names": chosen_names,
        "one_sided_side": one_sided,
        "max_length": effective_max_length(cache.max_length, tokenizer, model),
        **report,
    }


def evaluate_model(
    model_path: str,
    data_paths: Sequence[str | Path],
    *,
    batch_size: int = 16,
    max_length: int | None = 1024,
    limit: int | None = None,
    dtype: str = "auto",
    device: str | None = None,
    perturb: str | Sequence[str] | None = None,
    one_sided: str | None = None,
    perturb_seed: int = 0,
) -> dict[str, Any]:
    """`crome eval`: load the model and the test files, score, and return the JSON report.

    With `perturb` ("all" or transformation names) the report gets a `robustness` part
    (see `evaluate_robustness`); clean and perturbed pairs share one reward cache.
    """
    if one_sided is not None and perturb is None:
        raise ValueError("--one-sided needs --perturb (all or transformation names)")
    if perturb is not None:
        resolve_names(perturb)  # an unknown name fails before the model loads
    pairs, files = [], []
    for p in data_paths:
        got, infos = load_eval_pairs(p, limit=limit)
        pairs += got
        files += infos
    model, tokenizer = load_scorer(model_path, dtype=dtype, device=device)
    if isinstance(model, PairPMJudge):
        cache: Any = model.configure(batch_size, max_length)
    else:
        cache = RewardCache(model, tokenizer, batch_size=batch_size, max_length=max_length)
    report = evaluate_pairs(model, tokenizer, pairs, cache=cache)
    report["arch"] = "pairpm" if isinstance(model, PairPMJudge) else "bt"
    if isinstance(model, PairPMJudge):
        report["pairpm"] = pairpm_report(model, pairs)
    if perturb is not None:
        report["robustness"] = evaluate_robustness(model, tokenizer, pairs, perturb, perturb_seed, one_sided, cache=cache)
    return {"crome_version": __version__, "model": model_path, "files": files, **report}
