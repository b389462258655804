"""The `rules` oracle: offline and deterministic, the default that makes the quickstart and CI run with no key.

It reads `request.context` (never the rendered prompt) and answers each task by heuristics:

- rubrics: a generic rubric set refined by the prompt type (code, math, safety-sensitive, open-ended);
- rate: follows the source label (see `rate`);
- degrade: honest single-attribute edits that keep the answer's surface (opening and closing
  sentence, markdown, lists, code fences, and its length where the rubric allows): completeness
  drops the later part of the body, factuality/correctness perturbs numbers, units, negations
  and comparisons, relevance swaps part of the middle for text of an unrelated answer, clarity
  scrambles sentence and list order;
- upgrade, verify, safety and unknown rubrics: `unsupported`, never faked.

Every draw comes from `random.Random(seed ^ hash(answer, rubric))`, so the same request always
gets the same rewrite, whatever the order of calls.
"""

from __future__ import annotations

import math
import random
import re
import time
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from pydantic import BaseModel

from crome.builder.oracles.base import Capabilities
from crome.schemas.calls import OracleRequest, OracleResponse
from crome.text import (
    BOLD_RE,
    BULLET_RE,
    FENCE_RE,
    HEADER_RE,
    NUMBERED_RE,
    TABLE_RE,
    Line,
    language_similarity,
    parse_lines,
    sentence_spans,
)
from crome.schemas.hashing import stable_hash
from crome.schemas import Counterfactual, Ratings, Rubric, RubricRating, Rubrics

# The line patterns of `crome.text`, searched anywhere in a multi-line part of an answer.
BULLET_LINE_RE = re.compile(BULLET_RE.pattern, re.M)
NUMBERED_LINE_RE = re.compile(NUMBERED_RE.pattern, re.M)
HEADER_LINE_RE = re.compile(HEADER_RE.pattern, re.M)
TABLE_LINE_RE = re.compile(TABLE_RE.pattern, re.M)
FENCE_LINE_RE = re.compile(FENCE_RE.pattern, re.M)


class Unsupported(Exception):
    """The rules cannot make this intervention honestly; the message says why."""


class BadContext(Exception):
    """The request context lacks a field the task needs (a caller bug, recorded as an error)."""


def _need(context: dict[str, Any], key: str, task: str) -> Any:
    if key not in context or context[key] is None:
        raise BadContext(f"rules oracle: the {task} request context has no {key!r} (got keys {sorted(context)})")
    return context[key]


def _rng(seed: int, answer: str, rubric: str) -> random.Random:
    # The answer's hash makes two answers under the same build seed draw differently.
    return random.Random(int(seed) ^ int(stable_hash([answer, rubric])[7:23], 16))


def _snippet(text: str, n: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


# =============================================================================================
# rubrics: prompt type by heuristics

# Prompt-type cues are matched as whole lower-case words against a set (a few microseconds for a
# long prompt; one big regex alternation costs 50-100 microseconds), phrases as substrings.
def _words(text: str) -> set[str]:
    return set(text.split())


_SAFETY_WORDS = _words(
    "weapon weapons gun guns firearm firearms bomb bombs explosive explosives ammunition poison poisons poisoning "
    "poisonous drug drugs cocaine heroin meth methamphetamine fentanyl overdose overdoses overdosed overdosing "
    "suicide suicides suicidal self-harm murder murders murdered murderer murdering assault assaulted assaulting "
    "terrorism terrorist terrorists hacking malware ransomware phishing keylogger steal stealing shoplift "
    "shoplifting launder laundering counterfeit counterfeiting fraud frauds fraudulent illegal illegally illicit "
    "smuggle smuggling smuggler smugglers trafficking extremism extremist extremists harass harassing harassment "
    "stalking stalker"
)
_SAFETY_PHRASES = (
    "kill myself", "kill himself", "kill herself", "kill someone", "kill people", "kill him", "kill her", "kill them",
    "hack into", "hacked into", "self harm", "hurt myself", "hurt someone", "hurt people",
)
_CODE_LANGS = {
    "python": "Python", "javascript": "JavaScript", "typescript": "TypeScript", "java": "Java", "c++": "C++", "c#": "C#",
    "golang": "Go", "rust": "Rust", "ruby": "Ruby", "php": "PHP", "swift": "Swift", "kotlin": "Kotlin", "scala": "Scala",
    "perl": "Perl", "haskell": "Haskell", "matlab": "MATLAB", "sql": "SQL", "mysql": "SQL", "postgresql": "SQL", "postgres": "SQL",
    "html": "HTML", "css": "CSS", "bash": "Bash", "powershell": "PowerShell", "react": "React", "node.js": "Node.js",
    "nodejs": "Node.js", "django": "Django", "flask": "Flask", "pandas": "pandas", "numpy": "NumPy", "flutter": "Flutter",
    "dart": "Dart", "vue": "Vue", "angular": "Angular", "jquery": "jQuery", "regex": "regex", "p5.js": "p5.js",
    "laravel": "Laravel", "docker": "Docker", "kubernetes": "Kubernetes", "vba": "VBA", "latex": "LaTeX", "phpunit": "PHPUnit",
    "unity": "Unity", "tensorflow": "TensorFlow", "pytorch": "PyTorch", "sklearn": "scikit-learn",
}
_CODE_LANG_PHRASES = {"r programming": "R", "shell script": "shell", "spring boot": "Spring Boot", "c language": "C", "in c,": "C"}
_CODE_WORDS = _words(
    "code script function functions method class compile compiler compiled debug debugging bug algorithm api "
    "program programming syntax stacktrace exception variable array string integer boolean library framework "
    "repository endpoint database query implement refactor runtime loop scripts methods classes algorithms "
    "programs variables arrays strings libraries frameworks queries databases bugs loops"
)
_CODE_SYNTAX_RE = re.compile(r"def \w+\(|console\.log|#include|public static|=>|\w\(\)|[;{]\s*$", re.M)
_MATH_WORDS = _words(
    "solve calculate calculated calculating calculation calculations compute equation equations integral derivative "
    "probability algebra algebraic geometry arithmetic theorem prove simplify factorise factorize polynomial matrix "
    "matrices logarithm logarithms statistics statistical quadratic fraction fractions percentage remainder divisible"
)
_MATH_PHRASES = ("word problem", "how many", "how much", "sum of", "product of", "square root")
_MATH_WEAK_WORDS = _words(
    "total average mean median ratio percent area volume speed distance rate cost price times twice half minutes "
    "hours km miles dollars $"
)
# "3 * 4", "x = 5", "2x + 3", "7 - 2" (spaced: "1-10" and "2016-08" are ranges and dates, not sums).
_MATH_EXPR_RE = re.compile(r"\d\s*[*/\u00d7\u00f7^=]\s*\(?\d|\d\s+[-+]\s+\(?\d|\b[a-z]\s*[=^]\s*-?\d|\b\d+[a-z]\s*[-+=]\s*\d|[\u221a\u03c0\u2211\u222b]")
_PROMPT_TOKEN_RE = re.compile(r"[a-z0-9_+#$.\-]+")
_DIGIT_RE = re.compile(r"\d")


def classify_prompt(prompt: str) -> tuple[str, str | None]:
    """(prompt type, programming language if any): safety > code > math > open."""
    low = prompt.lower()
    tokens = {t.strip(".-") or t for t in _PROMPT_TOKEN_RE.findall(low)}
    if tokens & _SAFETY_WORDS or any(p in low for p in _SAFETY_PHRASES):
        return "safety", None
    langs = [_CODE_LANGS[t] for t in sorted(tokens & _CODE_LANGS.keys())] + [v for k, v in _CODE_LANG_PHRASES.items() if k in low]
    code_words = len(tokens & _CODE_WORDS) + len({m.group(0) for m in _CODE_SYNTAX_RE.finditer(prompt)})
    code_score = 3 * ("```" in prompt) + 2 * len(langs) + min(code_words, 3)
    has_digits = bool(_DIGIT_RE.search(prompt))
    math_score = 2 * (len(tokens & _MATH_WORDS) + sum(p in low for p in _MATH_PHRASES)) + 2 * bool(_MATH_EXPR_RE.search(prompt))
    if has_digits:
        math_score += min(len(tokens & _MATH_WEAK_WORDS), 2)
    else:
        math_score -= 1  # "how many ways can I say hello" without a number is rarely arithmetic
    if code_score >= 2 and code_score >= math_score:
        return "code", langs[0] if langs else None
    if math_score >= 3:
        return "math", None
    return "open", None


RUBRIC_SETS: dict[str, list[tuple[str, str]]] = {
    "open": [
        ("factuality", "Every claim, number, date and name in the answer is accurate, and nothing false is stated as fact."),
        ("relevance", "The answer stays on the user's request, and every part of it serves that request."),
        ("completeness", "The answer covers every part of the request with the detail the user needs to act on it."),
        ("clarity", "The answer is easy to follow: logically ordered, well structured and plainly worded."),
    ],
    "code": [
        ("correctness", "The {lang} code is correct: it runs, handles edge cases and does exactly what the prompt asks."),
        ("completeness", "The answer gives everything needed to use the solution (all parts, imports and steps), not a fragment."),
        ("relevance", "The answer solves the stated programming task in the requested language and setting, without digressions."),
        ("clarity", "The code and its explanation are easy to follow, with clear structure, naming and step-by-step reasoning."),
    ],
    "math": [
        ("correctness", "Every calculation, formula and the final result are mathematically correct."),
        ("completeness", "The answer shows the steps needed to reach the result and answers every part of the question."),
        ("clarity", "The reasoning is laid out in a logical order the reader can check step by step."),
        ("relevance", "The answer works on exactly the problem posed, with its given numbers and conditions."),
    ],
    "safety": [
        ("safety", "The answer gives no instructions or content that could help cause harm and points to safe, legal alternatives."),
        ("relevance", "The answer addresses the user's underlying need instead of changing the subject."),
        ("completeness", "The answer covers the safe, helpful parts of the request and says plainly what it will not help with and why."),
        ("clarity", "The answer states its position and any guidance plainly and without ambiguity."),
    ],
}


def rubrics_for(prompt: str, conversation: str = "") -> Rubrics:
    kind, lang = classify_prompt(prompt)
    if kind == "open" and conversation and conversation != prompt:
        kind, lang = classify_prompt(conversation)  # "fix it" after a turn of code is about code
    return Rubrics(
        rubrics=[Rubric(name=name, definition=text.format(lang=lang or "submitted")) for name, text in RUBRIC_SETS[kind]]
    )


# =============================================================================================
# the answer as lines, sentences and body units


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


# =============================================================================================
# completeness: drop the later part of the body, keep opening, closing and format


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
            f"'{_snippet(first_gone)}' on) and kept the opening, the closing line and the formatting."
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


# =============================================================================================
# factuality / correctness: perturb numbers, units, negations and comparisons (code: operators, off-by-one)


@dataclass
class Site:
    line: int
    start: int
    end: int
    new: str
    kind: str  # number | unit | polarity | answer | code_op | code_int
    sent: int = -1  # sentence of the line: one negation per sentence, two would cancel out
    match: re.Match[str] | None = None  # a number: its wrong value is drawn only if the site is chosen


_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_NUM_RE = re.compile(
    r"(?<![\w.,/:-])(" + _NUM + r")(?:(\s*(?:-|\u2013|to)\s*)(" + _NUM + r"))?(?![\w]|[.,]\d)(%?)"
)
_UNIT_SWAP = {
    "\u00b0F": "\u00b0C", "\u00b0C": "\u00b0F", "km": "miles", "miles": "km", "mile": "km", "kg": "lbs", "lbs": "kg", "lb": "kg",
    "pounds": "kilograms", "kilograms": "pounds", "grams": "ounces", "ounces": "grams", "g": "oz", "oz": "g", "cm": "inches",
    "inches": "cm", "mm": "cm", "meters": "feet", "feet": "meters", "ft": "m", "minutes": "hours", "hours": "minutes",
    "minute": "hour", "hour": "minute", "seconds": "minutes", "second": "minute", "days": "weeks", "weeks": "days",
    "day": "week", "week": "day", "months": "years", "years": "months", "month": "year", "year": "month",
    "million": "billion", "billion": "million", "thousand": "million", "mph": "km/h", "km/h": "mph", "GB": "MB", "MB": "GB",
    "liters": "gallons", "gallons": "liters", "ml": "cups", "cups": "ml", "tablespoons": "teaspoons",
    "teaspoons": "tablespoons", "tablespoon": "teaspoon", "teaspoon": "tablespoon",
}
_UNIT_RE = re.compile(r"(?<=\d)([\s-]?)(" + "|".join(re.escape(u) for u in sorted(_UNIT_SWAP, key=len, reverse=True)) + r")(?![\w/])")
_POLARITY = {
    "is not": "is", "are not": "are", "was not": "was", "were not": "were", "does not": "does", "do not": "do",
    "did not": "did", "cannot": "can", "can not": "can", "will not": "will", "should not": "should", "must not": "must",
    "could not": "could", "would not": "would", "isn't": "is", "aren't": "are", "wasn't": "was", "weren't": "were",
    "doesn't": "does", "don't": "do", "didn't": "did", "can't": "can", "won't": "will", "shouldn't": "should",
    "couldn't": "could", "wouldn't": "would",
    "is": "is not", "are": "are not", "was": "was not", "were": "were not", "can": "cannot", "will": "will not",
    "should": "should not", "must": "must not",
    "always": "never", "never": "always", "more than": "less than", "less than": "more than", "fewer than": "more than",
    "higher": "lower", "lower": "higher", "larger": "smaller", "smaller": "larger", "increases": "decreases",
    "decreases": "increases", "increase": "decrease", "decrease": "increase", "increased": "decreased",
    "decreased": "increased", "before": "after", "after": "before", "true": "false", "false": "true",
    "correct": "incorrect", "incorrect": "correct", "possible": "impossible", "impossible": "possible",
    "safe": "unsafe", "unsafe": "safe", "best": "worst", "worst": "best", "most": "least", "least": "most",
    "north": "south", "south": "north", "east": "west", "west": "east", "positive": "negative", "negative": "positive",
}
_POLARITY.update({k.replace("'", "\u2019"): v for k, v in _POLARITY.items() if "'" in k})
_POLARITY_FIRST = {k.split()[0] for k in _POLARITY} | {"yes", "no"}
_WORD_SCAN_RE = re.compile(r"[A-Za-z]+(?:['\u2019][A-Za-z]+)?")
_NEXT_WORD_RE = re.compile(r"\s+(not|than)\b", re.I)
_ANSWER_END_RE = re.compile(r"\s*(?:[.,!;:]|$)")
_BE = {"is", "are", "was", "were"}
_EXISTENTIAL_RE = re.compile(r"\b(?:here|there)\s+$", re.I)
# Code bugs that still parse: a flipped comparison or boolean, a sign, an off-by-one literal.
_CODE_OPS = {
    " === ": " !== ", " !== ": " === ", " == ": " != ", " != ": " == ", " < ": " <= ", " <= ": " < ", " > ": " >= ",
    " >= ": " > ", " && ": " || ", " || ": " && ", " and ": " or ", " or ": " and ", " - ": " + ", " + ": " - ",
    "True": "False", "False": "True", "true": "false", "false": "true",
}
_CODE_OP_RE = re.compile(r"( === | !== | == | != | <= | >= | < | > | && | \|\| | and | or | - | \+ )|(?<![\w\"'])(True|False|true|false)(?![\w\"'])")
_CODE_INT_RE = re.compile(r"(?<![\w.#\"'$])\d+(?![\w.])")
_MASK_RE = re.compile(r"https?://\S+|`[^`\n]+`|\[[^\]\n]*\]\([^)\n]*\)")
_SKIP_LINE_RE = re.compile(r"^\W*confidence\b", re.I)
# Enumerations are format, not facts: "Step 3", "Option 2", "#4", "Chapter 1".
_ENUM_BEFORE_RE = re.compile(r"(?:\b(?:step|option|part|chapter|section|item|question|example|level|phase|day|tip|rule|point|no)\s*|#)$", re.I)


def _match_case(src: str, new: str) -> str:
    if src.isupper() and len(src) > 1:
        return new.upper()
    if src[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


def _format_number(value: float, decimals: int, commas: bool) -> str:
    return f"{value:,.{decimals}f}" if commas else f"{value:.{decimals}f}"


def _parse_number(tok: str) -> tuple[float, int, bool]:
    decimals = len(tok.split(".", 1)[1]) if "." in tok else 0
    return float(tok.replace(",", "")), decimals, "," in tok


def perturb_numbers(tokens: list[str], rng: random.Random, percent: bool = False) -> list[str]:
    """A wrong but plausible value for each number, one shared operation so a range stays a range.

    Years move by a few years, small counts by one to three, percentages by 10 to 25 points,
    other values by a factor (x0.5 to x2) rounded to the original's precision (400 -> 300, not 312.7).
    """
    parsed = [_parse_number(t) for t in tokens]
    values = [p[0] for p in parsed]
    ints = all(p[1] == 0 for p in parsed)
    if ints and all(1000 <= v <= 2100 and len(t) == 4 for v, t in zip(values, tokens)):
        delta = rng.choice([-12, -7, -5, -3, -2, 2, 3, 5, 7, 12])
        return [str(int(v) + delta) for v in values]
    if percent and all(0 <= v <= 100 for v in values):
        delta = rng.choice([-25, -15, -10, 10, 15, 25])
        if any(not 0 <= v + delta <= 100 for v in values):
            delta = -delta
        return [_format_number(v + delta, d, c) for v, (_, d, c) in zip(values, parsed)]
    if ints and max(values) <= 12:
        delta = rng.choice([-2, -1, 1, 2, 3])
        if min(values) + delta < 1:
            delta = abs(delta)
        return [str(int(v) + delta) for v in values]
    factor = rng.choice([0.5, 0.6, 0.75, 1.25, 1.5, 2.0])
    out = []
    for tok, (v, d, c) in zip(tokens, parsed):
        if d == 0:
            digits = tok.replace(",", "")
            zeros = len(digits) - len(digits.rstrip("0"))
            grain = 10 ** min(zeros, len(digits) - 1)
            new = round(v * factor / grain) * grain
            if new == v:
                new = v + grain
            out.append(_format_number(new, 0, c))
        else:
            new = round(v * factor, d)
            if new == v:
                new = v + 10**-d
            out.append(_format_number(new, d, c))
    return out


def _masked(spans: list[tuple[int, int]], a: int, b: int) -> bool:
    return any(a < e and s < b for s, e in spans)


def find_fact_sites(doc: Doc) -> list[Site]:
    """Every place a fact can be made wrong; code lines give code sites. Wrong numbers are drawn later."""
    sites: list[Site] = []
    for i, line in enumerate(doc.lines):
        text = line.text
        if line.kind == "code":
            taken: list[tuple[int, int]] = []
            for m in _CODE_OP_RE.finditer(text):
                tok = m.group(0)
                if tok in (" + ", " - ") and (text[: m.start()].rstrip()[-1:] in "\"'`" or text[m.end() :].lstrip()[:1] in "\"'`"):
                    continue  # string concatenation: "-" would not compile, an obvious rather than a subtle bug
                sites.append(Site(i, m.start(), m.end(), _CODE_OPS[tok], "code_op"))
                taken.append((m.start(), m.end()))
            for m in _CODE_INT_RE.finditer(text):
                if not _masked(taken, m.start(), m.end()):
                    sites.append(Site(i, m.start(), m.end(), str(int(m.group(0)) + 1), "code_int"))
            continue
        if line.kind not in ("prose", "bullet", "numbered", "table") or _SKIP_LINE_RE.match(line.body):
            continue
        offset = len(line.prefix)
        mask = [(m.start(), m.end()) for m in _MASK_RE.finditer(text)] + [(0, offset)]
        ends = [offset + b for _, b in doc.spans.get(i, ())]
        for m in _NUM_RE.finditer(text, offset):
            if _masked(mask, m.start(), m.end()) or _ENUM_BEFORE_RE.search(text, max(0, m.start() - 12), m.start()):
                continue
            sites.append(Site(i, m.start(), m.end(), "", "number", bisect_right(ends, m.start()), m))
        for m in _UNIT_RE.finditer(text, offset):
            if not _masked(mask, m.start(), m.end()):
                sites.append(Site(i, m.start(2), m.end(2), _UNIT_SWAP[m.group(2)], "unit", bisect_right(ends, m.start())))
        question = text.rstrip().endswith("?")  # a question in the answer is no claim: "What is not..." only garbles it
        # One pass over the words (a set lookup each) finds yes/no answers and polarity words alike.
        for m in _WORD_SCAN_RE.finditer(text, offset):
            low = m.group(0).lower()
            if low not in _POLARITY_FIRST or text[m.start() - 1 : m.start()] == "-" or text[m.end() : m.end() + 1] == "-":
                continue
            if _masked(mask, m.start(), m.end()):
                continue
            if low in ("yes", "no"):
                if _ANSWER_END_RE.match(text, m.end()):
                    new = _match_case(m.group(0), "no" if low == "yes" else "yes")
                    sites.append(Site(i, m.start(), m.end(), new, "answer", bisect_right(ends, m.start())))
                continue
            if question:
                continue
            end, key = m.end(), low
            nxt = _NEXT_WORD_RE.match(text, end)
            if nxt and f"{low} {nxt.group(1).lower()}" in _POLARITY:
                end, key = nxt.end(), f"{low} {nxt.group(1).lower()}"
            elif low not in _POLARITY:
                continue
            if low in _BE and key == low and _EXISTENTIAL_RE.search(text, max(0, m.start() - 8), m.start()):
                continue  # "Here is a function" -> "Here is not a function" is garble, not a wrong fact
            sites.append(Site(i, m.start(), end, _match_case(text[m.start() : end], _POLARITY[key]), "polarity", bisect_right(ends, m.start())))
    return sites


def _wrong_number(m: re.Match[str], rng: random.Random) -> str:
    toks = [m.group(1)] + ([m.group(3)] if m.group(3) else [])
    new = perturb_numbers(toks, rng, percent=bool(m.group(4)))
    return new[0] + (m.group(2) + new[1] if m.group(3) else "") + m.group(4)


# How many facts to make wrong: about one per 50 words, at least 3 ("several places", and enough
# for validation's changed-words floor), at most 8 and never more than 60% of the candidates, so
# the answer stays recognisably itself and reads as confidently wrong rather than garbled.
FACT_SHARE, FACT_MIN, FACT_MAX, FACT_CAP = 0.02, 3, 8, 0.6


def degrade_factuality(answer: str, rng: random.Random, donor: str) -> Counterfactual:
    doc = Doc(answer)
    sites = find_fact_sites(doc)
    if not sites:
        raise Unsupported("no numbers, dates, units, negations or comparisons to perturb")
    # Hard facts (numbers, units, yes/no, code) before polarity flips, and the body before the
    # opening and closing sentences (the surface), each group in drawn order.
    rng.shuffle(sites)
    last_sent = len(doc.sents.get(doc.last, ())) - 1

    def rank(s: Site) -> tuple[bool, bool]:
        edge = (s.line == doc.first and s.sent == 0) or (s.line == doc.last and s.sent >= last_sent)
        return edge, s.kind in ("polarity", "code_int")  # an off-by-one literal may only shift a drawing

    sites.sort(key=rank)
    target = min(FACT_MAX, max(FACT_MIN, round(FACT_SHARE * len(answer.split()))))
    target = min(target, max(1, math.ceil(FACT_CAP * len(sites))))
    chosen: list[Site] = []
    flipped: set[tuple[int, int]] = set()
    for s in sites:
        if len(chosen) >= target:
            break
        if any(c.line == s.line and c.start < s.end and s.start < c.end for c in chosen):
            continue
        if s.kind == "polarity":
            if (s.line, s.sent) in flipped:
                continue  # "not impossible" flipped twice is "possible": true again
            flipped.add((s.line, s.sent))
        if s.match is not None:
            s.new = _wrong_number(s.match, rng)
        chosen.append(s)
    by_line: dict[int, list[Site]] = {}
    for s in chosen:
        by_line.setdefault(s.line, []).append(s)
    new_lines: dict[int, str | None] = {}
    for i, line_sites in by_line.items():
        text = doc.lines[i].text
        for s in sorted(line_sites, key=lambda s: s.start, reverse=True):
            text = text[: s.start] + s.new + text[s.end :]
        new_lines[i] = text
    examples = ", ".join(
        f"'{doc.lines[s.line].text[s.start:s.end]}' -> '{s.new.strip()}'" for s in sorted(chosen, key=lambda s: (s.line, s.start))[:3]
    )
    return Counterfactual(
        rewrite=doc.render(new_lines),
        change=f"Made {len(chosen)} statement(s) wrong ({examples}{', ...' if len(chosen) > 3 else ''}) and left wording and format as they were.",
    )


# =============================================================================================
# relevance: part of the middle becomes text from an unrelated answer


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
            f"('{_snippet(borrowed[0])}'), keeping the opening, the closing line and the formatting."
        ),
    )


# =============================================================================================
# clarity: scramble sentence order within paragraphs and item order within lists


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


# =============================================================================================
# the oracle

Intervention = Callable[[str, random.Random, str], Counterfactual]
INTERVENTIONS: dict[str, Intervention] = {
    "completeness": degrade_completeness,
    "factuality": degrade_factuality,
    "correctness": degrade_factuality,
    "relevance": degrade_relevance,
    "clarity": degrade_clarity,
}
# Other names LLM rubric sets use for the same attributes.
ALIASES = {
    "accuracy": "factuality", "truthfulness": "factuality", "factual_accuracy": "factuality", "honesty": "factuality",
    "thoroughness": "completeness", "comprehensiveness": "completeness", "detail": "completeness",
    "on_topic": "relevance", "topicality": "relevance", "instruction_following": "relevance",
    "coherence": "clarity", "readability": "clarity", "organization": "clarity", "organisation": "clarity",
    "structure": "clarity",
}


def degrade(answer: str, rubric: str, donor: str, seed: int) -> Counterfactual:
    name = ALIASES.get(rubric, rubric)
    fn = INTERVENTIONS.get(name)
    if fn is None:
        if name in ("safety", "harmlessness", "harm_avoidance"):
            raise Unsupported("the rules oracle cannot judge or change safety; it never fakes a safety intervention")
        raise Unsupported(f"the rules oracle has no intervention for rubric {rubric!r}")
    if not answer.strip():
        raise Unsupported("the answer is empty")
    result = fn(answer, _rng(seed, answer, name), donor or "")
    if result.rewrite == answer:
        raise Unsupported(f"the {name} intervention found nothing to change")
    return result


RATE_REASON = {
    # The rules oracle has no judgement of its own: the source label is its only signal.
    "chosen": "Rated strong because the source labels this answer as chosen; the rules oracle has no judgement beyond the label.",
    "rejected": "Rated weak because the source labels this answer as rejected; the rules oracle has no judgement beyond the label.",
}


def rate(side: str, rubrics: list[str]) -> Ratings:
    if side not in RATE_REASON:
        raise BadContext(f"rules oracle: rate needs side 'chosen' or 'rejected', got {side!r}")
    if not rubrics:
        raise BadContext("rules oracle: the rate request context has an empty 'rubrics' list")
    rating = "strong" if side == "chosen" else "weak"
    return Ratings(ratings=[RubricRating(rubric=name, rating=rating, reason=RATE_REASON[side]) for name in rubrics])


class RulesOracle:
    """Heuristic rubrics, label-following ratings and honest single-attribute degrades; no model, no network."""

    provider: ClassVar[str] = "rules"
    # No judge: no upgrades, safety rewrites or verdicts; offline, so no price and nothing to batch.
    # It works on the request's context, not its rendered text: those fields are what it reads.
    capabilities: ClassVar[Capabilities] = Capabilities(
        upgrade=False, safety=False, verify=False, priced=False, batch=False,
        context_keys=frozenset({"prompt", "conversation", "rubrics", "side", "answer", "rubric", "donor", "seed"}),
    )

    def __init__(self, model: str = "rules", **options: Any):
        # Options for LLM oracles (concurrency, rpm, base_url) mean nothing here and are ignored.
        self.model = model or "rules"

    @property
    def name(self) -> str:
        return "rules"

    async def agenerate(self, request: OracleRequest) -> OracleResponse:
        return self.generate(request)

    async def aclose(self) -> None:
        return None  # nothing is held open

    def generate(self, request: OracleRequest) -> OracleResponse:
        """The synchronous core (the work is microseconds of string handling, there is nothing to await)."""
        t0 = time.perf_counter()
        ctx = request.context
        try:
            parsed = self._dispatch(request.task, ctx)
        except Unsupported as exc:
            return OracleResponse(status="unsupported", error=str(exc), latency_s=time.perf_counter() - t0)
        except BadContext as exc:
            return OracleResponse(status="error", error=str(exc), latency_s=time.perf_counter() - t0)
        return OracleResponse(status="ok", parsed=parsed, raw=parsed.model_dump_json(), latency_s=time.perf_counter() - t0)

    def _dispatch(self, task: str, ctx: dict[str, Any]) -> BaseModel:
        if task == "rubrics":
            return rubrics_for(str(_need(ctx, "prompt", task)), str(ctx.get("conversation") or ""))
        if task == "rate":
            names = [r["name"] if isinstance(r, dict) else str(r) for r in _need(ctx, "rubrics", task)]
            return rate(str(_need(ctx, "side", task)), names)
        if task == "degrade":
            return degrade(str(_need(ctx, "answer", task)), str(_need(ctx, "rubric", task)), str(ctx.get("donor") or ""), int(ctx.get("seed") or 0))
        if task == "upgrade":
            raise Unsupported("the rules oracle cannot write better answers; use an LLM oracle for upgrades")
        if task == "verify":
            raise Unsupported("verification needs a judge; the rules oracle has none")
        raise Unsupported(f"the rules oracle has no task {task!r}")


__all__ = ["ALIASES", "INTERVENTIONS", "RUBRIC_SETS", "RulesOracle", "Unsupported", "classify_prompt", "degrade", "rate", "rubrics_for"]
