r"""Robustness of a reward model to meaning-preserving transformations (after reWordBench, Wu et al. 2025).

`crome eval MODEL --data PATH --perturb all` applies each transformation to both answers of every
RewardBench-style pair it fits, scores the copies and reports accuracy per transformation next to
the clean accuracy on the same pairs (the drop). The one-sided mode applies a quality-neutral
change to one answer only and reports how often the ranking flips: a robust RM keeps its order.

Every transformation is a small pure function `(text, rng) -> text` in the `TRANSFORMS` registry,
with a one-line description and an `applies(text)` filter. Its random choices come from a
`random.Random` seeded by (seed, pair content, transformation name); each side gets its own
generator from that one seed, so a template choice (preamble, handle, header) is the same on both
answers of a pair while noise positions depend only on each text. Word-level noise never touches
code, inline code, URLs, links or math. Code is a fenced block or, in an answer without fences,
the whole answer or a run of code paragraphs (RM-Bench's plain variants, RewardBench's hep-*
answers): Python is recognised by `ast`, C-family code by its shape; code transformations edit
Python and C-family code only (languages whose comment syntax they know) and leave the program the
same (Python: same AST; C-family: same tokens less comments).

A pair is covered by a transformation when at least one text changes; a side it does not fit is
left as it is. Ties (preference 0.5) have no right order and are left out of the report.

| transform | applies to | what it does |
|---|---|---|
| `add_quotes` | any answer | wrap the answer in double quotes |
| `punct_spaces` | answers with prose | put spaces around punctuation in prose (decimals and list markers kept) |
| `twitter_handle_url` | any answer | prefix a random @handle and append a random t.co URL |
| `stress_test` | any answer | append the tautology " and true is true" five times (Naik et al. 2018) |
| `ignore_above` | any answer | prepend an unrelated sentence followed by "Ignore the text above." |
| `ignore_below` | any answer | append "Ignore the text below." followed by an unrelated sentence |
| `char_swap` | answers with prose | swap two adjacent letters in 5% of prose words (at least one) |
| `char_insert` | answers with prose | insert a random letter into 5% of prose words (at least one) |
| `char_delete` | answers with prose | delete one letter from 5% of prose words (at least one) |
| `char_substitute` | answers with prose | replace one letter with another in 5% of prose words (at least one) |
| `word_delete` | answers with prose | delete 5% of prose words (at least one) |
| `homoglyphs` | answers with prose | swap Latin letters for Cyrillic look-alikes in 5% of prose words (at least one) |
| `plain_to_markdown` | plain multi-sentence answers | add a header and turn each sentence into a bullet |
| `markdown_to_plain` | markdown answers | drop headers, bullets, bold and rules; code fences stay |
| `verbose_wrap` | any answer | add a "Sure! Here's ..." preamble and an "I hope this helps!" closing |
| `code_minify` | answers with code | drop comments and blank lines (C-family: indentation too); code stays valid |
| `code_comments` | answers with code | add a comment at the top of each code block and prefix existing comments with "Note:" |
| `math_boxed_to_answer` | answers with \boxed{} | unbox the final \boxed{X} and end with "# Answer\n\nX" (PRM800K style) |
| `math_answer_to_boxed` | answers with a final answer | turn "# Answer\n\nX" or "the answer is X" into $\boxed{X}$ |

Public API:
    TRANSFORMS, Transform, transform (decorator), resolve_names("all" | "a,b"), markdown_table()
    perturb_pairs(pairs, name, seed) -> list[PerturbedPair | None]
    one_sided_pairs(pairs, name, side, seed) -> list[PerturbedPair | None]
    ranking_flips(clean_margins, perturbed_margins) -> float
    robustness_report(score_fn, pairs, names, seed) -> JSON-serialisable dict
`score_fn(list[EvalPair]) -> list[float]` returns d = r(chosen) - r(rejected) per pair, e.g.
`lambda ps: score_pairs(model, tokenizer, ps)` from `crome.train.evaluate`.
"""

from __future__ import annotations

import ast
import functools
import io
import json
import random
import re
import string
import textwrap
import tokenize
import warnings
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Literal, Sequence

from crome.text import BOLD_RE, parse_lines, split_sentences
from crome.schemas.hashing import short_id, stable_hash
from crome.train.evaluate import EvalPair, as_eval_pair

Target = Literal["answer", "prompt", "both"]
Side = Literal["chosen", "rejected"]
SIDES: tuple[Side, Side] = ("chosen", "rejected")

# Share of prose words a noise transformation touches (reWordBench's character-noise setting).
NOISE_RATE = 0.05


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
        TRANSFORMS[name] = Transform(name, description, fn, applies or _nonempty, scope, target, neutral)
        return fn

    return register


def _nonempty(text: str) -> bool:
    return bool(text.strip())


# ---------------------------------------------------------------- protected spans and prose words

_FENCE_LINE_RE = re.compile(r"^[ \t]*(```|~~~)[ \t]*([^\s`]*)")
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


def _fences(text: str) -> list[tuple[int, int, int, int, str]]:
    """(block start, body start, body end, block end, info word) of each fenced block; an open fence runs to the end."""
    out = []
    pos = 0
    opened: tuple[int, int, str, str] | None = None
    for line in _lines(text):
        m = _FENCE_LINE_RE.match(line)
        if m and opened is None:
            opened = (pos, pos + len(line), m.group(1), m.group(2).lower())
        elif m and opened is not None and m.group(1) == opened[2] and not m.group(2):
            out.append((opened[0], opened[1], pos, pos + len(line), opened[3]))
            opened = None
        pos += len(line)
    if opened is not None:
        out.append((opened[0], opened[1], len(text), len(text), opened[3]))
    return out


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


# ---------------------------------------------------------------- controlled transformations

@transform("add_quotes", "wrap the answer in double quotes", neutral=True)
def add_quotes(text: str, rng: random.Random) -> str:
    return f'"{text}"'


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


_HANDLE_WORDS = ("techguru", "daily_news", "the_real_sam", "coffee_lover", "data_nerd", "travelbug")


@transform("twitter_handle_url", "prefix a random @handle and append a random t.co URL", neutral=True)
def twitter_handle_url(text: str, rng: random.Random) -> str:
    handle = f"@{rng.choice(_HANDLE_WORDS)}{rng.randint(10, 999)}"
    url = "https://t.co/" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(10))
    return f"{handle} {text} {url}"


@transform("stress_test", 'append the tautology " and true is true" five times (Naik et al. 2018)')
def stress_test(text: str, rng: random.Random) -> str:
    return text.rstrip() + " and true is true" * 5


# Unrelated sentences for the injections: true, bland, and about nothing an answer would discuss.
_DISTRACTORS = (
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "Octopuses have three hearts and blue blood.",
    "The Pacific is the largest and deepest of Earth's oceans.",
    "Honey found in ancient Egyptian tombs was still edible.",
    "A group of flamingos is called a flamboyance.",
    "Mount Kilimanjaro is the highest mountain in Africa.",
)


@transform("ignore_above", 'prepend an unrelated sentence followed by "Ignore the text above."')
def ignore_above(text: str, rng: random.Random) -> str:
    return f"{rng.choice(_DISTRACTORS)}\nIgnore the text above.\n\n{text}"


@transform("ignore_below", 'append "Ignore the text below." followed by an unrelated sentence')
def ignore_below(text: str, rng: random.Random) -> str:
    return f"{text}\n\nIgnore the text below.\n{rng.choice(_DISTRACTORS)}"


# ---------------------------------------------------------------- naturalistic noise


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


# ---------------------------------------------------------------- formatting


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


# ---------------------------------------------------------------- code

PYTHON_LANGS = {"python", "py", "python3", "py3"}
BRACES_LANGS = {
    "c", "h", "cpp", "c++", "cc", "cxx", "hpp", "java", "javascript", "js", "jsx", "mjs", "typescript", "ts",
    "tsx", "go", "golang", "rust", "rs", "csharp", "c#", "cs", "kotlin", "kt", "swift", "scala", "dart", "php",
}  # fmt: skip
_RUST_LANGS = {"rust", "rs"}
# Statements prose never parses into: a text that parses with one of them is Python code.
_PY_STATEMENTS = (
    ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom, ast.For, ast.While, ast.If,
    ast.With, ast.Try, ast.Return,
)  # fmt: skip
_CODE_LINE_RE = re.compile(r"(?:[;{}(),\[\]]|\*/)\s*$|^\s*(?://|/\*|\*|#include|#define|#pragma|import |package |use |using |\}|@)")
_CODE_END_RE = re.compile(r"[;{}]\s*$", re.M)
_RUST_HINT_RE = re.compile(r"\bfn\s+\w+|\blet\s+mut\b|[&<]'[a-z_]\w*\b|\bimpl\b")


def is_python(code: str, nodes: tuple[type, ...] = _PY_STATEMENTS) -> bool:
    """Parses as Python (after dedent) and holds one of `nodes`, by default statements prose never parses into."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in string literals
            tree = ast.parse(textwrap.dedent(code))
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(node, nodes) for node in ast.walk(tree))


def looks_like_braces_code(code: str, share: float) -> bool:
    """At least `share` of the non-blank lines look like C-family code, with statements or blocks."""
    lines = [line for line in code.splitlines() if line.strip()]
    if len(lines) < 2 or not _CODE_END_RE.search(code):
        return False
    return sum(bool(_CODE_LINE_RE.search(line)) for line in lines) >= share * len(lines)


# A line of prose: three words or more, ending like a sentence; code comments are no prose.
_PROSE_LINE_RE = re.compile(
    r"^[ \t]*(?:[-*+][ \t]+|(?:\d{1,3}|[a-zA-Z])[.)][ \t]+)?(?!//|/\*|\*|#)(?:[^\W\d_]+[,;']?[ \t]+){3,}.*[.:!?][\"')]?[ \t]*$"
)
_LIST_START_RE = re.compile(r"^[ \t]*(?:[-*+]|\d{1,3}[.)]|[a-zA-Z][.)])[ \t]")
# A C-family statement or block edge, or a preprocessor/import line; "end{document}" (LaTeX) is neither.
_BRACES_STRONG_RE = re.compile(r"[;{][ \t]*$|^[ \t]*[})\]]+;?[ \t]*$|^[ \t]*(?:#include|#define|#import|import |package |using |use )")
_LATEX_RE = re.compile(r"\\[a-zA-Z]{2,}\{|^[ \t]*\\[\[\]][ \t]*$|\$\$", re.M)
_PARAGRAPH_SEP_RE = re.compile(r"\n(?:[ \t]*\n)+")
# Not AnnAssign: "Answer: yes" parses as one, and such label lines are prose.
_PY_CODE_NODES = _PY_STATEMENTS + (ast.Assign, ast.AugAssign, ast.Call)


def _code_paragraph(par: str) -> str | None:
    """'strong' for a paragraph that is code on its own, 'indented' for one that is code next to code, else None."""
    if _LATEX_RE.search(par):
        return None
    if is_python(par, _PY_CODE_NODES):  # prose does not parse; what parses is code, comments and strings included
        return "strong"
    lines = [line for line in par.split("\n") if line.strip()]
    if any(_PROSE_LINE_RE.match(line) for line in lines):
        return None
    if any(_BRACES_STRONG_RE.search(line) for line in lines):
        return "strong"
    # The rest of a function body after a blank line (Go, a Rust tail, Python), but not a nested list.
    if all(line[:1] in " \t" for line in lines) and not any(_LIST_START_RE.match(line) for line in lines):
        return "indented"
    return None


def _unfenced_code(text: str) -> list[tuple[int, int]]:
    """Spans of code in an answer without fences: runs of code paragraphs with only blank lines between them."""
    paragraphs, last = [], 0
    for m in _PARAGRAPH_SEP_RE.finditer(text):
        paragraphs.append((last, m.start()))
        last = m.end()
    paragraphs.append((last, len(text)))
    spans: list[tuple[int, int]] = []
    joined = False
    for a, b in paragraphs:
        if not text[a:b].strip():
            continue
        kind = _code_paragraph(text[a:b])
        if kind and joined:
            spans[-1] = (spans[-1][0], b)
        elif kind == "strong":
            spans.append((a, b))
        joined = bool(spans) and spans[-1][1] == b
    return spans


@functools.lru_cache(maxsize=256)  # applies() and the transformation itself both ask, for the same text
def _code_spans(text: str) -> tuple[tuple[int, int], ...]:
    """Where the code is: fenced blocks (fences included), the whole answer, or code paragraphs of an unfenced one."""
    fences = _fences(text)
    if fences:
        return tuple((f[0], f[3]) for f in fences)
    if is_python(text):
        return ((0, len(text)),)
    return tuple(_unfenced_code(text))


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


_DATA_LINE_RE = re.compile(r"^[ \t]*(?:\"[^\"\n]*\"[ \t]*:|[\w-]+:(?:[ \t]|$)|[\[\]{}]+,?[ \t]*$|- )")


def _is_data(text: str) -> bool:
    lines = [line for line in text.splitlines() if line.strip()]
    return sum(bool(_DATA_LINE_RE.match(line)) for line in lines) >= 0.6 * len(lines)


def _block_kind(info: str, body: str) -> str | None:
    if info in PYTHON_LANGS:
        return "python" if _py_scan(body) is not None else None
    if info in BRACES_LANGS:
        return "braces"
    if info:  # a language we have no comment syntax for (bash, sql, html, json, ...)
        return None
    if is_python(body):
        return "python"
    if is_python(body, _PY_CODE_NODES):  # "S = {1, 2}": Python-shaped expressions and assignments, no program
        return None
    if _is_json(body) or _is_data(body):  # unlabelled JSON or YAML is data: a comment would make it invalid
        return None
    return "braces" if looks_like_braces_code(body, 0.5) else None


@dataclass(frozen=True)
class CodeBlock:
    """The body of one code block in an answer: [start, end) characters, 'python' or 'braces', Rust or not."""

    start: int
    end: int
    kind: str
    rust: bool


def code_blocks(text: str) -> list[CodeBlock]:
    """The code the code transformations edit: fenced blocks of known languages, else the answer's code paragraphs."""
    fences = _fences(text)
    if fences:
        spans = [(f[1], f[2], f[4]) for f in fences]
    else:
        spans = [(a, b, "") for a, b in _code_spans(text)]
    out = []
    for start, end, info in spans:
        body = text[start:end]
        kind = _block_kind(info, body)
        if kind:
            rust = info in _RUST_LANGS or (not info and bool(_RUST_HINT_RE.search(body)))
            out.append(CodeBlock(start, end, kind, rust))
    return out


def has_code(text: str) -> bool:
    return bool(code_blocks(text))


def _map_code(text: str, rng: random.Random, python: Callable, braces: Callable) -> str:
    # Right to left, so the offsets of earlier blocks stay valid.
    for block in reversed(code_blocks(text)):
        body = text[block.start : block.end]
        new = python(body, rng) if block.kind == "python" else braces(body, rng, block.rust)
        text = text[: block.start] + new + text[block.end :]
    return text


# Python: the tokenizer knows comments and multi-line strings exactly.


@dataclass
class _PyScan:
    comments: list[tuple[int, int, str]]  # (row, col, text), rows from 1
    starts_in_string: set[int]  # rows whose start lies inside a multi-line string
    ends_in_string: set[int]  # rows whose line break lies inside a multi-line string


def _py_scan(code: str) -> _PyScan | None:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError):
        return None
    scan = _PyScan([], set(), set())
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            scan.comments.append((tok.start[0], tok.start[1], tok.string))
        elif tok.end[0] > tok.start[0] and tok.type not in (tokenize.NEWLINE, tokenize.NL):
            scan.starts_in_string.update(range(tok.start[0] + 1, tok.end[0] + 1))
            scan.ends_in_string.update(range(tok.start[0], tok.end[0]))
    return scan


def _lines(code: str) -> list[str]:
    # Split as the tokenizer reads, on "\n" only: str.splitlines also splits on \f and \u2028, shifting rows.
    return io.StringIO(code).readlines()


def _split_eol(line: str) -> tuple[str, str]:
    body = line.rstrip("\r\n")
    return body, line[len(body) :]


def _py_minify(code: str, rng: random.Random) -> str:
    scan = _py_scan(code)
    if scan is None:
        return code
    cut = {row: col for row, col, _ in scan.comments}
    out = []
    for row, line in enumerate(_lines(code), 1):
        body, eol = _split_eol(line)
        if row in cut:
            body = body[: cut[row]].rstrip()
        elif row not in scan.ends_in_string:
            body = body.rstrip()
        if body.strip() or row in scan.starts_in_string:
            out.append(body + eol)
    return "".join(out)


_CODE_HEADERS = ("Solution", "Implementation", "Code for the task above")
_SPECIAL_COMMENT_RE = re.compile(r"^#!|^#\s*(?:-\*-|coding[:=]|type:|noqa|pragma)|^//[/!]|^//\s*(?:go:|eslint|@ts-|nolint)")


def _header_comment(code: str, marker: str, rng: random.Random) -> tuple[int, str]:
    """(row index, line) of a neutral comment to insert before the first code line, indented like it."""
    lines = _lines(code)
    for i, line in enumerate(lines):
        if line.strip():
            indent = line[: len(line) - len(line.lstrip())]
            return i, f"{indent}{marker} {rng.choice(_CODE_HEADERS)}\n"
    return len(lines), f"{marker} {rng.choice(_CODE_HEADERS)}\n"


def _noted(comment: str, marker: str) -> str:
    rest = comment[len(marker) :].strip()
    return f"{marker} Note: {rest}" if rest and not rest.startswith("Note:") else comment


def _py_comments(code: str, rng: random.Random) -> str:
    scan = _py_scan(code)
    if scan is None:
        return code
    lines = _lines(code)
    for row, col, text in scan.comments:
        if not _SPECIAL_COMMENT_RE.match(text):
            line = lines[row - 1]
            lines[row - 1] = line[:col] + _noted(text, "#") + line[col + len(text) :]
    at, header = _header_comment(code, "#", rng)
    return "".join(lines[:at] + [header] + lines[at:])


# C-family: one regex finds comments and string/char literals left to right, so "//" in a string is no comment.
def _braces_token_re(rust: bool) -> re.Pattern[str]:
    # Rust's lifetimes ('a) are no literals: there only a one-character (or escaped) char literal counts.
    single = r"'(?:\\.[^'\n]{0,9}|[^\\'\n])'" if rust else r"'(?:\\.|[^\\'\n])*'"
    return re.compile(
        r"(?P<line>//[^\n]*)"
        r"|(?P<block>/\*.*?(?:\*/|\Z))"
        r"|(?P<string>(?<![\w])r(?P<hashes>#*)\".*?(?:\"(?P=hashes)|\Z)"  # Rust raw string
        r"|(?<![\w])(?:u8|u|U|L)?R\"(?P<delim>[^()\\\s]{0,16})\(.*?(?:\)(?P=delim)\"|\Z)"  # C++ raw string
        r"|\"(?:\\.|[^\"\\])*(?:\"|\Z)"
        r"|`[^`]*(?:`|\Z)"  # JS template literal, Go raw string
        r"|" + single + ")",
        re.S,
    )


_BRACES_RE = {False: _braces_token_re(False), True: _braces_token_re(True)}
_LAYOUT_RE = re.compile(r"[ \t]*\n\s*")


def _braces_minify(code: str, rng: random.Random, rust: bool) -> str:
    # Layout outside literals is free in C-family languages: collapse every line break with its surrounding
    # blanks to one "\n" (blank lines and indentation go). Line breaks stay: Go and JS insert semicolons there.
    pieces, layout, last = [], "", 0
    for m in _BRACES_RE[rust].finditer(code):
        layout += code[last : m.start()]
        last = m.end()
        if m.lastgroup == "line":
            continue
        if m.lastgroup == "block":
            layout += "\n" if "\n" in m.group() else " "
            continue
        pieces += [_LAYOUT_RE.sub("\n", layout), m.group()]
        layout = ""
    pieces.append(_LAYOUT_RE.sub("\n", layout + code[last:]))
    out = "".join(pieces).lstrip()
    return out if not code.endswith("\n") or out.endswith("\n") else out + "\n"


def _braces_comments(code: str, rng: random.Random, rust: bool) -> str:
    def note(m: re.Match[str]) -> str:
        text = m.group()
        return _noted(text, "//") if m.lastgroup == "line" and not _SPECIAL_COMMENT_RE.match(text) else text

    noted = _BRACES_RE[rust].sub(note, code)
    lines = _lines(noted)
    # The header goes before the first non-blank line, which cannot start inside a literal.
    at, header = _header_comment(noted, "//", rng)
    return "".join(lines[:at] + [header] + lines[at:])


@transform(
    "code_minify",
    "drop comments and blank lines (C-family: indentation too); code stays valid",
    applies=has_code,
    scope="answers with code",
)
def code_minify(text: str, rng: random.Random) -> str:
    return _map_code(text, rng, _py_minify, _braces_minify)


@transform(
    "code_comments",
    'add a comment at the top of each code block and prefix existing comments with "Note:"',
    applies=has_code,
    scope="answers with code",
    neutral=True,
)
def code_comments(text: str, rng: random.Random) -> str:
    return _map_code(text, rng, _py_comments, _braces_comments)


# ---------------------------------------------------------------- math

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


# ---------------------------------------------------------------- registry helpers


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


def _get(name: str | Transform) -> Transform:
    if isinstance(name, Transform):
        return name
    return TRANSFORMS[resolve_names([name])[0]]


# ---------------------------------------------------------------- applying to pairs


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
