"""Validation of a rewrite against its original: small pure checks, each with a figure.

A causal pair is (original, rewrite). It teaches the right thing only if the rewrite really
differs (edit ratio), is still a whole answer of about the same size (length ratio, not
truncated, same language), carries no talk about the rewriting (meta commentary) and keeps the
original's surface: opening and closing lines, markdown, lists, code fences (DESIGN: "an
intervention changes one rubric and nothing else"). Every check runs, so a rejected rewrite
still reports all its figures.
"""

from __future__ import annotations

import difflib
import re
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field

from crome.text import BOLD_RE, Line, closing, fence_count, language_similarity, opening, parse_lines
from crome.schemas.rows import Quality


class ValidationConfig(BaseModel):
    """Thresholds of the rewrite checks; recorded in the build options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Below 3% of the words changed, a rewrite is the original with cosmetic edits: no counterfactual ...
    min_edit_ratio: float = Field(default=0.03, ge=0.0, le=1.0)
    # ... unless it changes this many words: a factual edit is a few words by nature (400 -> 350,
    # "can" -> "cannot"), and 3% of a 600-word answer would demand 18 wrong facts. A returned original
    # or a punctuation/whitespace touch-up changes no word at all.
    min_changed_words: int = Field(default=2, ge=1)
    # A completeness degrade may drop up to ~60% of the body; under 30% of the length it is another answer.
    min_length_ratio: float = Field(default=0.3, gt=0.0)
    # An upgrade may add what was missing; past twice the length, length itself becomes the difference.
    max_length_ratio: float = Field(default=2.0, gt=0.0)
    # Below 60% of the surface features kept, the pair also differs in format: the shortcut Crome removes.
    min_surface_kept: float = Field(default=0.6, ge=0.0, le=1.0)
    # Script and stopword profiles overlapping under 50% means the rewrite changed language.
    min_language_similarity: float = Field(default=0.5, ge=0.0, le=1.0)
    # An opening or closing sentence counts as kept at 75% character similarity or with at most this many
    # words changed, so a changed number or a flipped "No" in it still counts as the same line.
    line_similarity: float = Field(default=0.75, ge=0.0, le=1.0)
    line_changed_words: int = Field(default=2, ge=0)


class CheckResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    passed: bool
    figure: float | None = None
    detail: str = ""
    reason: str | None = Field(default=None, description="machine-readable rejection reason when failed, e.g. edit_ratio_too_low")


class ValidationResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    passed: bool
    checks: list[CheckResult]

    @property
    def failed(self) -> str | None:
        """Name of the first failed check: the rejection reason; None when all passed."""
        return next((c.name for c in self.checks if not c.passed), None)

    @property
    def reason(self) -> str | None:
        """The first failed check's specific reason (e.g. length_ratio_too_low) for rejection counts."""
        return next((c.reason or c.name for c in self.checks if not c.passed), None)

    @property
    def detail(self) -> str:
        """One line for a person: every failed check with its detail."""
        return "; ".join(f"{c.name}: {c.detail}" for c in self.checks if not c.passed)

    def check(self, name: str) -> CheckResult:
        return next(c for c in self.checks if c.name == name)

    def figure(self, name: str) -> float | None:
        return self.check(name).figure

    def failed_check(self) -> CheckResult | None:
        return next((c for c in self.checks if not c.passed), None)

    def passed_names(self) -> list[str]:
        return [c.name for c in self.checks if c.passed]

    def quality_fields(self) -> dict[str, float | None]:
        """The figures that have a column in `Quality`."""
        return {name: self.figure(name) for name in ("edit_ratio", "length_ratio", "surface_kept")}

    def quality(self, **extra: object) -> Quality:
        """The row's Quality: figures of this validation plus any other fields (verification, ...)."""
        fields: dict[str, object] = {"checks": self.passed_names(), **self.quality_fields()}
        fields.update(extra)
        return Quality(**fields)


Check = Callable[[str, str, bool, ValidationConfig], CheckResult]

# ---------------------------------------------------------------------------------------------
# edit ratio

# Words only, lower-cased: punctuation, whitespace and markdown markers are format, which
# `surface_kept` judges; the edit ratio measures content. CJK characters are words of their own:
# those scripts put no spaces between words.
_WORD_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W_]+")


def words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def edit_stats(original: str, rewrite: str) -> tuple[float, int]:
    """(normalised edit distance 1 - 2M/T over words, words changed): the distance is 0 identical, 1 disjoint.

    M is the number of matched words, T both lengths. The common prefix and suffix are matched
    first, which makes the usual rewrite (a changed middle) fast; difflib's autojunk keeps
    2,000-word answers within a few milliseconds.
    """
    a, b = words(original), words(rewrite)
    total = len(a) + len(b)
    if total == 0:
        return 0.0, 0
    lo, n = 0, min(len(a), len(b))
    while lo < n and a[lo] == b[lo]:
        lo += 1
    hi = 0
    while hi < n - lo and a[-1 - hi] == b[-1 - hi]:
        hi += 1
    mid_a, mid_b = a[lo : len(a) - hi], b[lo : len(b) - hi]
    matched = lo + hi
    if not (mid_a and mid_b):
        return 1.0 - 2.0 * matched / total, len(mid_a) + len(mid_b)
    changed = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, mid_a, mid_b).get_opcodes():
        if tag == "equal":
            matched += i2 - i1
        else:
            changed += max(i2 - i1, j2 - j1)  # a substitution is one change, a deletion and an insertion two
    return 1.0 - 2.0 * matched / total, changed


def edit_ratio(original: str, rewrite: str) -> float:
    return edit_stats(original, rewrite)[0]


# ---------------------------------------------------------------------------------------------
# meta commentary: talk about the rewriting that leaked into the answer

_LEAD = r"^\W*(?:(?:sure|certainly|okay|ok|of course)\W+)?"
_REWROTE = r"(?:re-?written|rewrote|revised|modified|edited|updated|improved|degraded|upgraded|corrected|altered)"
META_PATTERNS: dict[str, re.Pattern[str]] = {
    "here_is_the_rewrite": re.compile(
        _LEAD + r"(?:here(?:'s|\u2019s| is| are)|below is|this is)\s+(?:the|a|an|my|your)?\s*(?:new\s+)?" + _REWROTE + r"\b",
        re.I | re.M,
    ),
    "rewrite_label": re.compile(r"^\W*(?:" + _REWROTE + r"|new)\s+(?:answer|response|version|text|reply)\W*:", re.I | re.M),
    "as_an_ai": re.compile(r"\bas an ai\b", re.I),
    "i_rewrote_the_answer": re.compile(
        r"\bI(?:'ve|\u2019ve| have)?\s+" + _REWROTE + r"\s+(?:the|this|your|my)\s+(?:original\s+)?(?:answer|response|text|version|reply)\b",
        re.I,
    ),
    "note_on_changes": re.compile(
        r"\(\s*(?:note|n\.b\.|changes?)\s*:[^)]{0,300}?\b(?:chang|rewr|revis|modif|remov|introduc|degrad|upgrad|alter)", re.I
    ),
    "changes_line": re.compile(r"^\W*(?:changes? made|explanation of changes|what (?:i|was) changed)\s*:", re.I | re.M),
}


def meta_matches(original: str, rewrite: str) -> dict[str, int]:
    """Per pattern, how many more times it matches the rewrite than the original.

    A phrase the original already has ("As an AI", "Here is the revised essay" when the user
    asked for a revision) is part of the kept surface, not commentary about the rewrite.
    """
    out = {}
    for name, pat in META_PATTERNS.items():
        extra = len(pat.findall(rewrite)) - (len(pat.findall(original)) if original else 0)
        if extra > 0:
            out[name] = extra
    return out


# ---------------------------------------------------------------------------------------------
# truncation

_OPEN_END_CHARS = set(",;:-\u2013\u2014(/[{&+=")


def ends_open(text: str) -> bool:
    """True when the text stops mid-sentence or inside a code fence."""
    t = text.rstrip()
    if not t:
        return False
    if fence_count(t) % 2:
        return True
    last = parse_lines(t)[-1]
    if last.kind in ("fence", "code", "header", "table", "bullet", "numbered"):
        return False
    last_char = t[-1]
    return last_char in _OPEN_END_CHARS or last_char.isalpha() and last.text.strip().count(" ") >= 3


# ---------------------------------------------------------------------------------------------
# surface features


def _similar(a: str, b: str, floor: float, max_changed_words: int) -> bool:
    if a == b:
        return True
    a, b = a[:400], b[:400]  # an opening sentence; a cap keeps a one-paragraph answer cheap
    if difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= floor:
        return True
    wa, wb = words(a), words(b)
    if not wa or not wb:
        return False
    same = sum(m.size for m in difflib.SequenceMatcher(None, wa, wb, autojunk=False).get_matching_blocks())
    return max(len(wa), len(wb)) - same <= max_changed_words


def surface_features(text: str, lines: list[Line] | None = None) -> dict[str, object]:
    """The format a causal pair must not change: opening, closing, headers, lists, code, tables, bold."""
    lines = lines if lines is not None else parse_lines(text)
    kinds = {line.kind for line in lines}
    return {
        "opening": opening(text, lines),
        "closing": closing(text, lines),
        "headers": "header" in kinds,
        "bullets": "bullet" in kinds,
        "numbered": "numbered" in kinds,
        "tables": "table" in kinds,
        "code_fences": sum(1 for line in lines if line.kind == "fence"),
        "bold": bool(BOLD_RE.search(text)),
    }


def surface_kept(original: str, rewrite: str, line_similarity: float = 0.75, line_changed_words: int = 2) -> tuple[float, list[str]]:
    """(share of applicable surface features the rewrite kept, names of those it lost).

    Opening and closing always apply; a format feature applies when either text has it, so a
    plain answer is judged on its opening and closing alone (absent-in-both would inflate the share).
    """
    fo, fr = surface_features(original), surface_features(rewrite)
    applicable, lost = 0, []
    for name, value in fo.items():
        if name in ("opening", "closing"):
            applicable += 1
            if not _similar(str(value), str(fr[name]), line_similarity, line_changed_words):
                lost.append(name)
        elif value or fr[name]:
            applicable += 1
            if name == "code_fences":
                # Code present in both, fences balanced alike. The number of blocks may fall like the
                # number of list items does when a completeness degrade drops the later part.
                if not (value and fr[name] and value % 2 == fr[name] % 2):  # type: ignore[operator]
                    lost.append(name)
            elif value != fr[name]:
                lost.append(name)
    return (1.0 - len(lost) / applicable if applicable else 1.0), lost


# ---------------------------------------------------------------------------------------------
# the checks


def check_non_empty(original: str, rewrite: str, truncated: bool, cfg: ValidationConfig) -> CheckResult:
    n = len(rewrite.strip())
    return CheckResult(name="non_empty", passed=n > 0, figure=float(n), detail=f"{n} characters", reason=None if n else "empty_rewrite")


def check_edit_ratio(original: str, rewrite: str, truncated: bool, cfg: ValidationConfig) -> CheckResult:
    r, changed = edit_stats(original, rewrite)
    ok = r >= cfg.min_edit_ratio or changed >= cfg.min_changed_words
    return CheckResult(
        name="edit_ratio", passed=ok, figure=round(r, 4),
        detail=f"{r:.3f}, {changed} word(s) changed (floor {cfg.min_edit_ratio} or {cfg.min_changed_words} words)",
        reason=None if ok else "edit_ratio_too_low",
    )


def check_length_ratio(original: str, rewrite: str, truncated: bool, cfg: ValidationConfig) -> CheckResult:
    if not original:
        return CheckResult(name="length_ratio", passed=False, detail="the original is empty", reason="empty_original")
    r = len(rewrite) / len(original)
    if r < cfg.min_length_ratio:
        reason = "length_ratio_too_low"
    elif r > cfg.max_length_ratio:
        reason = "length_ratio_too_high"
    else:
        reason = None
    return CheckResult(
        name="length_ratio", passed=reason is None, figure=round(r, 4),
        detail=f"{r:.2f} (band [{cfg.min_length_ratio}, {cfg.max_length_ratio}])", reason=reason,
    )


def check_no_meta_commentary(original: str, rewrite: str, truncated: bool, cfg: ValidationConfig) -> CheckResult:
    found = meta_matches(original, rewrite)
    n = sum(found.values())
    return CheckResult(
        name="no_meta_commentary", passed=n == 0, figure=float(n),
        detail=", ".join(f"{k} x{v}" for k, v in found.items()) or "none", reason="meta_commentary" if n else None,
    )


def check_not_truncated(original: str, rewrite: str, truncated: bool, cfg: ValidationConfig) -> CheckResult:
    if truncated:
        return CheckResult(name="not_truncated", passed=False, figure=1.0, detail="the oracle stopped at its output limit", reason="truncated")
    if ends_open(rewrite) and not ends_open(original):
        detail = "unbalanced code fence" if fence_count(rewrite.rstrip()) % 2 else "ends mid-sentence"
        return CheckResult(name="not_truncated", passed=False, figure=1.0, detail=detail, reason="truncated")
    return CheckResult(name="not_truncated", passed=True, figure=0.0, detail="ends where the original ends")


def check_same_language(original: str, rewrite: str, truncated: bool, cfg: ValidationConfig) -> CheckResult:
    sim = language_similarity(original, rewrite)
    if sim is None:
        return CheckResult(name="same_language", passed=True, detail="too few letters to tell")
    ok = sim >= cfg.min_language_similarity
    return CheckResult(
        name="same_language", passed=ok, figure=round(sim, 4), detail=f"profile overlap {sim:.2f} (floor {cfg.min_language_similarity})",
        reason=None if ok else "language_changed",
    )


def check_surface_kept(original: str, rewrite: str, truncated: bool, cfg: ValidationConfig) -> CheckResult:
    share, lost = surface_kept(original, rewrite, cfg.line_similarity, cfg.line_changed_words)
    ok = share >= cfg.min_surface_kept
    return CheckResult(
        name="surface_kept", passed=ok, figure=round(share, 4),
        detail=(f"lost {', '.join(lost)}" if lost else "all kept") + f" (floor {cfg.min_surface_kept})",
        reason=None if ok else "surface_changed",
    )


CHECKS: dict[str, Check] = {
    "non_empty": check_non_empty,
    "edit_ratio": check_edit_ratio,
    "length_ratio": check_length_ratio,
    "no_meta_commentary": check_no_meta_commentary,
    "not_truncated": check_not_truncated,
    "same_language": check_same_language,
    "surface_kept": check_surface_kept,
}

DEFAULT_CONFIG = ValidationConfig()


def validate_rewrite(original: str, rewrite: str, *, truncated: bool = False, cfg: ValidationConfig = DEFAULT_CONFIG) -> ValidationResult:
    """Run every check on (original, rewrite); passed only when all pass."""
    checks = [fn(original, rewrite, truncated, cfg) for fn in CHECKS.values()]
    return ValidationResult(passed=all(c.passed for c in checks), checks=checks)


__all__ = [
    "CHECKS", "CheckResult", "ValidationConfig", "ValidationResult", "edit_ratio", "edit_stats", "ends_open", "language_similarity",
    "meta_matches", "surface_features", "surface_kept", "validate_rewrite",
]
