"""Stage 4: the oracle compares original and rewrite on the target rubric and on the others.

A rewrite that did not move the target the intended way, or moved another rubric, is rejected
with the verdict recorded. An oracle that cannot judge (`rules`) leaves `verification = unsupported`.
"""

from __future__ import annotations

import asyncio

from crome.builder.oracles.base import Generate
from crome.builder.stages.records import Candidate, PairContext
from crome.builder.stages.common import ask, conversation_text, failure_detail


async def verify(ctx: PairContext, candidates: list[Candidate], generate: Generate, template) -> list[Candidate]:
    conversation = conversation_text(ctx.pair.prompt)
    by_name = {r.name: r for r in ctx.rubrics}

    async def one(c: Candidate):
        others = [r.model_dump() for r in ctx.rubrics if r.name != c.attribute]
        return await ask(
            generate,
            template,
            {
                "prompt": conversation,
                "original": c.original_answer,
                "rewrite": c.rewrite,
                "rubric": by_name[c.attribute].model_dump(),
                "other_rubrics": others,
                "direction": c.augmentation,
            },
            {"prompt": ctx.pair.prompt_text, "original": c.original_answer, "rewrite": c.rewrite, "rubric": c.attribute, "direction": c.augmentation},
        )

    kept: list[Candidate] = []
    for c, resp in zip(candidates, await asyncio.gather(*(one(c) for c in candidates))):
        if resp.status == "unsupported":
            c.quality["verification"] = "unsupported"
            kept.append(c)
            continue
        if not resp.ok:
            ctx.rejections.append(c.reject("verify", f"oracle_{resp.status}", failure_detail(resp)))
            continue
        v = resp.parsed
        moved = [o.rubric for o in v.others if o.change != "same"]  # type: ignore[union-attr]
        summary = f"target {v.target}" + (f"; also changed: {', '.join(moved)}" if moved else "")  # type: ignore[union-attr]
        if v.passes(c.augmentation):  # type: ignore[union-attr]
            c.quality["verification"] = f"pass: {summary}"
            c.checks.append("verified")
            kept.append(c)
        else:
            reason = "target_not_moved" if v.target != ("worse" if c.augmentation == "degrade" else "better") else "other_rubrics_changed"  # type: ignore[union-attr]
            ctx.rejections.append(c.reject("verify", reason, f"{summary}. {v.explanation}"[:500]))  # type: ignore[union-attr]
    return kept
