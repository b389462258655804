"""Code transformations: minify and comment the code blocks of an answer; the program stays the same.

They edit Python and C-family code only (languages whose comment syntax they know); Python keeps
the same AST, C-family code the same tokens less comments.
"""

from __future__ import annotations

import random
import re
from typing import Callable

from crome.train.robustness.detect import _lines, _py_scan, code_blocks, has_code
from crome.train.robustness.registry import transform


def _map_code(text: str, rng: random.Random, python: Callable, braces: Callable) -> str:
    # Right to left, so the offsets of earlier blocks stay valid.
    for block in reversed(code_blocks(text)):
        body = text[block.start : block.end]
        new = python(body, rng) if block.kind == "python" else braces(body, rng, block.rust)
        text = text[: block.start] + new + text[block.end :]
    return text


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
