"""Records that flow between stages: a candidate pair before it becomes a `DatasetRow`, and its context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crome import __version__
from crome.schemas import DatasetRow, Message, Provenance, Quality, Rejection, Rubric, ShortcutEvidence, SourcePair, pair_id


@dataclass
class Candidate:
    """A pair on its way to the dataset; `original_answer` is what a rewrite is validated against."""

    source: SourcePair
    kind: str  # original | causal | neutral
    augmentation: str  # original | degrade | upgrade | irrelevant_query | cross_prompt | shortcut_neutral
    prompt: list[Message]
    chosen: str
    rejected: str
    preference: float = 1.0
    attribute: str | None = None
    template: Any = None  # crome.prompts.Template that produced a rewrite
    original_answer: str | None = None
    rewrite: str | None = None
    quality: dict[str, Any] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)
    evidence: ShortcutEvidence | None = None  # a shortcut-neutral tie: the phrase and why
    deduped: bool = False  # passed dedup already (dedup runs before and after the neutrals)

    @property
    def id(self) -> str:
        return pair_id(self.prompt, self.chosen, self.rejected, self.preference)

    def to_row(self, oracle: str, seed: int) -> DatasetRow:
        t = self.template
        prov = Provenance(
            oracle=oracle,
            template=t.name if t is not None else None,
            template_version=t.version if t is not None else None,
            template_sha256=t.sha256 if t is not None else None,
            builder_version=__version__,
            seed=seed,
            shortcut=self.evidence,
        )
        return DatasetRow.make(
            prompt=self.prompt,
            chosen=self.chosen,
            rejected=self.rejected,
            preference=self.preference,
            kind=self.kind,  # type: ignore[arg-type]
            augmentation=self.augmentation,
            attribute=self.attribute,
            source_id=self.source.source_id,
            provenance=prov,
            quality=Quality(checks=list(self.checks), **self.quality),
        )

    def reject(self, stage: str, reason: str, detail: str = "", duplicate_of: str | None = None) -> Rejection:
        return Rejection(
            source_id=self.source.source_id,
            stage=stage,
            reason=reason,
            detail=detail,
            candidate_id=self.id,
            duplicate_of=duplicate_of,
            augmentation=self.augmentation,
            attribute=self.attribute,
            candidate={
                "prompt": [m.model_dump() for m in self.prompt],
                "chosen": self.chosen,
                "rejected": self.rejected,
                "preference": self.preference,
            },
        )


def original_candidate(pair: SourcePair) -> Candidate:
    return Candidate(
        source=pair,
        # A tie in the source stays a tie: kind neutral (the contract's tie kind), augmentation original.
        kind="neutral" if pair.preference == 0.5 else "original",
        augmentation="original",
        prompt=list(pair.prompt),
        chosen=pair.chosen.content,
        rejected=pair.rejected.content,
        preference=pair.preference,
    )


@dataclass
class PairContext:
    """What the stages learn about one source pair, and what it ends as."""

    pair: SourcePair
    rubrics: list[Rubric] = field(default_factory=list)
    ratings: dict[str, dict[str, str]] = field(default_factory=dict)  # side -> rubric -> strong|weak
    rewrites: list[Candidate] = field(default_factory=list)  # causal rewrites not yet verified and validated
    candidates: list[Candidate] = field(default_factory=list)  # pairs kept so far: the pair's rows
    rejections: list[Rejection] = field(default_factory=list)
    # Waits on a batch job or was stopped by the budget: neither done nor rejected, built by a re-run.
    pending: bool = False

    def set_pending(self) -> None:
        self.pending = True
        self.rewrites, self.candidates, self.rejections = [], [], []

    def reject_pair(self, stage: str, reason: str, detail: str, augmentation: str | None = None, attribute: str | None = None) -> None:
        self.rejections.append(
            Rejection(
                source_id=self.pair.source_id,
                stage=stage,
                reason=reason,
                detail=detail,
                augmentation=augmentation,
                attribute=attribute,
            )
        )
