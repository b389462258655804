"""Prose and protected spans: where word-level edits may go (prose) and where they must not (code, URLs, math)."""

from __future__ import annotations

import re

from crome.train.robustness.detect import _code_spans

# What word-level noise must not touch: it would change meaning (code, URLs, math), not wording.
_PROTECT_RE = re.compile(
    r"`[^`\n]+`"  # inline code
    r"|\[[^\]\n]*\]\([^)\s]*\)"  # markdown link
    r"|https?://\S+|www\.\S+"  # URL
    r"|\$\$.+?\$\$"  # display math
    r"|\$[^$\n]+\$"  # inline math
    r"|\\\(.+?\\\)|\\\[.+?\\\]"  # LaTeX math delimiters
    r"|\\[A-Za-z]+(?:\{[^{}\n]*\})*"  # a bare LaTeX command such as \boxed{42}
    r"|<[^<>\n]+>",  # HTML tag or <placeholder>
    re.S,
)
_WORD_RE = re.compile(r"[^\W\d_]+")


def _protected(text: str) -> list[tuple[int, int]]:
    """Sorted spans of code, URLs, links, math and tags."""
    blocks = _code_spans(text)
    spans = list(blocks)
    gaps = [(a, b) for a, b in zip([0] + [e for _, e in blocks], [s for s, _ in blocks] + [len(text)]) if a < b]
    for a, b in gaps:
        spans += [m.span() for m in _PROTECT_RE.finditer(text, a, b)]
    return sorted(spans)


def _prose(text: str) -> list[tuple[int, int]]:
    """Spans of plain prose: everything outside the protected spans."""
    out, last = [], 0
    for a, b in _protected(text):
        if a > last:
            out.append((last, a))
        last = max(last, b)
    if last < len(text):
        out.append((last, len(text)))
    return out


def _prose_words(text: str, min_len: int = 1, pattern: re.Pattern[str] = _WORD_RE) -> list[tuple[int, int]]:
    return [m.span() for a, b in _prose(text) for m in pattern.finditer(text, a, b) if m.end() - m.start() >= min_len]


def has_prose(text: str) -> bool:
    """Whether the text has words outside code, URLs and math."""
    return bool(_prose_words(text))
