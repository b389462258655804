"""Clarity: scramble sentence order within paragraphs and item order within lists."""

from __future__ import annotations

import random

from crome.builder.oracles.rules.doc import Doc, Unsupported
from crome.schemas import Counterfactual


def _permute(n: int, rng: random.Random) -> list[int]:
    """A shuffled order of range(n) that is never the identity (n >= 2)."""
    order = list(range(n))
    for _ in range(5):
        rng.shuffle(order)
        if order != sorted(order):
            return order
    return order[1:] + order[:1]


def degrade_clarity(answer: str, rng: random.Random, donor: str) -> Counterfactual:
    doc = Doc(answer)
    new_lines: dict[int, str | None] = {}
    moved_sentences = moved_items = 0
    # Sentences within each paragraph (the opening and closing sentences stay where they are).
    for i, sents in doc.sents.items():
        if doc.lines[i].kind != "prose":
            continue
        free = [s for s in range(len(sents)) if not doc.locked(i, s)]
        if len(free) < 2:
            continue
        order = _permute(len(free), rng)
        out = list(sents)
        for dst, src in zip(free, order):
            out[dst] = sents[free[src]]
        # A sentence moved off the end of its paragraph needs its full stop.
        out = [s if k == len(out) - 1 or _ends_sentence(s) else s.rstrip() + "." for k, s in enumerate(out)]
        new_lines[i] = doc.join_sentences(i, out)
        moved_sentences += len(free)
    # Items within each list: markers stay in place, the item texts move.
    for run in _list_runs(doc):
        if len(run) < 3:
            continue
        order = _permute(len(run), rng)
        for dst, src in zip(run, order):
            new_lines[dst] = doc.lines[dst].prefix + doc.lines[run[src]].body
        moved_items += len(run)
    if new_lines:
        parts = [f"{moved_sentences} sentences within their paragraphs"] if moved_sentences else []
        parts += [f"{moved_items} list items"] if moved_items else []
        return Counterfactual(
            rewrite=doc.render(new_lines),
            change=f"Scrambled the order of {' and '.join(parts)}, keeping the opening, the closing line, every sentence and the formatting.",
        )
    # Only short lines: reordering the middle paragraphs still breaks the flow.
    blocks = _middle_blocks(doc)
    if len(blocks) >= 2:
        order = _permute(len(blocks), rng)
        for dst, src in zip(blocks, order):
            for i in dst:
                new_lines[i] = None
            new_lines[dst[0]] = "\n".join(doc.lines[i].text for i in blocks[src])
        return Counterfactual(
            rewrite=doc.render(new_lines),
            change=f"Shuffled the order of {len(blocks)} middle paragraphs, keeping the opening, the closing line and every paragraph's text.",
        )
    middle = [i for i in range(doc.first + 1, doc.last) if doc.lines[i].kind in ("prose", "bullet", "numbered", "header")]
    if len(middle) >= 2:
        merged = " ".join(doc.lines[i].body.strip() for i in middle)
        spaced = any(doc.lines[i].kind == "blank" for i in range(doc.first + 1, doc.last))
        for i in range(doc.first + 1, doc.last):
            if doc.lines[i].kind in ("prose", "bullet", "numbered", "header", "blank"):
                new_lines[i] = None
        new_lines[middle[0]] = f"\n{merged}\n" if spaced else merged
        return Counterfactual(
            rewrite=doc.render(new_lines),
            change=f"Nothing could be reordered, so the structure was stripped instead: {len(middle)} middle lines (markers, headers, breaks) were run together into one paragraph.",
        )
    raise Unsupported("no paragraph with two movable sentences, no list of three items and too few lines to restructure")


def _ends_sentence(s: str) -> bool:
    return s.rstrip().rstrip("\"')]*_\u201d\u2019")[-1:] in (".", "!", "?", ":", "\u3002", "\uff01", "\uff1f")


def _list_runs(doc: Doc) -> list[list[int]]:
    """Runs of list items of one kind and indent (blank lines inside a list allowed), minus locked lines."""
    runs: list[list[int]] = []
    cur: list[int] = []
    key = None
    for i, line in enumerate(doc.lines):
        if line.kind in ("bullet", "numbered"):
            k = (line.kind, len(line.prefix) - len(line.prefix.lstrip()))
            if k != key:
                if cur:
                    runs.append(cur)
                cur, key = [], k
            if not doc.locked(i, None) and i not in (doc.first, doc.last):
                cur.append(i)
        elif line.kind != "blank":
            if cur:
                runs.append(cur)
            cur, key = [], None
    if cur:
        runs.append(cur)
    return runs


def _middle_blocks(doc: Doc) -> list[list[int]]:
    """Paragraphs (blank-line separated, no code or headers) strictly between the first and last line."""
    blocks, cur = [], []
    for i in range(doc.first + 1, doc.last):
        kind = doc.lines[i].kind
        if kind == "blank":
            if cur:
                blocks.append(cur)
            cur = []
        elif kind in ("prose", "bullet", "numbered", "table"):
            cur.append(i)
        else:
            return []  # code or headers in the middle: moving blocks would tear them apart
    if cur:
        blocks.append(cur)
    return blocks
