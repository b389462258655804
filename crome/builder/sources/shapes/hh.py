"""HH-RLHF transcripts: two ``\\n\\nHuman:`` / ``\\n\\nAssistant:`` transcripts -> shared prompt + two answers.

The ``hh_transcript`` shape is normalised by `generic._generic(has_prompt=False)`, which comes here
when both answers are strings.
"""

from __future__ import annotations

from typing import Any

from crome.builder.sources.errors import _Reject
from crome.builder.sources.fields import _text, _transcript
from crome.schemas.messages import Message


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
