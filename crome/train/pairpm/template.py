"""The judging instruction a causal-LM PairPM reads: versioned, hashed, stored with every trained model.

A template is never edited once released; a change is a new version. The text has three slots,
`{conversation}`, `{answer_a}`, `{answer_b}`, filled by plain string splitting (data is never
parsed as a template, so an answer containing braces is just text). The instruction is the user
turn of a one-turn chat rendered with the model's chat template and its generation prompt; the
answer slot is the first token of the assistant turn, where d = logit("A") - logit("B") is read.
Tokenizers without a chat template get the instruction followed by `plain_suffix`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

SLOTS = ("conversation", "answer_a", "answer_b")


@dataclass(frozen=True)
class JudgeTemplate:
    name: str
    version: int
    text: str
    answer_tokens: tuple[str, str] = ("A", "B")
    plain_suffix: str = "\n\nBetter response:"

    @property
    def id(self) -> str:
        return f"{self.name}/v{self.version}"

    @property
    def sha256(self) -> str:
        payload = "\x00".join([self.text, *self.answer_tokens, self.plain_suffix]).encode()
        return hashlib.sha256(payload).hexdigest()

    def pieces(self) -> list[str]:
        """The text split at its slots: fixed, slot name, fixed, slot name, ... (odd positions are slot names)."""
        out, rest = [], self.text
        for slot in SLOTS:
            marker = "{" + slot + "}"
            if rest.count(marker) != 1:
                raise ValueError(f"template {self.id}: slot {marker} must appear exactly once")
            head, rest = rest.split(marker)
            out += [head, slot]
        return out + [rest]

    def record(self) -> dict[str, object]:
        """What is stored with a trained model (crome_pairpm.json): enough to re-render exactly."""
        return {
            "name": self.name, "version": self.version, "sha256": self.sha256, "text": self.text,
            "answer_tokens": list(self.answer_tokens), "plain_suffix": self.plain_suffix,
        }

    @classmethod
    def from_record(cls, record: dict[str, object]) -> "JudgeTemplate":
        t = cls(
            name=str(record["name"]), version=int(record["version"]), text=str(record["text"]),  # type: ignore[arg-type]
            answer_tokens=tuple(record["answer_tokens"]), plain_suffix=str(record["plain_suffix"]),  # type: ignore[arg-type]
        )
        if record.get("sha256") and record["sha256"] != t.sha256:
            raise ValueError(f"judging template {t.id}: stored sha256 does not match its text (edited by hand?)")
        return t


JUDGE_V1 = JudgeTemplate(
    name="pairpm_judge",
    version=1,
    text=(
        "You compare two responses to the same conversation. Decide which response is the better next "
        "assistant turn: more helpful, correct, relevant and safe for the user's last message. Judge the "
        "content only; length, formatting and which response comes first are not reasons to prefer one.\n\n"
        "[Conversation]\n{conversation}\n[End of conversation]\n\n"
        "[Response A]\n{answer_a}\n[End of response A]\n\n"
        "[Response B]\n{answer_b}\n[End of response B]\n\n"
        "Which response is better? Answer with one letter, A or B."
    ),
)

TEMPLATES: dict[str, JudgeTemplate] = {JUDGE_V1.id: JUDGE_V1}
DEFAULT_TEMPLATE = JUDGE_V1.id


def get_template(template_id: str) -> JudgeTemplate:
    if template_id not in TEMPLATES:
        raise ValueError(f"unknown judging template {template_id!r}; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[template_id]
