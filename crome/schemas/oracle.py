"""What the oracle returns. JSON Schema for the LLM is generated from these models, never written by hand."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RubricName = Field(
    description="snake_case name of the attribute, e.g. factuality, relevance, completeness, safety",
    pattern=r"^[a-z][a-z0-9_]{1,40}$",
)


class Rubric(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = RubricName
    definition: str = Field(description="one sentence: what a good answer to THIS prompt does on this attribute")


class Rubrics(BaseModel):
    """The causal rubrics of one prompt: the few attributes that really decide answer quality."""

    model_config = ConfigDict(extra="forbid")

    rubrics: list[Rubric] = Field(min_length=3, max_length=6)


class RubricRating(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rubric: str = Field(description="rubric name, exactly as given")
    rating: Literal["strong", "weak"]
    reason: str = Field(description="one short sentence of evidence from the answer")


class Ratings(BaseModel):
    """One answer judged on each rubric of its prompt."""

    model_config = ConfigDict(extra="forbid")

    ratings: list[RubricRating] = Field(min_length=1)


class Counterfactual(BaseModel):
    """A rewrite of one answer that changes exactly one rubric and keeps everything else."""

    model_config = ConfigDict(extra="forbid")

    rewrite: str = Field(description="the full rewritten answer, nothing before or after it")
    change: str = Field(description="one sentence: what was changed and why it moves only the target rubric")


class RubricChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rubric: str
    change: Literal["better", "same", "worse"]


class Verdict(BaseModel):
    """Original vs rewrite: did the target rubric move the intended way and did the others stay put?"""

    model_config = ConfigDict(extra="forbid")

    target: Literal["better", "same", "worse"] = Field(description="how the REWRITE compares to the ORIGINAL on the target rubric")
    others: list[RubricChange] = Field(description="the same comparison for every other rubric")
    explanation: str = Field(description="one or two sentences")

    def passes(self, direction: Literal["upgrade", "degrade"]) -> bool:
        want = "better" if direction == "upgrade" else "worse"
        return self.target == want and all(o.change == "same" for o in self.others)


class PhraseContent(BaseModel):
    """Does a phrase that opens or closes answers carry content, or is it a surface habit that can go?"""

    model_config = ConfigDict(extra="forbid")

    carries_content: bool = Field(description="true if removing the phrase would change what the answer says or does")
    reason: str = Field(description="one short sentence")


OUTPUT_MODELS: dict[str, type[BaseModel]] = {
    "Rubrics": Rubrics,
    "Ratings": Ratings,
    "Counterfactual": Counterfactual,
    "Verdict": Verdict,
    "PhraseContent": PhraseContent,
}
