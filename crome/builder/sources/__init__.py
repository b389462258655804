"""Load a preference source (local file or Hub dataset) and normalise every row into `SourcePair`s.

Shapes understood (detected from the first rows, reported by short name):

- ``plain``: ``prompt``/``chosen``/``rejected`` strings (UltraFeedback, TRL standard preference).
- ``conversational``: the same columns holding message lists (TRL conversational preference); the
  answers may also be whole conversations that start with the prompt.
- ``implicit_prompt``: only ``chosen``/``rejected`` message lists; the prompt is their shared prefix.
- ``hh_transcript``: only ``chosen``/``rejected`` strings in the HH-RLHF ``\\n\\nHuman:`` /
  ``\\n\\nAssistant:`` transcript form; the prompt is the shared turns, multi-turn kept as messages.
- ``sharegpt``: ``conversations`` of ``{from, value}`` plus ``chosen``/``rejected`` message objects.
- ``llmbar``: ``input``/``output_1``/``output_2``/``label`` (label 1 or 2 names the better output).
- ``rmgallery``: RM-Gallery's ``evaluation_sample.input`` plus ``outputs[].content_label``.
- ``rmbench``: RM-Bench's ``prompt`` with three ``chosen`` and three ``rejected`` style variants,
  expanded to all nine (chosen_i, rejected_j) pairs.
- ``mapped``: an explicit column mapping (``prompt=question,chosen=good,rejected=bad``, optionally
  ``label=COL`` when the two mapped answers are A/B and the label says which is better).

A row that cannot be used becomes a `Quarantined` record (short reason + one-line detail naming the
field); a source that cannot be read at all, or a wrong mapping, raises `SourceError`.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import re
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from crome.schemas.messages import Message
from crome.schemas.source import Quarantined, SourcePair

SHAPES: dict[str, str] = {
    "plain": "prompt/chosen/rejected strings",
    "conversational": "prompt/chosen/rejected message lists",
    "implicit_prompt": "chosen/rejected conversations; the prompt is their shared prefix",
    "hh_transcript": "chosen/rejected Human/Assistant transcripts; the prompt is the shared turns",
    "sharegpt": "conversations of {from, value} with chosen/rejected message objects",
    "llmbar": "input/output_1/output_2 with label 1 or 2 naming the better output",
    "rmgallery": "RM-Gallery evaluation_sample.input with outputs labelled chosen/rejected",
    "rmbench": "RM-Bench prompt with 3 chosen x 3 rejected style variants (9 pairs per prompt)",
    "mapped": "columns given by an explicit mapping",
}

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
}

MAPPING_KEYS = ("prompt", "chosen", "rejected", "label", "subset")
FILE_TYPES = ".jsonl, .jsonl.gz, .json, .parquet or .csv"
# Enough rows to see past a few null or malformed leading rows, few enough to buffer cheaply.
DETECT_ROWS = 20
PARQUET_BATCH_ROWS = 512
# RM-Bench orders each prompt's three answers by style.
RMBENCH_STYLES = ("concise", "detailed_plain", "detailed_markdown")

ROLE_ALIASES = {
    "user": "user", "human": "user",
    "assistant": "assistant", "gpt": "assistant", "model": "assistant",
    "system": "system",
}
# An HH-RLHF turn marker: at the very start or after a blank line, one optional space after the colon.
_HH_MARKER = re.compile(r"(?:\A|\n\n)(Human|Assistant):[ ]?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}
_HH_PROMPT = re.compile(r"\s*Human:")
# Suffixes that mean the user named a file, so a missing one is "no such file", not a Hub id.
_FILE_SUFFIXES = {".jsonl", ".json", ".gz", ".parquet", ".csv", ".tsv", ".txt", ".arrow", ".xlsx", ".zip", ".ndjson"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class SourceError(ValueError):
    """The source cannot be read or the column mapping does not fit it (one line, says what was expected)."""


class _Reject(Exception):
    """A row-level problem; becomes a `Quarantined` record, never escapes this module."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _Unreadable:
    """Stands in for a row the reader could not decode (bad JSON line, non-object row)."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


_MISSING: Any = object()
Item = SourcePair | Quarantined
Normaliser = Callable[[dict, int], Iterable[Item]]


# --------------------------------------------------------------------------------------------
# Field helpers: each returns clean values or raises _Reject naming the field.


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _text(value: Any, field: str) -> str:
    if value is _MISSING:
        raise _Reject("missing_field", f"{field}: field is absent")
    if value is None:
        raise _Reject("missing_field", f"{field} is null")
    if not isinstance(value, str):
        raise _Reject("non_string_content", f"{field} is {_kind(value)}, expected a string")
    if not value.strip():
        raise _Reject("empty_field", f"{field} is empty")
    return value


def _message(obj: Any, field: str) -> Message | None:
    """A message from `{role, content}` or ShareGPT `{from, value}`; None for an empty system message."""
    if not isinstance(obj, dict):
        raise _Reject("bad_message", f"{field} is {_kind(obj)}, expected a message with role and content")
    role_key = "role" if "role" in obj else "from" if "from" in obj else None
    content_key = "content" if "content" in obj else "value" if "value" in obj else "content"
    if role_key is None:
        raise _Reject("missing_field", f"{field}.role: field is absent")
    if obj[role_key] is None:
        raise _Reject("missing_field", f"{field}.{role_key} is null")
    raw_role = obj[role_key]
    role = ROLE_ALIASES.get(raw_role.strip().lower()) if isinstance(raw_role, str) else None
    if role is None:
        raise _Reject(
            "unknown_role",
            f"{field}.{role_key} is {raw_role!r}, expected user, assistant or system (or human, gpt, model)",
        )
    content = obj.get(content_key, _MISSING)
    # An empty system message is the same as none; dropping it keeps such rows usable.
    if role == "system" and isinstance(content, str) and not content.strip():
        return None
    return Message(role=role, content=_text(content, f"{field}.{content_key}"))


def _messages(value: Any, field: str) -> list[Message]:
    if value is _MISSING:
        raise _Reject("missing_field", f"{field}: field is absent")
    if value is None:
        raise _Reject("missing_field", f"{field} is null")
    if not isinstance(value, list):
        raise _Reject("non_string_content", f"{field} is {_kind(value)}, expected a list of messages")
    if not value:
        raise _Reject("empty_field", f"{field} is an empty list")
    msgs = [_message(m, f"{field}[{i}]") for i, m in enumerate(value)]
    return [m for m in msgs if m is not None]


def _prompt(value: Any, field: str) -> list[Message]:
    """A prompt from a string (one user turn, or an HH transcript) or a message list."""
    if isinstance(value, list):
        return _messages(value, field)
    text = _text(value, field)
    if _HH_PROMPT.match(text) and "\n\nAssistant:" in text:
        # A transcript prompt ("\n\nHuman: ...\n\nAssistant:") as in HH-derived plain datasets.
        turns = _transcript(text, field)
        if turns[-1].role == "assistant" and not turns[-1].content:
            turns = turns[:-1]  # the trailing "Assistant:" is a generation cue, not a turn
        for i, t in enumerate(turns):
            if not t.content:
                raise _Reject("empty_field", f"{field} turn {i + 1} ({t.speaker}) is empty")
        return [Message(role=t.role, content=t.content) for t in turns]
    return [Message(role="user", content=text)]


def _answer(value: Any, field: str, prompt: list[Message]) -> str:
    """The text of one answer: a string, one assistant message, or a conversation that starts with `prompt`."""
    if isinstance(value, dict):
        msg = _message(value, field)
        if msg is None or msg.role != "assistant":
            role = "system" if msg is None else msg.role
            raise _Reject("bad_answer", f"{field} is a {role} message, expected an assistant message")
        return msg.content
    if isinstance(value, list):
        msgs = _messages(value, field)
        if len(msgs) > len(prompt) and msgs[: len(prompt)] == prompt:
            msgs = msgs[len(prompt):]
        if len(msgs) != 1 or msgs[0].role != "assistant":
            roles = ", ".join(m.role for m in msgs) or "nothing"
            raise _Reject("bad_answer", f"{field} holds [{roles}] after the prompt, expected one assistant message")
        return msgs[0].content
    return _text(value, field)


def _label(value: Any, field: str) -> str:
    """'a', 'b' or 'tie' from an LLMBar / arena style label."""
    if value is _MISSING or value is None:
        raise _Reject("missing_field", f"{field}: field is absent" if value is _MISSING else f"{field} is null")
    if not isinstance(value, bool):
        if isinstance(value, (int, float)) and value in (1, 2):
            return "a" if value == 1 else "b"
        if isinstance(value, str):
            v = value.strip().lower()
            if v in ("1", "a", "model_a"):
                return "a"
            if v in ("2", "b", "model_b"):
                return "b"
            if v in ("tie", "tie (bothbad)"):
                return "tie"
    raise _Reject("bad_label", f"{field} is {value!r}, expected 1 or 2 (or a/b, model_a/model_b, tie)")


def _pair(
    prompt: list[Message],
    chosen: str,
    rejected: str,
    *,
    row: int,
    preference: float = 1.0,
    subset: str | None = None,
    metadata: dict[str, Any] | None = None,
    names: tuple[str, str] = ("chosen", "rejected"),
) -> SourcePair:
    if not prompt:
        raise _Reject("missing_field", "prompt: no messages")
    if prompt[-1].role != "user":
        raise _Reject("prompt_not_user", f"prompt's last turn is {prompt[-1].role}, expected user")
    if chosen.strip() == rejected.strip():
        raise _Reject("identical_answers", f"{names[0]} and {names[1]} are the same text")
    return SourcePair.make(prompt, chosen, rejected, row=row, preference=preference, subset=subset, metadata=metadata)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int, float))


def _extras(row: dict, used: Iterable[str]) -> dict[str, Any]:
    """Scalar extras of a row for `SourcePair.metadata`; nested objects of scalars are flattened one level."""
    used = set(used)
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key in used or not isinstance(key, str):
            continue
        if _scalar(value):
            out[key] = value
        elif isinstance(value, dict):
            for inner, v in value.items():
                if _scalar(v):
                    name = inner if inner not in row and inner not in out else f"{key}.{inner}"
                    out[name] = v
    # NaN (Parquet/CSV via pandas writers) is not valid JSON; the store and the card need JSON.
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def _subset(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


# --------------------------------------------------------------------------------------------
# HH-RLHF transcripts.


@dataclass(frozen=True)
class _Turn:
    speaker: str  # "Human" or "Assistant", as written
    content: str  # stripped: whitespace around markers is the format's, not the speaker's
    start: int  # offset in the transcript where this turn's text begins

    @property
    def role(self) -> str:
        return _HH_ROLES[self.speaker]


def _transcript(text: str, field: str) -> list[_Turn]:
    marks = list(_HH_MARKER.finditer(text))
    if not marks:
        raise _Reject("bad_transcript", f"{field} has no '\\n\\nHuman:' / '\\n\\nAssistant:' turns")
    if text[: marks[0].start()].strip():
        raise _Reject("bad_transcript", f"{field} has text before its first Human/Assistant turn")
    turns = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        turns.append(_Turn(m.group(1), text[m.end():end].strip(), m.end()))
    return turns


def _from_transcripts(chosen_v: Any, rejected_v: Any, names: tuple[str, str]) -> tuple[list[Message], str, str]:
    """Prompt = the shared turns up to the last shared Human turn; each answer = the rest of its transcript.

    An answer that itself contains further "Assistant:" segments (a quirk of some HH rows) is kept
    verbatim, as TRL's HH conversion does; a Human turn after the shared prompt is not an answer.
    """
    texts = (_text(chosen_v, names[0]), _text(rejected_v, names[1]))
    sides = (_transcript(texts[0], names[0]), _transcript(texts[1], names[1]))
    shared = 0
    for a, b in zip(*sides):
        if (a.speaker, a.content) != (b.speaker, b.content):
            break
        shared += 1
    if shared == len(sides[0]) == len(sides[1]):
        raise _Reject("identical_answers", f"{names[0]} and {names[1]} are the same transcript")
    humans = [i for i in range(shared) if sides[0][i].role == "user"]
    if not humans:
        raise _Reject("bad_transcript", f"{names[0]} and {names[1]} share no Human turn")
    cut = humans[-1] + 1
    answers = []
    for name, text, turns in zip(names, texts, sides):
        rest = turns[cut:]
        if not rest:
            raise _Reject("bad_transcript", f"{name} has no Assistant answer after the shared prompt")
        if any(t.role == "user" for t in rest):
            raise _Reject("bad_transcript", f"{name} continues with a Human turn after the shared prompt")
        answer = text[rest[0].start:].strip()
        if not answer:
            raise _Reject("empty_field", f"{name}: the final Assistant turn is empty")
        answers.append(answer)
    prompt = []
    for i, t in enumerate(sides[0][:cut]):
        if not t.content:
            raise _Reject("empty_field", f"prompt turn {i + 1} ({t.speaker}) is empty")
        prompt.append(Message(role=t.role, content=t.content))
    return prompt, answers[0], answers[1]


def _from_conversations(chosen_v: Any, rejected_v: Any, names: tuple[str, str]) -> tuple[list[Message], str, str]:
    """TRL implicit prompt: two conversations that share every message but the final assistant answer."""
    sides = (_messages(chosen_v, names[0]), _messages(rejected_v, names[1]))
    shared = 0
    for a, b in zip(*sides):
        if a != b:
            break
        shared += 1
    if shared == len(sides[0]) == len(sides[1]):
        raise _Reject("identical_answers", f"{names[0]} and {names[1]} are the same conversation")
    answers = []
    for name, msgs in zip(names, sides):
        rest = msgs[shared:]
        if len(rest) != 1 or rest[0].role != "assistant":
            roles = ", ".join(m.role for m in rest) or "nothing"
            raise _Reject("bad_answer", f"{name} holds [{roles}] after the shared prompt, expected one assistant message")
        answers.append(rest[0].content)
    if not shared:
        raise _Reject("missing_field", f"prompt: {names[0]} and {names[1]} share no prompt messages")
    return sides[0][:shared], answers[0], answers[1]


def _resolve(prompt_v: Any, a_v: Any, b_v: Any, names: tuple[str, str, str], has_prompt: bool) -> tuple[list[Message], str, str]:
    """(prompt messages, answer A, answer B) from raw field values of any of the generic forms."""
    if has_prompt:
        prompt = _prompt(prompt_v, names[0])
        return prompt, _answer(a_v, names[1], prompt), _answer(b_v, names[2], prompt)
    if isinstance(a_v, list) and isinstance(b_v, list):
        return _from_conversations(a_v, b_v, names[1:])
    if isinstance(a_v, str) and isinstance(b_v, str):
        return _from_transcripts(a_v, b_v, names[1:])
    for name, v in zip(names[1:], (a_v, b_v)):
        if v is _MISSING or v is None or (isinstance(v, str) and not v.strip()):
            _text(v, name)  # raises missing_field / empty_field
        if not isinstance(v, (str, list)):
            raise _Reject("non_string_content", f"{name} is {_kind(v)}, expected a transcript or a list of messages")
    raise _Reject("bad_answer", f"{names[1]} and {names[2]} are of different kinds (a string and a list)")


# --------------------------------------------------------------------------------------------
# Shape normalisers: (row, index) -> pairs / quarantines. Each raises _Reject for a whole bad row.


def _generic(has_prompt: bool) -> Normaliser:
    def normalise(row: dict, index: int) -> Iterator[Item]:
        prompt, chosen, rejected = _resolve(
            row.get("prompt", _MISSING), row.get("chosen", _MISSING), row.get("rejected", _MISSING),
            ("prompt", "chosen", "rejected"), has_prompt,
        )
        meta = _extras(row, ("prompt", "chosen", "rejected", "subset"))
        yield _pair(prompt, chosen, rejected, row=index, subset=_subset(row.get("subset")), metadata=meta)

    return normalise


def _sharegpt(row: dict, index: int) -> Iterator[Item]:
    prompt = _messages(row.get("conversations", _MISSING), "conversations")
    system = row.get("system")
    # LLaMA-Factory keeps an optional system prompt in its own column.
    if isinstance(system, str) and system.strip() and not (prompt and prompt[0].role == "system"):
        prompt = [Message(role="system", content=system), *prompt]
    chosen = _answer(row.get("chosen", _MISSING), "chosen", prompt)
    rejected = _answer(row.get("rejected", _MISSING), "rejected", prompt)
    meta = _extras(row, ("conversations", "chosen", "rejected", "system", "subset"))
    yield _pair(prompt, chosen, rejected, row=index, subset=_subset(row.get("subset")), metadata=meta)


def _llmbar(row: dict, index: int) -> Iterator[Item]:
    prompt, out1, out2 = _resolve(
        row.get("input", _MISSING), row.get("output_1", _MISSING), row.get("output_2", _MISSING),
        ("input", "output_1", "output_2"), True,
    )
    better = _label(row.get("label", _MISSING), "label")
    chosen, rejected = (out1, out2) if better in ("a", "tie") else (out2, out1)
    preference = 0.5 if better == "tie" else 1.0
    meta = _extras(row, ("input", "output_1", "output_2", "subset"))
    yield _pair(
        prompt, chosen, rejected, row=index, preference=preference, subset=_subset(row.get("subset")), metadata=meta,
        names=("output_1", "output_2"),
    )


def _rmgallery(row: dict, index: int) -> Iterator[Item]:
    sample = row.get("evaluation_sample", _MISSING)
    if sample is _MISSING or sample is None:
        _text(sample, "evaluation_sample")  # raises missing_field
    if not isinstance(sample, dict):
        raise _Reject("bad_row", f"evaluation_sample is {_kind(sample)}, expected an object")
    prompt = _messages(sample.get("input", _MISSING), "evaluation_sample.input")
    outputs = sample.get("outputs", _MISSING)
    if not isinstance(outputs, list):
        _messages(outputs, "evaluation_sample.outputs")  # raises with the right reason
    found: dict[str, list[int]] = {"chosen": [], "rejected": []}
    for i, out in enumerate(outputs):
        label = out.get("content_label") if isinstance(out, dict) else None
        if label in found:
            found[label].append(i)
    if len(found["chosen"]) != 1 or len(found["rejected"]) != 1:
        raise _Reject(
            "bad_answer",
            f"evaluation_sample.outputs holds {len(found['chosen'])} 'chosen' and {len(found['rejected'])} "
            "'rejected' answers, expected one of each",
        )
    texts = {
        label: _answer(outputs[idx[0]], f"evaluation_sample.outputs[{idx[0]}]", prompt) for label, idx in found.items()
    }
    info = sample.get("data_info") if isinstance(sample.get("data_info"), dict) else {}
    meta = _extras(row, ("evaluation_sample",))
    yield _pair(prompt, texts["chosen"], texts["rejected"], row=index, subset=_subset(info.get("domain")), metadata=meta)


def _rmbench(row: dict, index: int) -> Iterator[Item]:
    """All chosen_i x rejected_j combinations; a bad combination is quarantined on its own."""
    prompt = _prompt(row.get("prompt", _MISSING), "prompt")
    variants = {}
    for side in ("chosen", "rejected"):
        value = row.get(side, _MISSING)
        if value is _MISSING or value is None:
            _text(value, side)  # raises missing_field
        if not isinstance(value, list):
            raise _Reject("non_string_content", f"{side} is {_kind(value)}, expected a list of answers")
        if not value:
            raise _Reject("empty_field", f"{side} is an empty list")
        variants[side] = value
    subset = _subset(row.get("subset"))
    extras = _extras(row, ("prompt", "chosen", "rejected", "subset"))
    styles = RMBENCH_STYLES if len(variants["chosen"]) == len(variants["rejected"]) == len(RMBENCH_STYLES) else None
    for i, c in enumerate(variants["chosen"]):
        for j, r in enumerate(variants["rejected"]):
            meta = {**extras, "chosen_style": i, "rejected_style": j}
            if styles:
                meta["chosen_style_name"] = styles[i]
                meta["rejected_style_name"] = styles[j]
            try:
                chosen = _answer(c, f"chosen[{i}]", prompt)
                rejected = _answer(r, f"rejected[{j}]", prompt)
                yield _pair(prompt, chosen, rejected, row=index, subset=subset, metadata=meta)
            except _Reject as e:
                yield Quarantined(row=index, reason=e.reason, detail=f"chosen[{i}] x rejected[{j}]: {e.detail}")


def _mapped(columns: Mapping[str, str], has_prompt: bool) -> Normaliser:
    def normalise(row: dict, index: int) -> Iterator[Item]:
        names = (columns.get("prompt", "prompt"), columns["chosen"], columns["rejected"])
        prompt, a, b = _resolve(
            row.get(names[0], _MISSING) if has_prompt else _MISSING,
            row.get(names[1], _MISSING), row.get(names[2], _MISSING), names, has_prompt,
        )
        preference = 1.0
        if "label" in columns:
            better = _label(row.get(columns["label"], _MISSING), columns["label"])
            if better == "b":
                a, b = b, a
            preference = 0.5 if better == "tie" else 1.0
        subset = _subset(row.get(columns["subset"])) if "subset" in columns else None
        meta = _extras(row, [names[1], names[2], *columns.values()] + ([names[0]] if has_prompt else []))
        yield _pair(prompt, a, b, row=index, preference=preference, subset=subset, metadata=meta, names=names[1:])

    return normalise


NORMALISERS: dict[str, Normaliser] = {
    "plain": _generic(has_prompt=True),
    "conversational": _generic(has_prompt=True),
    "implicit_prompt": _generic(has_prompt=False),
    "hh_transcript": _generic(has_prompt=False),
    "sharegpt": _sharegpt,
    "llmbar": _llmbar,
    "rmgallery": _rmgallery,
    "rmbench": _rmbench,
}


def _detect_row(row: Any) -> str | None:
    """The shape one row looks like, or None when it does not say (null values, unknown columns)."""
    if not isinstance(row, dict):
        return None
    keys = set(row)
    if "evaluation_sample" in keys:
        return "rmgallery"
    if {"conversations", "chosen", "rejected"} <= keys:
        return "sharegpt"
    if {"input", "output_1", "output_2", "label"} <= keys:
        return "llmbar"
    if not {"chosen", "rejected"} <= keys:
        return None
    chosen = row["chosen"]
    if "prompt" in keys:
        if isinstance(chosen, list) and chosen and all(isinstance(c, str) for c in chosen):
            return "rmbench"
        if isinstance(chosen, list) or isinstance(row["prompt"], list):
            return "conversational"
        if isinstance(chosen, str):
            return "plain"
        return None
    if isinstance(chosen, str) and _HH_MARKER.search(chosen):
        return "hh_transcript"
    if isinstance(chosen, list) and chosen and isinstance(chosen[0], dict):
        return "implicit_prompt"
    return None


# --------------------------------------------------------------------------------------------
# Readers: generators of (row index, row dict or _Unreadable). They raise SourceError when the
# file itself cannot be read.

_READ_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, UnicodeDecodeError, zlib.error, csv.Error)


def _read_jsonl(path: Path, name: str, opener: Callable[..., Any] = open) -> Iterator[tuple[int, Any]]:
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            index = 0
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue  # blank lines (a trailing newline) are not rows
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    row = _Unreadable("bad_json", f"line {lineno} is not valid JSON ({e.msg})")
                yield index, row
                index += 1
    except _READ_ERRORS as e:
        raise SourceError(f"cannot read {name}: {e}") from None


def _read_json(path: Path, name: str) -> Iterator[tuple[int, Any]]:
    # A .json file holds one JSON list; many Hub datasets also name JSON Lines files .json.
    try:
        with open(path, encoding="utf-8") as f:
            first_line = f.readline()
            while first_line and not first_line.strip():
                first_line = f.readline()
        if not first_line.lstrip().startswith("["):
            try:
                if isinstance(json.loads(first_line), dict):
                    yield from _read_jsonl(path, name)
                    return
            except json.JSONDecodeError:
                pass
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise SourceError(f"cannot read {name}: not valid JSON (line {e.lineno}: {e.msg})") from None
    except _READ_ERRORS as e:
        raise SourceError(f"cannot read {name}: {e}") from None
    if not isinstance(data, list):
        raise SourceError(f"cannot read {name}: expected a JSON list of row objects (or JSON Lines), found {_kind(data)}")
    for index, row in enumerate(data):
        yield index, row


def _read_parquet(path: Path, name: str) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        index = 0
        with pq.ParquetFile(path) as pf:
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
                for row in batch.to_pylist():
                    yield index, row
                    index += 1
    except (pa.ArrowException, *_READ_ERRORS) as e:
        raise SourceError(f"cannot read {name}: not a readable Parquet file ({e})") from None


def _read_csv(path: Path, name: str) -> Iterator[tuple[int, Any]]:
    # Answers are long; the csv module's default 128 KiB field limit would reject real rows.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            for index, row in enumerate(csv.DictReader(f)):
                row.pop(None, None)  # cells beyond the header
                yield index, row
    except _READ_ERRORS as e:
        raise SourceError(f"cannot read {name}: {e}") from None


def _read_datasets(spec: str, name: str, split: str | None, config: str | None, revision: str | None) -> Iterator[tuple[int, Any]]:
    """Rows of a Hub dataset (or a local dataset folder) through `datasets.load_dataset`, streamed."""
    import datasets

    kwargs: dict[str, Any] = {"streaming": True}
    if config is not None:
        kwargs["name"] = config
    if split is not None:
        kwargs["split"] = split
    if revision is not None:
        kwargs["revision"] = revision
    try:
        ds = datasets.load_dataset(spec, **kwargs)
    except Exception as e:  # datasets raises many unrelated types (network, config, file); all mean "cannot load"
        raise SourceError(f"cannot load {name} with datasets.load_dataset: {_first_line(e)}") from None
    if isinstance(ds, Mapping):
        splits = list(ds)
        if "train" in ds or len(splits) == 1:
            ds = ds["train" if "train" in ds else splits[0]]
        else:
            raise SourceError(f"{name} has splits: {', '.join(splits)}; choose one with split (--split)")
    try:
        for index, row in enumerate(ds):
            yield index, row
    except SourceError:
        raise
    except Exception as e:  # a streamed read can fail at any row (network, corrupt shard)
        raise SourceError(f"cannot read {name}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _display_name(path: Path) -> str:
    """parent-folder/file: enough to recognise the source, without an absolute local path."""
    parent = path.resolve().parent.name
    return f"{parent}/{path.name}" if parent else path.name


def _open(spec: str, split: str | None, config: str | None, revision: str | None) -> tuple[str, str | None, Iterator[tuple[int, Any]]]:
    """(display name, hub id or None, row reader) for a local file, a local dataset folder or a Hub id."""
    spec = str(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve().name, None, _read_datasets(str(path), path.resolve().name, split, config, revision)
    if path.exists():
        name = _display_name(path)
        lower = path.name.lower()
        if lower.endswith(".jsonl.gz"):
            return name, None, _read_jsonl(path, name, gzip.open)
        if lower.endswith(".jsonl"):
            return name, None, _read_jsonl(path, name)
        if lower.endswith(".json"):
            return name, None, _read_json(path, name)
        if lower.endswith(".parquet"):
            return name, None, _read_parquet(path, name)
        if lower.endswith(".csv"):
            return name, None, _read_csv(path, name)
        raise SourceError(f"cannot read {path.name}: expected {FILE_TYPES}")
    looks_like_file = (
        spec.startswith((".", "/", "~")) or spec.count("/") > 1 or os.sep != "/" and os.sep in spec
        or path.suffix.lower() in _FILE_SUFFIXES
    )
    if looks_like_file or not _HUB_ID.match(spec):
        raise SourceError(f"cannot read {path.name or spec}: no such file or directory (expected a local {FILE_TYPES} file or a Hub dataset id)")
    return spec, spec, _read_datasets(spec, spec, split, config, revision)


def _hub_license(repo_id: str, revision: str | None, cache_dir: str | os.PathLike | None = None) -> str | None:
    """The licence from the dataset card, only if the card is already in the local Hub cache (no network)."""
    try:
        from huggingface_hub import DatasetCard, try_to_load_from_cache

        path = try_to_load_from_cache(repo_id, "README.md", cache_dir=cache_dir, revision=revision, repo_type="dataset")
        if not isinstance(path, str):
            return None
        license = DatasetCard.load(path).data.get("license")
    except Exception:  # the licence is informative only; a missing or odd card must not stop a build
        return None
    if isinstance(license, list):
        license = ", ".join(str(x) for x in license)
    return str(license) if license else None


# --------------------------------------------------------------------------------------------
# Public API.


def parse_mapping(mapping: str | Mapping[str, str]) -> dict[str, str]:
    """`prompt=question,chosen=good,rejected=bad` (or a dict) -> {key: column}, keys checked."""
    if isinstance(mapping, str):
        pairs: dict[str, str] = {}
        for part in (p.strip() for p in mapping.split(",")):
            if not part:
                continue
            key, sep, column = (s.strip() for s in part.partition("="))
            if not sep or not key or not column:
                raise SourceError(f"bad column mapping {part!r}: expected KEY=COLUMN pairs separated by commas, e.g. prompt=question,chosen=good,rejected=bad")
            if key in pairs:
                raise SourceError(f"bad column mapping: {key!r} is mapped twice")
            pairs[key] = column
        mapping = pairs
    out = {}
    for key, column in mapping.items():
        if key not in MAPPING_KEYS:
            raise SourceError(f"unknown mapping key {key!r}: expected {', '.join(MAPPING_KEYS)}")
        if not isinstance(column, str) or not column:
            raise SourceError(f"bad column mapping: {key!r} must name a column")
        out[key] = column
    if not out:
        raise SourceError("empty column mapping: expected KEY=COLUMN pairs, e.g. prompt=question,chosen=good,rejected=bad")
    return out


def _columns(rows: Iterable[Any]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        if isinstance(row, dict):
            seen.update((str(k), None) for k in row)
    return list(seen)


class SourceStream(Iterator[Item]):
    """A streaming reader: iterate it for `SourcePair | Quarantined`; `shape`, `name`, counters as attributes.

    Opening reads and detects from the first rows only, so a bad path or mapping fails before any
    work starts; the rest is read lazily (JSONL line by line, Parquet by batches, Hub streamed).
    """

    def __init__(
        self,
        spec: str | os.PathLike,
        *,
        split: str | None = None,
        config: str | None = None,
        revision: str | None = None,
        mapping: str | Mapping[str, str] | None = None,
        limit: int | None = None,
    ) -> None:
        if limit is not None and limit < 1:
            raise SourceError(f"limit must be at least 1, got {limit}")
        self.spec = str(spec)
        self.split, self.config, self.revision = split, config, revision
        columns = parse_mapping(mapping) if mapping is not None else None
        self.mapping: dict[str, str] | None = None
        self.name, self.hub_id, reader = _open(self.spec, split, config, revision)
        self._reader = reader
        rows: Iterator[tuple[int, Any]] = islice(reader, limit) if limit is not None else reader
        try:
            head = list(islice(rows, DETECT_ROWS))
            if not head:
                raise SourceError(f"cannot read {self.name}: it holds no rows")
            self.columns = _columns(row for _, row in head)
            if columns is not None:
                self.shape = "mapped"
                self._normalise = self._check_mapping(columns)
            else:
                self.shape = self._detect([row for _, row in head])
                self._normalise = NORMALISERS[self.shape]
        except BaseException:
            reader.close()
            raise
        # Read after load_dataset ran: that is what puts the card in the local cache.
        self.license = _hub_license(self.hub_id, revision) if self.hub_id else None
        self.rows_read = 0
        self.pairs = 0
        self.quarantined = 0
        self.reasons: Counter[str] = Counter()
        self._items = self._generate(chain(head, rows))

    def _detect(self, rows: list[Any]) -> str:
        votes = Counter(s for s in map(_detect_row, rows) if s is not None)
        if votes:
            return votes.most_common(1)[0][0]
        if not any(isinstance(r, dict) for r in rows):
            first = next((r for r in rows if isinstance(r, _Unreadable)), None)
            raise SourceError(f"cannot read {self.name}: {first.detail if first else 'the rows are not objects'}")
        raise SourceError(
            f"cannot detect the shape of {self.name}: columns are: {', '.join(self.columns) or '(none)'}; expected "
            "prompt/chosen/rejected, chosen/rejected (transcripts or message lists), conversations/chosen/rejected, "
            "input/output_1/output_2/label, evaluation_sample, or a column mapping such as prompt=COL,chosen=COL,rejected=COL"
        )

    def _check_mapping(self, columns: dict[str, str]) -> Normaliser:
        """Check the mapping against the real columns, fill unmapped keys whose default column exists."""
        found = ", ".join(self.columns) or "(none)"
        for key, column in columns.items():
            if column not in self.columns:
                raise SourceError(f"column {column!r} not found (mapped to {key}); columns are: {found}")
        for key in ("chosen", "rejected"):
            if key not in columns:
                if key not in self.columns:
                    raise SourceError(f"column {key!r} not found (map it with {key}=COLUMN); columns are: {found}")
                columns[key] = key
        has_prompt = "prompt" in columns or "prompt" in self.columns
        if has_prompt:
            columns.setdefault("prompt", "prompt")
        if "subset" not in columns and "subset" in self.columns:
            columns["subset"] = "subset"
        self.mapping = dict(columns)
        return _mapped(columns, has_prompt)

    def _generate(self, rows: Iterator[tuple[int, Any]]) -> Iterator[Item]:
        for index, row in rows:
            self.rows_read += 1
            if isinstance(row, _Unreadable):
                items: list[Item] = [Quarantined(row=index, reason=row.reason, detail=row.detail)]
            elif not isinstance(row, dict):
                items = [Quarantined(row=index, reason="bad_row", detail=f"row is {_kind(row)}, expected an object")]
            else:
                try:
                    items = list(self._normalise(row, index))
                except _Reject as e:
                    items = [Quarantined(row=index, reason=e.reason, detail=e.detail)]
                except ValidationError as e:  # a check above missed a schema rule: record it, keep going
                    items = [Quarantined(row=index, reason="invalid_pair", detail=_first_line(e))]
            for item in items:
                if isinstance(item, Quarantined):
                    self.quarantined += 1
                    self.reasons[item.reason] += 1
                else:
                    self.pairs += 1
                yield item

    def __iter__(self) -> "SourceStream":
        return self

    def __next__(self) -> Item:
        return next(self._items)

    def close(self) -> None:
        """Release the open file (also happens when the stream is exhausted)."""
        self._items.close()
        self._reader.close()

    def __enter__(self) -> "SourceStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_source(
    spec: str | os.PathLike,
    *,
    split: str | None = None,
    config: str | None = None,
    revision: str | None = None,
    mapping: str | Mapping[str, str] | None = None,
    limit: int | None = None,
) -> SourceStream:
    """Stream a source as `SourcePair | Quarantined`, in source order; raises `SourceError` at once if unreadable."""
    return SourceStream(spec, split=split, config=config, revision=revision, mapping=mapping, limit=limit)


@dataclass
class LoadResult:
    """A whole source, normalised: pairs, quarantined rows and what was read."""

    pairs: list[SourcePair]
    quarantined: list[Quarantined]
    shape: str
    total_rows: int
    name: str
    hub_id: str | None = None
    license: str | None = None
    quarantine_reasons: dict[str, int] = field(default_factory=dict)


def load_source(
    spec: str | os.PathLike,
    *,
    split: str | None = None,
    config: str | None = None,
    revision: str | None = None,
    mapping: str | Mapping[str, str] | None = None,
    limit: int | None = None,
) -> LoadResult:
    """`iter_source` collected into a `LoadResult`."""
    pairs: list[SourcePair] = []
    quarantined: list[Quarantined] = []
    with iter_source(spec, split=split, config=config, revision=revision, mapping=mapping, limit=limit) as stream:
        for item in stream:
            (quarantined if isinstance(item, Quarantined) else pairs).append(item)
    return LoadResult(
        pairs=pairs,
        quarantined=quarantined,
        shape=stream.shape,
        total_rows=stream.rows_read,
        name=stream.name,
        hub_id=stream.hub_id,
        license=stream.license,
        quarantine_reasons=dict(sorted(stream.reasons.items())),
    )
