"""The published dataset row: exactly the data contract of DESIGN.md, one row per pair."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crome.schemas.messages import AssistantMessage, Message
from crome.schemas.source import pair_id

Kind = Literal["original", "causal", "neutral"]
# The augmentation vocabulary may grow; `kind` stays one of three.
AUGMENTATIONS = ("original", "upgrade", "degrade", "irrelevant_query", "cross_prompt", "shortcut_neutral")


class ShortcutEvidence(BaseModel):
    """Why a shortcut-neutral tie exists: the phrase and how it split the strict source pairs."""

    model_config = ConfigDict(extra="forbid")

    feature: str = Field(description="opening or closing: where the phrase sits in an answer")
    text: str = Field(description="the phrase, normalised (lower case, whitespace collapsed)")
    origin: str = Field(description="found (by the build's discovery) or given (by --shortcut-phrases)")
    pairs: int | None = Field(default=None, description="strict source pairs the discovery counted")
    chosen_only: int | None = Field(default=None, description="pairs with the phrase on the chosen answer only")
    rejected_only: int | None = Field(default=None, description="pairs with the phrase on the rejected answer only")
    both: int | None = Field(default=None, description="pairs with the phrase on both answers")
    strength: float | None = Field(default=None, description="(chosen_only - rejected_only) / pairs")
    p_value: float | None = Field(default=None, description="two-sided sign test")
    p_adjusted: float | None = Field(default=None, description="Holm-adjusted over every candidate tested")
    edit: str | None = Field(default=None, description="removed (the phrase taken out of an answer that had it) or added")


class Provenance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    oracle: str = Field(description="provider:model that produced the pair, or 'source' / 'rules'")
    template: str | None = Field(default=None, description="template name of the rewrite, e.g. degrade")
    template_version: str | None = Field(default=None, description="template version, e.g. v1")
    template_sha256: str | None = Field(default=None, description="sha256 of the template file")
    builder_version: str = Field(description="crome version that built the row")
    seed: int = Field(description="build seed")
    shortcut: ShortcutEvidence | None = Field(default=None, description="shortcut_neutral rows: the phrase and its evidence")


class Quality(BaseModel):
    """Checks a row passed and their figures. Null means the check does not apply to the row."""

    model_config = ConfigDict(extra="forbid")

    checks: list[str] = Field(default_factory=list, description="names of the checks the row passed")
    edit_ratio: float | None = Field(default=None, description="normalised edit distance rewrite vs original (0 same, 1 disjoint)")
    length_ratio: float | None = Field(default=None, description="len(rewrite) / len(original) in characters")
    surface_kept: float | None = Field(default=None, description="share of surface features (first/last line, markdown, lists, code) kept")
    verification: str | None = Field(default=None, description="verifier verdict: pass, fail or skipped, with the target change")
    prompt_similarity: float | None = Field(default=None, description="IQN: similarity of the irrelevant prompt to the original prompt")
    baseline_margin: float | None = Field(default=None, description="baseline RM margin r(chosen) - r(rejected) when filtered")


class DatasetRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="stable content hash of (prompt, chosen, rejected, preference)")
    prompt: list[Message] = Field(min_length=1, description="the conversation before the answer (at least one user turn)")
    chosen: list[AssistantMessage] = Field(min_length=1, max_length=1, description="first answer")
    rejected: list[AssistantMessage] = Field(min_length=1, max_length=1, description="second answer")
    preference: float = Field(description="1.0: chosen is better; 0.5: tie (order of the two answers is random)")
    kind: Kind = Field(description="original, causal or neutral")
    augmentation: str = Field(description="original, upgrade, degrade, irrelevant_query, cross_prompt, shortcut_neutral")
    attribute: str | None = Field(default=None, description="the rubric a causal pair intervened on; the phrase of a shortcut_neutral tie")
    source_id: str = Field(description="id of the source pair it derives from")
    provenance: Provenance = Field(description="how the row was made: oracle, template, builder version, seed")
    quality: Quality = Field(default_factory=Quality, description="checks the row passed and their figures")

    @model_validator(mode="after")
    def _check(self) -> "DatasetRow":
        if self.preference not in (0.5, 1.0):
            raise ValueError("preference must be 1.0 or 0.5")
        if (self.kind == "neutral") != (self.preference == 0.5):
            raise ValueError("neutral rows and only they are ties (preference 0.5)")
        if not any(m.role == "user" for m in self.prompt):
            raise ValueError("prompt needs at least one user turn")
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {self.augmentation!r}")
        expected = pair_id(self.prompt, self.chosen[0].content, self.rejected[0].content, self.preference)
        if self.id != expected:
            raise ValueError("id is not the content hash of (prompt, chosen, rejected, preference)")
        return self

    @classmethod
    def make(
        cls,
        *,
        prompt: list[Message],
        chosen: str,
        rejected: str,
        preference: float,
        kind: Kind,
        augmentation: str,
        source_id: str,
        provenance: Provenance,
        attribute: str | None = None,
        quality: Quality | None = None,
    ) -> "DatasetRow":
        return cls(
            id=pair_id(prompt, chosen, rejected, preference),
            prompt=prompt,
            chosen=[AssistantMessage(content=chosen)],
            rejected=[AssistantMessage(content=rejected)],
            preference=preference,
            kind=kind,
            augmentation=augmentation,
            attribute=attribute,
            source_id=source_id,
            provenance=provenance,
            quality=quality or Quality(),
        )


class Rejection(BaseModel):
    """A dropped source row or candidate pair, with its stage and reason: nothing vanishes silently."""

    model_config = ConfigDict(extra="forbid")

    source_id: str = Field(description="source pair id, or 'row:N' for a quarantined source row")
    stage: str = Field(description="source, rubrics, rate, causal, verify, validate, neutral, dedup, filter")
    reason: str = Field(description="machine-readable reason")
    detail: str = Field(default="", description="one line for a person: figures, error text, verdict")
    candidate_id: str | None = Field(default=None, description="id the candidate row would have had")
    duplicate_of: str | None = Field(default=None, description="dedup: the id it duplicates")
    augmentation: str | None = None
    attribute: str | None = None
    candidate: dict[str, Any] | None = Field(default=None, description="the rejected candidate (prompt/chosen/rejected), for audit")
