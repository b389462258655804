"""Completeness: drop the later part of the body, keep opening, closing and format."""

from __future__ import annotations

import random
import re
from typing import Callable

from crome.builder.oracles.rules.doc import Doc, Unit, Unsupported, snippet
from crome.schemas import Counterfactual
from crome.text import BOLD_RE, BULLET_RE, FENCE_RE, HEADER_RE, NUMBERED_RE, TABLE_RE

# The line patterns of `crome.text`, searched anywhere in a multi-line part of an answer.
BULLET_LINE_RE = re.compile(BULLET_RE.pattern, re.M)
NUMBERED_LINE_RE = re.compile(NUMBERED_RE.pattern, re.M)
HEADER_LINE_RE = re.compile(HEADER_RE.pattern, re.M)
TABLE_LINE_RE = re.compile(TABLE_RE.pattern, re.M)
FENCE_LINE_RE = re.compile(FENCE_RE.pattern, re.M)


def degrade_completeness(answer: str, rng: random.Random, donor: str) -> Counterfactual:
    doc = Doc(answer)
    # Several code blocks go whole, like paragraphs; a single one is cut inside (its fences stay).
    units = doc.units(whole_blocks=len(doc.code_blocks()) >= 2)
    if len(units) < 2:
        raise Unsupported(f"answer too short to truncate: {len(units)} body part(s) between its opening and closing")
    total = sum(u.size for u in units) or 1
    frac = rng.uniform(0.4, 0.6)
    # The cut whose dropped share of the body is nearest the drawn fraction; at least one part kept and one dropped.
    tail = [0] * (len(units) + 1)  # tail[c]: size of units[c:]
    for c in range(len(units) - 1, -1, -1):
        tail[c] = tail[c + 1] + units[c].size
    cut = min(range(1, len(units)), key=lambda c: abs(tail[c] / total - frac))
    while cut > 1 and doc.lines[units[cut - 1].line].kind == "header":
        cut -= 1  # a header whose whole section is gone would dangle
    dropped = units[cut:]
    # A format the answer has (a list, bold, a table...) must not vanish with the later part: the
    # first dropped part that carries a format the kept text lacks is kept.
    kept_text = "\n".join(_unit_text(doc, u) for u in units[:cut]) + "\n" + doc.lines[doc.first].text + "\n" + doc.lines[doc.last].text
    for feature in _FORMATS:
        if not feature(kept_text) and len(dropped) > 1:
            restore = next((u for u in dropped if feature(_unit_text(doc, u))), None)
            if restore is not None:
                dropped = [u for u in dropped if u is not restore]
                kept_text += "\n" + _unit_text(doc, restore)

    drop_lines: set[int] = set()
    drop_sents: dict[int, set[int]] = {}
    for u in dropped:
        if u.end is not None:
            drop_lines.update(range(u.line, u.end + 1))
        elif u.sent is None:
            drop_lines.add(u.line)
        else:
            drop_sents.setdefault(u.line, set()).add(u.sent)
    new_lines: dict[int, str | None] = {}
    for i, gone in drop_sents.items():
        kept = [s for k, s in enumerate(doc.sents[i]) if k not in gone]
        new_lines[i] = doc.join_sentences(i, kept) if kept else None
    for i in drop_lines:
        new_lines[i] = None
    _keep_code_blocks_open(doc, new_lines)
    rewrite = doc.render(new_lines)
    share = sum(u.size for u in dropped) / total
    first_gone = doc.sents[dropped[0].line][dropped[0].sent] if dropped[0].sent is not None else doc.lines[dropped[0].line].text
    return Counterfactual(
        rewrite=rewrite,
        change=(
            f"Removed the later {len(dropped)} of {len(units)} body parts ({share:.0%} of the body, from "
            f"'{snippet(first_gone)}' on) and kept the opening, the closing line and the formatting."
        ),
    )


def _unit_text(doc: Doc, u: Unit) -> str:
    if u.end is not None:
        return "\n".join(doc.lines[k].text for k in range(u.line, u.end + 1))
    return doc.lines[u.line].text if u.sent is None else doc.sents[u.line][u.sent]


_FORMATS: tuple[Callable[[str], bool], ...] = (
    lambda t: bool(BULLET_LINE_RE.search(t)),
    lambda t: bool(NUMBERED_LINE_RE.search(t)),
    lambda t: bool(HEADER_LINE_RE.search(t)),
    lambda t: bool(TABLE_LINE_RE.search(t)),
    lambda t: bool(BOLD_RE.search(t)),
    lambda t: bool(FENCE_LINE_RE.search(t)),
)


def _keep_code_blocks_open(doc: Doc, new_lines: dict[int, str | None]) -> None:
    """A code block whose every line was dropped keeps its first lines, so the fences stay and hold something."""
    i = 0
    while i < len(doc.lines):
        if doc.lines[i].kind == "fence":
            j = i + 1
            while j < len(doc.lines) and doc.lines[j].kind == "code":
                j += 1
            inner = list(range(i + 1, j))
            fence_kept = not (i in new_lines and new_lines[i] is None)
            if inner and fence_kept and all(k in new_lines and new_lines[k] is None for k in inner):
                for k in inner[:2]:
                    new_lines.pop(k, None)
            i = j + 1
        else:
            i += 1
