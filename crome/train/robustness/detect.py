"""Where the code in an answer is, and in which language: fences, unfenced code paragraphs, code blocks.

Code is a fenced block or, in an answer without fences, the whole answer or a run of code
paragraphs (RM-Bench's plain variants, RewardBench's hep-* answers): Python is recognised by
`ast`, C-family code by its shape. Word-level noise keeps out of these spans; the code
transformations edit the blocks of languages whose comment syntax they know.
"""

from __future__ import annotations

import ast
import functools
import io
import json
import re
import textwrap
import tokenize
import warnings
from dataclasses import dataclass

_FENCE_LINE_RE = re.compile(r"^[ \t]*(```|~~~)[ \t]*([^\s`]*)")


def _lines(code: str) -> list[str]:
    # Split as the tokenizer reads, on "\n" only: str.splitlines also splits on \f and \u2028, shifting rows.
    return io.StringIO(code).readlines()


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
