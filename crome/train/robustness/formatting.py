"""Formatting transformations: quotes, plain text <-> markdown, a verbose preamble and closing."""

from __future__ import annotations

import random
import re

from crome.text import BOLD_RE, parse_lines, split_sentences
from crome.train.robustness.detect import _code_spans
from crome.train.robustness.registry import transform


@transform("add_quotes", "wrap the answer in double quotes", neutral=True)
def add_quotes(text: str, rng: random.Random) -> str:
    return f'"{text}"'


def is_markdown(text: str) -> bool:
    """Headers, bullets or bold outside code: what markdown_to_plain removes."""
    for line in parse_lines(text):
        if line.kind in ("header", "bullet") or (line.kind in ("prose", "numbered") and BOLD_RE.search(line.text)):
            return True
    return False


def is_plain_multi_sentence(text: str) -> bool:
    """Prose only (no markdown structure, no code) with at least two sentences."""
    if _code_spans(text) or BOLD_RE.search(text):
        return False
    lines = parse_lines(text)
    if any(line.kind not in ("prose", "blank") for line in lines):
        return False
    return sum(len(split_sentences(line.body)) for line in lines if line.kind == "prose") >= 2


_HEADERS = ("## Answer", "## Response", "## Overview")


@transform(
    "plain_to_markdown",
    "add a header and turn each sentence into a bullet",
    applies=is_plain_multi_sentence,
    scope="plain multi-sentence answers",
    neutral=True,
)
def plain_to_markdown(text: str, rng: random.Random) -> str:
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", text.strip()) if p.strip()]
    lists = ["\n".join(f"- {s}" for s in split_sentences(" ".join(p.split()))) for p in paragraphs]
    return rng.choice(_HEADERS) + "\n\n" + "\n\n".join(lists)


_CLOSING_HASHES_RE = re.compile(r"[ \t]+#+[ \t]*$")  # "## Title ##"; "C#" keeps its hash
_RULE_RE = re.compile(r"^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$")


def _unbold(s: str) -> str:
    return BOLD_RE.sub(lambda m: m.group()[2:-2], s)


@transform(
    "markdown_to_plain",
    "drop headers, bullets, bold and rules; code fences stay",
    applies=is_markdown,
    scope="markdown answers",
    neutral=True,
)
def markdown_to_plain(text: str, rng: random.Random) -> str:
    out = []
    for line in parse_lines(text):
        if line.kind == "header":
            out.append(_unbold(_CLOSING_HASHES_RE.sub("", line.body)))
        elif line.kind == "bullet":
            out.append(_unbold(line.body))
        elif line.kind in ("prose", "numbered"):
            out.append("" if _RULE_RE.match(line.text) else _unbold(line.text))
        else:  # code, fences, tables and blank lines stay as they are
            out.append(line.text)
    return "\n".join(out)


_PREAMBLES = (
    "Sure! Here's my answer:",
    "Sure! Here's a detailed response to your question:",
    "Of course! Here's what you need to know:",
)
_CLOSINGS = (
    "I hope this helps! Let me know if you have any other questions.",
    "I hope this helps! Feel free to ask if anything is unclear.",
    "I hope this helps! Let me know if you need anything else.",
)


@transform("verbose_wrap", 'add a "Sure! Here\'s ..." preamble and an "I hope this helps!" closing', neutral=True)
def verbose_wrap(text: str, rng: random.Random) -> str:
    return f"{rng.choice(_PREAMBLES)}\n\n{text.strip()}\n\n{rng.choice(_CLOSINGS)}"
