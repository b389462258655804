"""Value-level helpers shared by the shape normalisers: each returns clean values or raises `_Reject` naming the field.

The names keep their underscore: they are private to the package, shared only by its modules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from crome.builder.sources.errors import _Reject
from crome.schemas.messages import Message
from crome.schemas.source import Quarantined, SourcePair

ROLE_ALIASES = {
    "user": "user", "human": "user",
    "assistant": "assistant", "gpt": "assistant", "model": "assistant",
    "system": "system",
}
# An HH-RLHF turn marker: at the very start or after a blank line, one optional space after the colon.
_HH_MARKER = re.compile(r"(?:\A|\n\n)(Human|Assistant):[ ]?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}
_HH_PROMPT = re.compile(r"\s*Human:")

_MISSING: Any = object()
Item = SourcePair | Quarantined
Normaliser = Callable[[dict, int], Iterable[Item]]


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
# HH-RLHF transcripts, split into turns (a prompt written as a transcript needs this too).


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
