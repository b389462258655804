"""Math transformations: a final answer as \\boxed{X} or as a PRM800K "# Answer" tail, either way round."""

from __future__ import annotations

import random
import re

from crome.train.robustness.registry import transform

_ANSWER_TAIL_RE = re.compile(r"^#+[ \t]*Answer[ \t]*\n\s*(?P<x>[^\n]+?)\s*\Z", re.M)
_FINAL_ANSWER_RE = re.compile(
    # "the (final|correct) answer is" or a line opening with "(Final) answer is"; not "this answer is".
    r"(?:\b[Tt]he\s+(?:(?:final|correct)\s+)?|^[ \t]*(?:[Ff]inal\s+)?)[Aa]nswer\s+is:?[ \t]*"
    r"(?P<x>\$[^$\n]{1,60}\$|[-+\u2212]?\d[\d,]*(?:\.\d+)?(?:[ \t]*/[ \t]*\d+)?%?)"
    r"(?=[ \t]*(?:[.!]?[ \t]*$|[.!]\s))",
    re.M,
)


def last_boxed(text: str) -> tuple[int, int] | None:
    """[start, end) of the last \\boxed{...} with balanced braces."""
    start = text.rfind("\\boxed{")
    while start >= 0:
        depth = 0
        for i in range(start + len("\\boxed"), len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return start, i + 1
        start = text.rfind("\\boxed{", 0, start)
    return None


def _final_answer(text: str) -> re.Match[str] | None:
    """The "# Answer" tail (PRM800K) or the last "the answer is X" with a numeric or $math$ X."""
    if "\\boxed{" in text:
        return None
    tail = _ANSWER_TAIL_RE.search(text)
    if tail:
        return tail
    matches = list(_FINAL_ANSWER_RE.finditer(text))
    return matches[-1] if matches else None


@transform(
    "math_boxed_to_answer",
    'unbox the final \\boxed{X} and end with "# Answer\\n\\nX" (PRM800K style)',
    applies=lambda t: last_boxed(t) is not None,
    scope="answers with \\boxed{}",
    neutral=True,
)
def math_boxed_to_answer(text: str, rng: random.Random) -> str:
    span = last_boxed(text)
    if span is None:
        return text
    a, b = span
    value = text[a + len("\\boxed{") : b - 1].strip()
    return (text[:a] + value + text[b:]).rstrip() + "\n\n# Answer\n\n" + value


@transform(
    "math_answer_to_boxed",
    'turn "# Answer\\n\\nX" or "the answer is X" into $\\boxed{X}$',
    applies=lambda t: _final_answer(t) is not None,
    scope="answers with a final answer",
    neutral=True,
)
def math_answer_to_boxed(text: str, rng: random.Random) -> str:
    m = _final_answer(text)
    if m is None:
        return text
    value = m.group("x").strip()
    inner = value[1:-1] if value.startswith("$") and value.endswith("$") else value.replace("%", "\\%")
    boxed = "$\\boxed{" + inner + "}$"
    if m.re is _ANSWER_TAIL_RE:
        return text[: m.start()].rstrip() + "\n\n" + boxed
    return text[: m.start("x")] + boxed + text[m.end("x") :]
