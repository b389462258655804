"""Stage 2: each answer of a pair is rated strong or weak on every rubric of its prompt (one call per answer).

A call per answer rather than one per pair keeps the judgement of one answer free of the other
(no anchoring on the comparison), and lets identical answers share a cached call.
"""

from __future__ import annotations

import asyncio

from crome.builder.oracles.base import Generate
from crome.builder.stages.records import PairContext
from crome.builder.stages.common import ask, conversation_text, failure_detail


async def rate(ctx: PairContext, generate: Generate, template) -> bool:
    conversation = conversation_text(ctx.pair.prompt)
    rubrics = [r.model_dump() for r in ctx.rubrics]
    names = [r.name for r in ctx.rubrics]
    sides = {"chosen": ctx.pair.chosen.content, "rejected": ctx.pair.rejected.content}
    responses = await asyncio.gather(
        *(
            ask(
                generate,
                template,
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
