"""What the oracle returns. JSON Schema for the LLM is generated from these models, never written by hand."""

from __future__ import annotations

from collections import Counter
from typing import Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

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


# A verdict is only complete when `others` names every other rubric of the prompt exactly once, by
# its exact name. Which rubrics those are is not in the schema (it differs per prompt): the request
# carries them as pydantic validation context, `{"other_rubrics": [names]}`, so an incomplete verdict
# fails validation and is re-asked like any other invalid output. Without that context (a verdict
# read on its own) only the shape is checked; `coverage_problem` says what is wrong with a verdict
# for a given list, and `passes` never passes an incomplete one.
# (A comment, not the docstring: a model's docstring is its JSON schema's description, which the
# provider sees and the cache key hashes; a longer one would re-send every stored verification.)
class Verdict(BaseModel):
    """Original vs rewrite: did the target rubric move the intended way and did the others stay put?"""

    model_config = ConfigDict(extra="forbid")

    target: Literal["better", "same", "worse"] = Field(description="how the REWRITE compares to the ORIGINAL on the target rubric")
    others: list[RubricChange] = Field(description="the same comparison for every other rubric")
    explanation: str = Field(description="one or two sentences")

    @field_validator("others")
    @classmethod
    def _names_every_other_rubric(cls, others: list[RubricChange], info: ValidationInfo) -> list[RubricChange]:
        expected = (info.context or {}).get("other_rubrics")
        if expected is not None:
            problem = coverage_problem([o.rubric for o in others], expected)
            if problem:
                raise ValueError(problem)
        return others

    def coverage_problem(self, expected: Sequence[str]) -> str | None:
        """What keeps this verdict from covering exactly the rubrics `expected`; None when it does."""
        return coverage_problem([o.rubric for o in self.others], expected)

    def passes(self, direction: Literal["upgrade", "degrade"], expected: Sequence[str]) -> bool:
        """The target moved the intended way, and every other rubric in `expected` was judged and stayed the same."""
        want = "better" if direction == "upgrade" else "worse"
        complete = self.coverage_problem(expected) is None
        return complete and self.target == want and all(o.change == "same" for o in self.others)


def coverage_problem(named: Sequence[str], expected: Sequence[str]) -> str | None:
    """Why `named` is not every rubric of `expected` exactly once (missing, extra, repeated), or None."""
    counts, wanted = Counter(named), set(expected)
    missing = [n for n in dict.fromkeys(expected) if n not in counts]
    extra = sorted(n for n in counts if n not in wanted)
    repeated = sorted(n for n, k in counts.items() if k > 1 and n in wanted)
    if not (missing or extra or repeated):
        return None
    parts = [f"missing {', '.join(missing)}"] * bool(missing) + [f"not asked about {', '.join(extra)}"] * bool(extra)
    parts += [f"named more than once {', '.join(repeated)}"] * bool(repeated)
    want = ", ".join(dict.fromkeys(expected)) or "none (an empty list)"
    return f"`others` must name each other rubric exactly once, by its exact name ({want}): {'; '.join(parts)}"


OUTPUT_MODELS: dict[str, type[BaseModel]] = {
    "Rubrics": Rubrics,
    "Ratings": Ratings,
    "Counterfactual": Counterfactual,
    "Verdict": Verdict,
}
