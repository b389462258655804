"""Applying transformations to pairs (both answers or one) and the robustness report of a scorer."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Literal, Sequence

from crome.schemas.hashing import short_id, stable_hash
from crome.train.pairs import EvalPair, as_eval_pair
from crome.train.robustness.registry import TRANSFORMS, Transform, resolve_names

Side = Literal["chosen", "rejected"]
SIDES: tuple[Side, Side] = ("chosen", "rejected")


def _get(name: str | Transform) -> Transform:
    if isinstance(name, Transform):
        return name
    return TRANSFORMS[resolve_names([name])[0]]


@dataclass(frozen=True)
class PerturbedPair:
    """A transformed copy of the pair at `index` of the input, and which texts changed."""

    index: int
    transform: str
    pair: EvalPair
    original: EvalPair
    changed: tuple[str, ...]  # among "prompt", "chosen", "rejected"


def pair_seed(seed: int, pair: EvalPair, name: str) -> int:
    """The seed of a pair's random choices for one transformation: stable across runs, orders and machines."""
    content = {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected}
    return int(short_id({"seed": seed, "pair": stable_hash(content), "transform": name}), 16)


def _apply(t: Transform, text: str, seed: int) -> str:
    return t.fn(text, random.Random(seed)) if text and t.applies(text) else text


def _perturb(p: EvalPair, index: int, t: Transform, seed: int, sides: Sequence[str]) -> PerturbedPair | None:
    s = pair_seed(seed, p, t.name)
    changes: dict[str, Any] = {}
    if t.target in ("prompt", "both"):
        turn = max(i for i, m in enumerate(p.prompt) if m["role"] == "user")
        new = _apply(t, p.prompt[turn]["content"], s)
        if new != p.prompt[turn]["content"]:
            prompt = [dict(m) for m in p.prompt]
            prompt[turn]["content"] = new
            changes["prompt"] = prompt
    if t.target in ("answer", "both"):
        for side in sides:
            new = _apply(t, getattr(p, side), s)
            if new != getattr(p, side):
                changes[side] = new
    if not changes:
        return None
    return PerturbedPair(index, t.name, replace(p, **changes), p, tuple(changes))


def _normalise(pairs: Iterable[Any]) -> list[EvalPair]:
    return [as_eval_pair(p, where=f"pair {i}") for i, p in enumerate(pairs)]


def perturb_pairs(pairs: Iterable[Any], name: str | Transform, seed: int = 0) -> list[PerturbedPair | None]:
    """The transformation applied to both answers of each pair; None where it changes neither (not covered)."""
    t = _get(name)
    return [_perturb(p, i, t, seed, SIDES) for i, p in enumerate(_normalise(pairs))]


def one_sided_pairs(
    pairs: Iterable[Any], name: str | Transform, side: Side = "rejected", seed: int = 0
) -> list[PerturbedPair | None]:
    """The transformation applied to one answer only; None where that answer is left unchanged."""
    t = _get(name)
    if side not in SIDES:
        raise ValueError(f"side must be 'chosen' or 'rejected', got {side!r}")
    if t.target == "prompt":
        raise ValueError(f"{t.name} rewrites the prompt, which both answers share: it has no one-sided form")
    one = replace(t, target="answer")
    return [_perturb(p, i, one, seed, (side,)) for i, p in enumerate(_normalise(pairs))]


def ranking_flips(clean_margins: Sequence[float], perturbed_margins: Sequence[float]) -> float:
    """Share of pairs whose verdict (d > 0: chosen ranked first) differs between the two margin lists."""
    if len(clean_margins) != len(perturbed_margins):
        raise ValueError(f"{len(clean_margins)} clean margins but {len(perturbed_margins)} perturbed ones")
    if not clean_margins:
        raise ValueError("no margins to compare")
    return sum((c > 0) != (p > 0) for c, p in zip(clean_margins, perturbed_margins)) / len(clean_margins)


# ---------------------------------------------------------------- report


def _accuracy(margins: Sequence[float]) -> float | None:
    # As RewardBench and crome.train.evaluate: an exact tie (d = 0) is a miss.
    return sum(d > 0 for d in margins) / len(margins) if margins else None


def _score(score_fn: Callable[[list[EvalPair]], Sequence[float]], pairs: list[EvalPair], what: str) -> list[float]:
    margins = [float(d) for d in score_fn(pairs)]
    if len(margins) != len(pairs):
        raise ValueError(f"score_fn returned {len(margins)} margins for {len(pairs)} pairs ({what})")
    return margins


def _drop(clean: float | None, perturbed: float | None) -> float | None:
    return None if clean is None or perturbed is None else clean - perturbed


def robustness_report(
    score_fn: Callable[[list[EvalPair]], Sequence[float]],
    pairs: Iterable[Any],
    names: str | Sequence[str] | None = "all",
    seed: int = 0,
    *,
    one_sided: str | Sequence[str] | None = None,
    sides: Sequence[Side] = SIDES,
) -> dict[str, Any]:
    """Clean accuracy, accuracy per transformation on the pairs it covers (with the drop), and one-sided flip rates.

    `score_fn` gets a list of EvalPairs and returns d = r(chosen) - r(rejected) for each; it is called once
    for the clean pairs, once per transformation and once per (one-sided transformation, side). Ties
    (preference 0.5) have no right order and are left out. `one_sided` defaults to the quality-neutral
    transformations among `names`; pass [] to skip the one-sided mode.
    """
    every = _normalise(pairs)
    strict = [p for p in every if p.preference != 0.5]
    if not strict:
        raise ValueError("no strict pairs (preference 1.0) to evaluate robustness on")
    chosen_names = resolve_names(names)
    if one_sided is None:
        one_sided_names = [n for n in chosen_names if TRANSFORMS[n].neutral]
    else:
        one_sided_names = resolve_names(one_sided) if one_sided else []
    clean = _score(score_fn, strict, "clean")

    def subsets(covered: list[PerturbedPair], margins: list[float]) -> dict[str, Any]:
        groups: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
        for pp, d in zip(covered, margins):
            groups[pp.original.subset][0].append(clean[pp.index])
            groups[pp.original.subset][1].append(d)
        out = {}
        for subset, (base, pert) in sorted(groups.items()):
            acc, base_acc = _accuracy(pert), _accuracy(base)
            out[subset] = {"n": len(pert), "accuracy": acc, "clean_accuracy": base_acc, "drop": _drop(base_acc, acc)}
        return out

    transforms: dict[str, Any] = {}
    for name in chosen_names:
        covered = [pp for pp in perturb_pairs(strict, name, seed) if pp is not None]
        entry: dict[str, Any] = {
            "description": TRANSFORMS[name].description,
            "covered": len(covered),
            "coverage": len(covered) / len(strict),
            "both_sides_changed": sum("chosen" in pp.changed and "rejected" in pp.changed for pp in covered),
            "accuracy": None, "clean_accuracy": None, "drop": None, "flip_rate": None, "subsets": {},
        }  # fmt: skip
        if covered:
            margins = _score(score_fn, [pp.pair for pp in covered], name)
            base = [clean[pp.index] for pp in covered]
            acc, base_acc = _accuracy(margins), _accuracy(base)
            entry.update(
                accuracy=acc, clean_accuracy=base_acc, drop=_drop(base_acc, acc), flip_rate=ranking_flips(base, margins),
                subsets=subsets(covered, margins),
            )  # fmt: skip
        transforms[name] = entry

    sided: dict[str, Any] = {}
    for name in one_sided_names:
        sided[name] = {"description": TRANSFORMS[name].description}
        for side in sides:
            covered = [pp for pp in one_sided_pairs(strict, name, side, seed) if pp is not None]
            entry = {"covered": len(covered), "flip_rate": None, "to_wrong": 0, "to_right": 0, "accuracy": None, "clean_accuracy": None}
            if covered:
                margins = _score(score_fn, [pp.pair for pp in covered], f"{name} on {side}")
                base = [clean[pp.index] for pp in covered]
                entry.update(
                    flip_rate=ranking_flips(base, margins),
                    to_wrong=sum(b > 0 and d <= 0 for b, d in zip(base, margins)),
                    to_right=sum(b <= 0 and d > 0 for b, d in zip(base, margins)),
                    accuracy=_accuracy(margins),
                    clean_accuracy=_accuracy(base),
                )
            sided[name][side] = entry

    measured = [e for e in transforms.values() if e["accuracy"] is not None]
    return {
        "seed": seed,
        "pairs": len(every),
        "strict_pairs": len(strict),
        "ties_skipped": len(every) - len(strict),
        "clean": {"accuracy": _accuracy(clean)},
        "transforms": transforms,
        "summary": {
            "transforms_measured": len(measured),
            "mean_accuracy": sum(e["accuracy"] for e in measured) / len(measured) if measured else None,
            "mean_drop": sum(e["drop"] for e in measured) / len(measured) if measured else None,
        },
        "one_sided": sided,
    }
