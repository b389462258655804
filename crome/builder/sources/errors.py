"""The two ways a source goes wrong: the whole source (`SourceError`) or one row (`_Reject`, `_Unreadable`).

A bad row never stops a build: it becomes a `Quarantined` record with one of `QUARANTINE_REASONS`.
"""

from __future__ import annotations

QUARANTINE_REASONS: dict[str, str] = {
    "missing_field": "a required field is absent or null",
    "empty_field": "a required text or list is empty",
    "non_string_content": "text content is not a string (e.g. a boolean or a number)",
    "bad_message": "a message is not an object with a role and a content",
    "unknown_role": "a message role is not system, user or assistant (or an alias: human, gpt, model)",
    "prompt_not_user": "the prompt does not end with a user turn",
    "bad_answer": "an answer is not exactly one assistant message",
    "identical_answers": "chosen and rejected are the same text (after stripping whitespace)",
    "bad_transcript": "a Human/Assistant transcript cannot be split into a shared prompt and two answers",
    "bad_label": "the label does not say which answer is better",
    "bad_json": "the line is not valid JSON",
    "bad_row": "the row is not an object",
    "invalid_pair": "the normalised pair failed schema validation",
    "answer_too_long": "an answer is longer than the limit (build option --max-answer-chars, default 100,000 characters)",
}


class SourceError(ValueError):
    """The source cannot be read or the column mapping does not fit it (one line, says what was expected)."""


class _Reject(Exception):
    """A row-level problem; becomes a `Quarantined` record, never escapes this package."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _Unreadable:
    """Stands in for a row the reader could not decode (bad JSON line, non-object row)."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
