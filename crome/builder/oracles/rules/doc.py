"""The answer as lines, sentences and body units: the text model every intervention edits."""

from __future__ import annotations

import re
from dataclasses import dataclass

from crome.text import Line, parse_lines, sentence_spans


class Unsupported(Exception):
    """The rules cannot make this intervention honestly; the message says why."""


def snippet(text: str, n: int = 40) -> str:
    """The text on one line, cut to `n` characters: a quote for a change note."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


_TABLE_RULE_RE = re.compile(r"[\s|:\-]+")


@dataclass
class Unit:
    """A piece of the body an intervention may drop, replace or move: one sentence or one whole line."""

    line: int
    sent: int | None  # index in the line's sentences; None: the whole line
    size: int
    end: int | None = None  # a whole code block: its last line (the closing fence)


class Doc:
    """An answer split into lines and sentences, with its opening and closing locked."""

    def __init__(self, text: str):
        self.crlf = "\r\n" in text
        self.text = text.replace("\r\n", "\n") if self.crlf else text
        self.lines: list[Line] = parse_lines(self.text)
        self.spans: dict[int, list[tuple[int, int]]] = {
            i: sentence_spans(line.body) for i, line in enumerate(self.lines) if line.has_sentences
        }
        self.sents: dict[int, list[str]] = {i: [self.lines[i].body[a:b] for a, b in sp] for i, sp in self.spans.items()}
        nonblank = [i for i, line in enumerate(self.lines) if line.kind != "blank"]
        self.first = nonblank[0] if nonblank else -1
        self.last = nonblank[-1] if nonblank else -1
        # A table's header row and its |---| rule are its format: never dropped, replaced or moved.
        rules = {i for i, line in enumerate(self.lines) if line.kind == "table" and _TABLE_RULE_RE.fullmatch(line.text)}
        self.table_frame = rules | {i - 1 for i in rules}

    def locked(self, i: int, s: int | None) -> bool:
        """The opening (first sentence of the first line) and closing (last sentence of the last line) never change."""
        line = self.lines[i]
        if line.kind in ("blank", "fence") or i in self.table_frame:
            return True
        if i == self.first and (s is None or s == 0):
            return True
        return i == self.last and (s is None or s == len(self.sents.get(i, ())) - 1)

    def code_blocks(self) -> list[tuple[int, int]]:
        """(opening fence, closing fence) line indices of each closed code block."""
        out, start = [], None
        for i, line in enumerate(self.lines):
            if line.kind == "fence":
                if start is None:
                    start = i
                else:
                    out.append((start, i))
                    start = None
        return out

    def units(
        self,
        kinds: tuple[str, ...] = ("prose", "bullet", "numbered", "code", "header", "table"),
        split: tuple[str, ...] = ("prose",),
        whole_blocks: bool = False,
    ) -> list[Unit]:
        """Body units in document order: sentences of `split` line kinds, whole lines otherwise.

        With `whole_blocks`, each code block between the opening and closing lines is one unit.
        """
        out = []
        blocks = {a: b for a, b in self.code_blocks() if self.first < a and b < self.last} if whole_blocks else {}
        skip_to = -1
        for i, line in enumerate(self.lines):
            if i <= skip_to:
                continue
            if i in blocks:
                skip_to = blocks[i]
                out.append(Unit(i, None, sum(len(self.lines[k].text) + 1 for k in range(i, skip_to + 1)), end=skip_to))
                continue
            if line.kind not in kinds:
                continue
            sents = self.sents.get(i)
            if line.kind in split and sents:
                out.extend(Unit(i, s, len(t)) for s, t in enumerate(sents) if not self.locked(i, s))
            elif i == self.first or i == self.last:
                # a multi-sentence first/last line keeps its locked sentence; the rest are units
                if sents and len(sents) > 1 and line.kind in ("bullet", "numbered"):
                    out.extend(Unit(i, s, len(t)) for s, t in enumerate(sents) if not self.locked(i, s))
            elif not self.locked(i, None):
                out.append(Unit(i, None, len(line.text)))
        return out

    def join_sentences(self, i: int, sents: list[str]) -> str:
        line = self.lines[i]
        body = line.body
        lead = body[: len(body) - len(body.lstrip())]
        return line.prefix + lead + " ".join(s.strip() for s in sents)

    def render(self, new_lines: dict[int, str | None]) -> str:
        """The answer with some lines replaced (str) or dropped (None), runs of blank lines no longer than before."""
        max_blank_run = run = 0
        for line in self.lines:
            run = run + 1 if line.kind == "blank" else 0
            max_blank_run = max(max_blank_run, run)
        out: list[str] = []
        run = 0
        for i, line in enumerate(self.lines):
            text = new_lines.get(i, line.text)
            if text is None:
                continue
            if not text.strip():
                run += 1
                if run > max_blank_run:
                    continue
            else:
                run = 0
            out.append(text)
        result = "\n".join(out)
        return result.replace("\n", "\r\n") if self.crlf else result
