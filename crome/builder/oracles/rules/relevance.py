"""Relevance: part of the middle becomes text from an unrelated answer."""

from __future__ import annotations

import random
import re

from crome.builder.oracles.rules.doc import Doc, Unit, Unsupported, snippet
from crome.schemas import Counterfactual
from crome.text import language_similarity


# Talk about being an AI is a style of its own (and validation's meta-commentary check flags it):
# borrowed text must bring off-topic content, not a new spurious feature.
_AI_TALK_RE = re.compile(r"\b(?:as an ai|language model|i'?m sorry|i apologi[sz]e|i cannot|i can'?t|i am unable|confidence:)", re.I)


# "**Biofuels:** ..." or "Biofuels: ...": an item's label is format and stays; its text is replaced.
_LABEL_RE = re.compile(r"^(?:\*\*[^*\n]{1,60}\*\*:?|[^:.!?\n]{1,40}:)\s+")
_NON_LETTER_RE = re.compile(r"[\W\d_]+")
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]")
_DONOR_SENT_RE = re.compile(r"^[\"'(\u201c]?[A-Z0-9\u00c0-\u00de].*[.!?][\"')\u201d]?$|^[^\x00-\x7f].*[\u3002\uff01\uff1f.!?]$", re.S)


def donor_sentences(donor: str) -> list[str]:
    """Whole prose sentences of the donor answer, long enough to read as content.

    A sentence starts with a capital and ends with a full stop (so it stays one sentence where it
    lands), is mostly letters and carries no markers, code or AI talk.
    """
    doc = Doc(donor)
    out = []
    for i, line in enumerate(doc.lines):
        for s in doc.sents.get(i, ()):
            s = s.strip()
            # CJK scripts say in 12 characters what English says in 25
            if not ((25 if s.isascii() else 12) <= len(s) <= 400 and _DONOR_SENT_RE.match(s)) or _AI_TALK_RE.search(s):
                continue
            if len(_NON_LETTER_RE.sub("", s)) < 0.6 * len(s.replace(" ", "")):
                continue
            out.append(s)
    return out


# Share of the body's characters replaced: a clear off-topic passage, not a different answer.
RELEVANCE_SHARE = (0.25, 0.45)


def degrade_relevance(answer: str, rng: random.Random, donor: str) -> Counterfactual:
    if not donor or not donor.strip():
        raise Unsupported("no donor answer to take off-topic text from")
    pool = donor_sentences(donor)
    if not pool:
        raise Unsupported("the donor answer has no prose sentence to borrow")
    same = language_similarity(answer, " ".join(pool))
    if answer.isascii() or len(_NON_ASCII_RE.findall(answer)) < 0.02 * len(answer):
        pool = [p for p in pool if p.isascii()]  # an English-like answer borrows no foreign script
    if not pool or (same is not None and same < 0.5):
        raise Unsupported("the donor answer is in another language: borrowing from it would change the language too")
    doc = Doc(answer)
    units = doc.units(kinds=("prose", "bullet", "numbered"), split=("prose",))
    if not units:
        raise Unsupported("answer has no body between its opening and closing to replace")
    total = sum(u.size for u in doc.units()) or 1
    want = rng.uniform(*RELEVANCE_SHARE) * total
    # A contiguous run of units, started in the middle half when possible so opening and closing context stays.
    start = rng.randrange(len(units) // 4, max(len(units) // 4 + 1, (3 * len(units)) // 4))
    run, size = [], 0
    for u in units[start:] + units[:start][::-1]:
        if size >= want:
            break
        run.append(u)
        size += u.size
    k = rng.randrange(len(pool))
    unused = pool[k:] + pool[:k]
    new_sents = {i: list(doc.sents.get(i, [])) for i in {u.line for u in run}}
    new_lines: dict[int, str | None] = {}
    borrowed: list[str] = []
    replaced: list[Unit] = []
    for u in sorted(run, key=lambda u: (u.line, u.sent or 0)):
        filled: list[str] = []
        # Borrowed sentences of about the replaced length keep the answer's length: the nearest fit among
        # the next few, while the part is less than 80% filled. No sentence is borrowed twice.
        while unused and (not filled or sum(len(x) for x in filled) + 1 < 0.8 * u.size):
            gap = u.size - sum(len(x) + 1 for x in filled)
            pick = min(unused[:6], key=lambda x: abs(len(x) - gap))
            if filled and len(pick) > 1.5 * gap:
                break
            unused.remove(pick)
            filled.append(pick)
        if not filled:
            break
        borrowed.extend(filled)
        replaced.append(u)
        text = " ".join(filled)
        if u.sent is None:
            line = doc.lines[u.line]
            label = _LABEL_RE.match(line.body)
            new_lines[u.line] = line.prefix + (label.group(0) if label else "") + text
        else:
            new_sents[u.line][u.sent] = text
    for i, sents in new_sents.items():
        if i not in new_lines and any(u.sent is not None for u in replaced if u.line == i):
            new_lines[i] = doc.join_sentences(i, sents)
    return Counterfactual(
        rewrite=doc.render(new_lines),
        change=(
            f"Replaced {len(replaced)} middle part(s) ({sum(u.size for u in replaced) / total:.0%} of the body) with text from an unrelated answer "
            f"('{snippet(borrowed[0])}'), keeping the opening, the closing line and the formatting."
        ),
    )
