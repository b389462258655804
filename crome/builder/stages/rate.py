"""Stage 2: each answer of a pair is rated strong or weak on every rubric of its prompt (one call per answer).

A call per answer rather than one per pair keeps the judgement of one answer free of the other
(no anchoring on the comparison), and lets identical answers share a cached call.
"""

from __future__ import annotations

import asyncio
from typing import Iterable

from crome.builder.stages.base import PlannedCall, Stage, conversation_text, directions, failure_detail, wants_causal
from crome.builder.stages.records import PairContext
from crome.schemas import SourcePair

OUTPUT_GUESS = 160  # tokens of a rating per rubric
# Before the rubrics are known, estimates assume this many, each with a definition of this length.
ASSUMED_RUBRICS = 4
ASSUMED_RUBRIC = {"name": "rubric_0", "definition": "x" * 80}


def assumed_rubrics() -> list[dict[str, str]]:
    return [{**ASSUMED_RUBRIC, "name": f"rubric_{i}"} for i in range(ASSUMED_RUBRICS)]


class RateStage(Stage):
    name = "rate"
    tasks = ("rate",)

    async def __call__(self, ctx: PairContext) -> bool:
        conversation = conversation_text(ctx.pair.prompt)
        rubrics = [r.model_dump() for r in ctx.rubrics]
        names = [r.name for r in ctx.rubrics]
        sides = {"chosen": ctx.pair.chosen.content, "rejected": ctx.pair.rejected.content}
        responses = await asyncio.gather(
            *(
                self.ask(
                    "rate",
                    {"prompt": conversation, "answer": answer, "rubrics": rubrics},
                    {"prompt": ctx.pair.prompt_text, "answer": answer, "side": side, "rubrics": names},
                )
                for side, answer in sides.items()
            )
        )
        ok = True
        for side, resp in zip(sides, responses):
            if not resp.ok:
                ctx.reject_pair("rate", f"oracle_{resp.status}", f"{side}: {failure_detail(resp)}")
                ok = False
                continue
            # Ratings for rubrics the oracle did not name are ignored; missing ones make the rubric ineligible.
            ctx.ratings[side] = {r.rubric: r.rating for r in resp.parsed.ratings if r.rubric in names}  # type: ignore[union-attr]
        return ok

    def planned(self, pair: SourcePair) -> Iterable[PlannedCall]:
        if not (wants_causal(pair, self.options) and directions(self.options, self.env.capabilities)):
            return
        conversation = conversation_text(pair.prompt)
        for answer in (pair.chosen.content, pair.rejected.content):
            request = self.request("rate", {"prompt": conversation, "answer": answer, "rubrics": assumed_rubrics()}, {})
            yield PlannedCall(request, exact=False, output_tokens=OUTPUT_GUESS)
