"""Noise transformations on prose words only: punctuation spacing, character and word noise, homoglyphs."""

from __future__ import annotations

import random
import re
import string
from typing import Callable

from crome.train.robustness.registry import transform
from crome.train.robustness.spans import _prose, _prose_words, has_prose

# Share of prose words a noise transformation touches (reWordBench's character-noise setting).
NOISE_RATE = 0.05


def _pick(n: int, rng: random.Random, rate: float = NOISE_RATE) -> list[int]:
    """Indices of `rate` of n items (at least one when n > 0)."""
    return sorted(rng.sample(range(n), max(1, round(rate * n)))) if n else []


def _edit_words(text: str, rng: random.Random, edit: Callable[[str, random.Random], str], min_len: int) -> str:
    words = _prose_words(text, min_len)
    out, last = [], 0
    for i in _pick(len(words), rng):
        a, b = words[i]
        out += [text[last:a], edit(text[a:b], rng)]
        last = b
    return "".join(out) + text[last:]


def _same_case(ref: str, ch: str) -> str:
    return ch.upper() if ref.isupper() else ch


_PUNCT_RE = re.compile(r"[,.!?;:()]+")
_LIST_MARKER_RE = re.compile(r"^[ \t]*(?:\d{1,3}|[a-zA-Z])[.)](?=\s)", re.M)


@transform(
    "punct_spaces",
    "put spaces around punctuation in prose (decimals and list markers kept)",
    applies=lambda t: any(_PUNCT_RE.search(t, a, b) for a, b in _prose(t)),
    scope="answers with prose",
)
def punct_spaces(text: str, rng: random.Random) -> str:
    markers = {m.end() - 1 for m in _LIST_MARKER_RE.finditer(text)}
    out, last = [], 0
    for a, b in _prose(text):
        for m in _PUNCT_RE.finditer(text, a, b):
            s, e = m.span()
            # 3.14, 1,000 and 10:30 are numbers, and "1." starts a list item: neither is punctuation to pad.
            if (s > 0 and e < len(text) and text[s - 1].isdigit() and text[e].isdigit()) or s in markers:
                continue
            before = "" if s == 0 or text[s - 1].isspace() else " "
            after = "" if e == len(text) or text[e].isspace() else " "
            out += [text[last:s], before, m.group(), after]
            last = e
    return "".join(out) + text[last:]


def _swap(w: str, rng: random.Random) -> str:
    spots = [i for i in range(len(w) - 1) if w[i] != w[i + 1]]
    if not spots:
        return w
    i = rng.choice(spots)
    return w[:i] + w[i + 1] + w[i] + w[i + 2 :]


def _insert(w: str, rng: random.Random) -> str:
    i = rng.randint(1, len(w) - 1)
    return w[:i] + _same_case(w, rng.choice(string.ascii_lowercase)) + w[i:]


def _delete(w: str, rng: random.Random) -> str:
    i = rng.randrange(len(w))
    return w[:i] + w[i + 1 :]


def _substitute(w: str, rng: random.Random) -> str:
    i = rng.randrange(len(w))
    new = rng.choice([c for c in string.ascii_lowercase if c != w[i].lower()])
    return w[:i] + _same_case(w[i], new) + w[i + 1 :]


# Three letters at least, so that a deleted letter leaves a word and a swap has room.
_NOISE = {
    "char_swap": (_swap, "swap two adjacent letters in"),
    "char_insert": (_insert, "insert a random letter into"),
    "char_delete": (_delete, "delete one letter from"),
    "char_substitute": (_substitute, "replace one letter with another in"),
}
for _name, (_edit, _what) in _NOISE.items():
    transform(
        _name,
        f"{_what} 5% of prose words (at least one)",
        applies=lambda t: bool(_prose_words(t, 3)),
        scope="answers with prose",
    )(lambda text, rng, _edit=_edit: _edit_words(text, rng, _edit, 3))
del _name, _edit, _what


@transform("word_delete", "delete 5% of prose words (at least one)", applies=has_prose, scope="answers with prose")
def word_delete(text: str, rng: random.Random) -> str:
    words = _prose_words(text)
    out, last = [], 0
    for i in _pick(len(words), rng):
        a, b = words[i]
        # Take one neighbouring space with the word so no double space is left behind.
        if b < len(text) and text[b] == " ":
            b += 1
        elif a > last and text[a - 1] == " ":
            a -= 1
        out.append(text[last:a])
        last = b
    return "".join(out) + text[last:]


# Latin letters and the Cyrillic letters drawn the same in common fonts.
HOMOGLYPHS = {
    "a": "\u0430", "c": "\u0441", "e": "\u0435", "i": "\u0456", "j": "\u0458", "o": "\u043e", "p": "\u0440",
    "s": "\u0455", "x": "\u0445", "y": "\u0443", "A": "\u0410", "B": "\u0412", "C": "\u0421", "E": "\u0415",
    "H": "\u041d", "I": "\u0406", "J": "\u0408", "K": "\u041a", "M": "\u041c", "O": "\u041e", "P": "\u0420",
    "S": "\u0405", "T": "\u0422", "X": "\u0425", "Y": "\u04ae",
}  # fmt: skip
_HOMOGLYPH_WORD_RE = re.compile(r"[^\W\d_]*[" + "".join(HOMOGLYPHS) + r"][^\W\d_]*")


@transform(
    "homoglyphs",
    "swap Latin letters for Cyrillic look-alikes in 5% of prose words (at least one)",
    applies=lambda t: bool(_prose_words(t, 1, _HOMOGLYPH_WORD_RE)),
    scope="answers with prose",
    neutral=True,
)
def homoglyphs(text: str, rng: random.Random) -> str:
    words = _prose_words(text, 1, _HOMOGLYPH_WORD_RE)
    out, last = [], 0
    for i in _pick(len(words), rng):
        a, b = words[i]
        out += [text[last:a], "".join(HOMOGLYPHS.get(c, c) for c in text[a:b])]
        last = b
    return "".join(out) + text[last:]
