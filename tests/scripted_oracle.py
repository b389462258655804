"""A scripted in-process oracle for pipeline tests: answers by task through small functions, keeps a history."""

from __future__ import annotations

from typing import Any, Callable, ClassVar

from crome.builder.oracles.base import Capabilities
from crome.schemas.calls import OracleRequest, OracleResponse
from crome.schemas import Counterfactual, Ratings, RubricChange, RubricRating, Rubric, Rubrics, Verdict

RUBRICS = ["factuality", "relevance", "completeness"]


def default_rubrics(req: OracleRequest) -> OracleResponse:
    return OracleResponse(status="ok", parsed=Rubrics(rubrics=[Rubric(name=n, definition=f"{n} of the answer") for n in RUBRICS]))


def default_rate(req: OracleRequest) -> OracleResponse:
    rating = "strong" if req.context["side"] == "chosen" else "weak"
    return OracleResponse(status="ok", parsed=Ratings(ratings=[RubricRating(rubric=n, rating=rating, reason="r") for n in req.context["rubrics"]]))


def default_rewrite(req: OracleRequest) -> OracleResponse:
    answer: str = req.context["answer"]
    words = answer.split()
    # Replace a third of the words in the middle: a real edit that keeps first and last line.
    k = max(2, len(words) // 3)
    mid = len(words) // 2
    tag = "wrongly" if req.task == "degrade" else "precisely"
    words[mid : mid + k] = [f"{tag}-{req.context['rubric']}"] + [f"{tag}{i}" for i in range(k - 1)]
    return OracleResponse(status="ok", parsed=Counterfactual(rewrite=" ".join(words), change=f"{req.task} {req.context['rubric']}"), input_tokens=100, output_tokens=50)


def default_verify(req: OracleRequest) -> OracleResponse:
    """A good judge: the target moved as intended, every other rubric it was asked about stayed the same."""
    target = "worse" if req.context["direction"] == "degrade" else "better"
    others = [RubricChange(rubric=n, change="same") for n in req.validation["other_rubrics"]]
    return OracleResponse(status="ok", parsed=Verdict(target=target, others=others, explanation="ok"))


class ScriptedOracle:
    provider: ClassVar[str] = "scripted"
    # Like an LLM it reads the rendered request, except that its ratings follow the side (not in the text).
    capabilities: ClassVar[Capabilities] = Capabilities(context_keys=frozenset({"side"}))

    def __init__(self, model: str = "m", **handlers: Callable[[OracleRequest], OracleResponse]):
        self.model = model
        self.handlers: dict[str, Callable[[OracleRequest], OracleResponse]] = {
            "rubrics": default_rubrics, "rate": default_rate, "degrade": default_rewrite, "upgrade": default_rewrite,
            "verify": default_verify, **handlers,
        }
        self.history: list[OracleRequest] = []

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.model}"

    async def agenerate(self, request: OracleRequest) -> OracleResponse:
        self.history.append(request)
        return self.handlers[request.task](request)

    async def aclose(self) -> None:
        return None

    def calls(self, task: str | None = None) -> list[OracleRequest]:
        return [r for r in self.history if task is None or r.task == task]


def contexts(oracle: ScriptedOracle, task: str) -> list[dict[str, Any]]:
    return [r.context for r in oracle.calls(task)]
