"""Factuality / correctness: perturb numbers, units, negations and comparisons (code: operators, off-by-one)."""

from __future__ import annotations

import math
import random
import re
from bisect import bisect_right
from dataclasses import dataclass

from crome.builder.oracles.rules.doc import Doc, Unsupported
from crome.schemas import Counterfactual


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
