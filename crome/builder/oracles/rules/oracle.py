"""The oracle: task dispatch, label-following ratings, and `degrade` over the intervention registry."""

from __future__ import annotations

import random
import time
from typing import Any, Callable, ClassVar

from pydantic import BaseModel

from crome.builder.oracles.base import Capabilities
from crome.builder.oracles.rules.clarity import degrade_clarity
from crome.builder.oracles.rules.completeness import degrade_completeness
from crome.builder.oracles.rules.doc import Unsupported
from crome.builder.oracles.rules.factuality import degrade_factuality
from crome.builder.oracles.rules.relevance import degrade_relevance
from crome.builder.oracles.rules.rubrics import rubrics_for
from crome.schemas import Counterfactual, Ratings, RubricRating
from crome.schemas.calls import OracleRequest, OracleResponse
from crome.schemas.hashing import stable_hash


class BadContext(Exception):
    """The request context lacks a field the task needs (a caller bug, recorded as an error)."""


def _need(context: dict[str, Any], key: str, task: str) -> Any:
    if key not in context or context[key] is None:
        raise BadContext(f"rules oracle: the {task} request context has no {key!r} (got keys {sorted(context)})")
    return context[key]


def _rng(seed: int, answer: str, rubric: str) -> random.Random:
    # The answer's hash makes two answers under the same build seed draw differently.
    return random.Random(int(seed) ^ int(stable_hash([answer, rubric])[7:23], 16))


Intervention = Callable[[str, random.Random, str], Counterfactual]
INTERVENTIONS: dict[str, Intervention] = {
    "completeness": degrade_completeness,
    "factuality": degrade_factuality,
    "correctness": degrade_factuality,
    "relevance": degrade_relevance,
    "clarity": degrade_clarity,
}
# Other names LLM rubric sets use for the same attributes.
ALIASES = {
    "accuracy": "factuality", "truthfulness": "factuality", "factual_accuracy": "factuality", "honesty": "factuality",
    "thoroughness": "completeness", "comprehensiveness": "completeness", "detail": "completeness",
    "on_topic": "relevance", "topicality": "relevance", "instruction_following": "relevance",
    "coherence": "clarity", "readability": "clarity", "organization": "clarity", "organisation": "clarity",
    "structure": "clarity",
}


def degrade(answer: str, rubric: str, donor: str, seed: int) -> Counterfactual:
    name = ALIASES.get(rubric, rubric)
    fn = INTERVENTIONS.get(name)
    if fn is None:
        if name in ("safety", "harmlessness", "harm_avoidance"):
            raise Unsupported("the rules oracle cannot judge or change safety; it never fakes a safety intervention")
        raise Unsupported(f"the rules oracle has no intervention for rubric {rubric!r}")
    if not answer.strip():
        raise Unsupported("the answer is empty")
    result = fn(answer, _rng(seed, answer, name), donor or "")
    if result.rewrite == answer:
        raise Unsupported(f"the {name} intervention found nothing to change")
    return result


RATE_REASON = {
    # The rules oracle has no judgement of its own: the source label is its only signal.
    "chosen": "Rated strong because the source labels this answer as chosen; the rules oracle has no judgement beyond the label.",
    "rejected": "Rated weak because the source labels this answer as rejected; the rules oracle has no judgement beyond the label.",
}


def rate(side: str, rubrics: list[str]) -> Ratings:
    if side not in RATE_REASON:
        raise BadContext(f"rules oracle: rate needs side 'chosen' or 'rejected', got {side!r}")
    if not rubrics:
        raise BadContext("rules oracle: the rate request context has an empty 'rubrics' list")
    rating = "strong" if side == "chosen" else "weak"
    return Ratings(ratings=[RubricRating(rubric=name, rating=rating, reason=RATE_REASON[side]) for name in rubrics])


class RulesOracle:
    """Heuristic rubrics, label-following ratings and honest single-attribute degrades; no model, no network."""

    provider: ClassVar[str] = "rules"
    # No judge: no upgrades, safety rewrites or verdicts; offline, so no price and nothing to batch.
    # It works on the request's context, not its rendered text. Of the fields it reads, the prompt,
    # conversation, answer, rubric and rubric names are all in the rendered messages, so the key
    # has them already; these three are not, and its output depends on them: `side` (a rating
    # follows the source label: the same answer is rated strong as chosen, weak as rejected),
    # `donor` (the text a relevance degrade splices in) and `seed` (every degrade's draws).
    capabilities: ClassVar[Capabilities] = Capabilities(
        upgrade=False, safety=False, verify=False, priced=False, batch=False,
        context_keys=frozenset({"side", "donor", "seed"}),
    )

    def __init__(self, model: str = "rules", **options: Any):
        # Options for LLM oracles (concurrency, rpm, base_url) mean nothing here and are ignored.
        self.model = model or "rules"

    @property
    def name(self) -> str:
        return "rules"

    async def agenerate(self, request: OracleRequest) -> OracleResponse:
        return self.generate(request)

    async def aclose(self) -> None:
        return None  # nothing is held open

    def generate(self, request: OracleRequest) -> OracleResponse:
        """The synchronous core (the work is microseconds of string handling, there is nothing to await)."""
        t0 = time.perf_counter()
        ctx = request.context
        try:
            parsed = self._dispatch(request.task, ctx)
        except Unsupported as exc:
            return OracleResponse(status="unsupported", error=str(exc), latency_s=time.perf_counter() - t0)
        except BadContext as exc:
            return OracleResponse(status="error", error=str(exc), latency_s=time.perf_counter() - t0)
        return OracleResponse(status="ok", parsed=parsed, raw=parsed.model_dump_json(), latency_s=time.perf_counter() - t0)

    def _dispatch(self, task: str, ctx: dict[str, Any]) -> BaseModel:
        if task == "rubrics":
            return rubrics_for(str(_need(ctx, "prompt", task)), str(ctx.get("conversation") or ""))
        if task == "rate":
            names = [r["name"] if isinstance(r, dict) else str(r) for r in _need(ctx, "rubrics", task)]
            return rate(str(_need(ctx, "side", task)), names)
        if task == "degrade":
            return degrade(str(_need(ctx, "answer", task)), str(_need(ctx, "rubric", task)), str(ctx.get("donor") or ""), int(ctx.get("seed") or 0))
        if task == "upgrade":
            raise Unsupported("the rules oracle cannot write better answers; use an LLM oracle for upgrades")
        if task == "verify":
            raise Unsupported("verification needs a judge; the rules oracle has none")
        raise Unsupported(f"the rules oracle has no task {task!r}")
