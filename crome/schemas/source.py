"""The normalised source pair every loader shape is turned into, and quarantine records."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crome.schemas.hashing import stable_hash
from crome.schemas.messages import AssistantMessage, Message


class SourcePair(BaseModel):
    """One preference pair from the source: `chosen` is better than `rejected` unless preference is 0.5."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_id: str = Field(description="stable hash of (prompt, chosen, rejected, preference)")
    prompt: list[Message] = Field(min_length=1, description="conversation before the answer; ends with a user turn")
    chosen: AssistantMessage
    rejected: AssistantMessage
    preference: float = 1.0
    row: int = Field(description="0-based index of the row in the source file or split")
    subset: str | None = Field(default=None, description="source subset or category when the source has one")
    metadata: dict[str, Any] = Field(default_factory=dict, description="scalar extras from the source row")

    @model_validator(mode="after")
    def _check(self) -> "SourcePair":
        if self.prompt[-1].role != "user":
            raise ValueError("prompt must end with a user turn")
        if self.preference not in (0.5, 1.0):
            raise ValueError("preference must be 1.0 (chosen better) or 0.5 (tie)")
        return self

    @property
    def prompt_text(self) -> str:
        """The last user turn: what the answers respond to."""
        return self.prompt[-1].content

    @classmethod
    def make(
        cls,
        prompt: list[Message],
        chosen: str,
        rejected: str,
        *,
        row: int,
        preference: float = 1.0,
        subset: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> "SourcePair":
        source_id = pair_id(prompt, chosen, rejected, preference)
        return cls(
            source_id=source_id,
            prompt=prompt,
            chosen=AssistantMessage(content=chosen),
            rejected=AssistantMessage(content=rejected),
            preference=preference,
            row=row,
            subset=subset,
            metadata=metadata or {},
        )


def pair_id(prompt: list[Message] | list[dict], chosen: str, rejected: str, preference: float) -> str:
    """The contract's id: stable content hash of (prompt, chosen, rejected, preference)."""
    msgs = [m.model_dump() if isinstance(m, BaseModel) else dict(m) for m in prompt]
    return stable_hash({"prompt": msgs, "chosen": chosen, "rejected": rejected, "preference": float(preference)})


class Quarantined(BaseModel):
    """A source row that could not be used, with the reason (never fatal, always counted)."""

    model_config = ConfigDict(extra="forbid")

    row: int
    reason: str = Field(description="short machine-readable reason, e.g. missing_field, identical_answers")
    detail: str = Field(description="one line a person can act on, naming the field")
