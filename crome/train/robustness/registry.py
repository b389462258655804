"""The transformation registry: `Transform`, `TRANSFORMS`, the `transform` decorator and name lookup.

Family modules (formatting, noise, distractors, code, maths) import this module, never the
package, and register their transformations with `@transform`; the package imports every family
module, so TRANSFORMS is complete once `crome.train.robustness` is imported.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

Target = Literal["answer", "prompt", "both"]

# The order of "all", the reports and the docs table (the package docstring and the README hold a
# copy). It is fixed here rather than by import order because the families interleave in it.
ORDER = (
    "add_quotes", "punct_spaces", "twitter_handle_url", "stress_test", "ignore_above", "ignore_below",
    "char_swap", "char_insert", "char_delete", "char_substitute", "word_delete", "homoglyphs",
    "plain_to_markdown", "markdown_to_plain", "verbose_wrap", "code_minify", "code_comments",
    "math_boxed_to_answer", "math_answer_to_boxed",
)  # fmt: skip


@dataclass(frozen=True)
class Transform:
    """A named meaning-preserving rewrite of one text, with the texts it fits."""

    name: str
    description: str
    fn: Callable[[str, random.Random], str]
    applies: Callable[[str], bool]
    scope: str = "any answer"  # `applies` in words, for the docs table
    target: Target = "answer"
    # Quality-neutral: fit for the one-sided test, where only one answer changes.
    neutral: bool = False

    def __call__(self, text: str, rng: random.Random) -> str:
        return self.fn(text, rng)


TRANSFORMS: dict[str, Transform] = {}


def transform(
    name: str,
    description: str,
    *,
    applies: Callable[[str], bool] | None = None,
    scope: str = "any answer",
    target: Target = "answer",
    neutral: bool = False,
) -> Callable[[Callable[[str, random.Random], str]], Callable[[str, random.Random], str]]:
    """Register the decorated `(text, rng) -> text` function in TRANSFORMS."""

    def register(fn: Callable[[str, random.Random], str]) -> Callable[[str, random.Random], str]:
        if name in TRANSFORMS:
            raise ValueError(f"transform {name!r} is already registered")
        _register(Transform(name, description, fn, applies or _nonempty, scope, target, neutral))
        return fn

    return register


def _register(t: Transform) -> None:
    TRANSFORMS[t.name] = t
    rank = {name: i for i, name in enumerate(ORDER)}
    # sorted is stable: names outside ORDER (registered later by users) keep their registration order at the end.
    ordered = [(n, TRANSFORMS[n]) for n in sorted(TRANSFORMS, key=lambda n: rank.get(n, len(ORDER)))]
    # In place: modules that imported TRANSFORMS hold this very dict.
    TRANSFORMS.clear()
    TRANSFORMS.update(ordered)


def _nonempty(text: str) -> bool:
    return bool(text.strip())


def resolve_names(spec: str | Sequence[str] | None) -> list[str]:
    """Transformation names from "all", "a,b" or a list, in registry order for "all"; unknown names are an error."""
    if spec is None or spec == "all" or (not isinstance(spec, str) and list(spec) == ["all"]):
        return list(TRANSFORMS)
    names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else [str(n).strip() for n in spec]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown or not names:
        raise ValueError(f"unknown transformation {', '.join(map(repr, unknown)) or '(none given)'}; known: all, {', '.join(TRANSFORMS)}")
    return list(dict.fromkeys(names))


def markdown_table() -> str:
    """The transformations as a markdown table (the module docstring holds a copy for the README)."""
    rows = [f"| `{t.name}` | {t.scope} | {t.description} |" for t in TRANSFORMS.values()]
    return "\n".join(["| transform | applies to | what it does |", "|---|---|---|", *rows])
