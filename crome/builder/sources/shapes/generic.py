"""Generic prompt/chosen/rejected rows (plain, conversational, implicit prompt, HH transcript) and mapped columns."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from crome.builder.sources.errors import _Reject
from crome.builder.sources.fields import (
    _MISSING, Item, Normaliser, _answer, _extras, _kind, _label, _messages, _pair, _prompt, _subset, _text,
)
from crome.builder.sources.shapes.hh import _from_transcripts
from crome.schemas.messages import Message


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


def _generic(has_prompt: bool) -> Normaliser:
    def normalise(row: dict, index: int) -> Iterator[Item]:
        prompt, chosen, rejected = _resolve(
            row.get("prompt", _MISSING), row.get("chosen", _MISSING), row.get("rejected", _MISSING),
            ("prompt", "chosen", "rejected"), has_prompt,
        )
        meta = _extras(row, ("prompt", "chosen", "rejected", "subset"))
        yield _pair(prompt, chosen, rejected, row=index, subset=_subset(row.get("subset")), metadata=meta)

    return normalise


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
