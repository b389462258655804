"""Stage 4: the oracle compares original and rewrite on the target rubric and on the others.

A rewrite that did not move the target the intended way, or moved another rubric, is rejected
with the verdict recorded. A verdict must name every other rubric of the prompt exactly once, by its
name: the request carries that list as validation context, so an LLM oracle's incomplete verdict is
re-asked within the re-ask budget and then ends as a recorded failure (`oracle_invalid`); a verdict
that reaches this stage incomplete all the same (an oracle that does not validate, a batch job sent
before requests carried the list) is rejected as `verdict_incomplete`. Never a pass.
An oracle that cannot judge (`rules`) leaves `verification = unsupported`.
"""

from __future__ import annotations

import asyncio
from typing import Iterable

from crome.builder.stages.base import PlannedCall, Stage, conversation_text, directions, failure_detail, wants_causal
from crome.builder.stages.rate import assumed_rubrics
from crome.builder.stages.records import Candidate, PairContext
from crome.schemas import SourcePair

OUTPUT_GUESS = 150  # tokens of a verdict


class VerifyStage(Stage):
    name = "verify"
    tasks = ("verify",)

    def _variables(self, conversation: str, original: str, rewrite: str, rubric: dict, others: list[dict], direction: str) -> dict:
        return {"prompt": conversation, "original": original, "rewrite": rewrite, "rubric": rubric, "other_rubrics": others,
                "direction": direction}

    async def __call__(self, ctx: PairContext) -> bool:
        if not self.options.verify_enabled or not ctx.rewrites:
            return True
        conversation = conversation_text(ctx.pair.prompt)
        by_name = {r.name: r for r in ctx.rubrics}

        def other_names(c: Candidate) -> list[str]:
            return [r.name for r in ctx.rubrics if r.name != c.attribute]

        async def one(c: Candidate):
            others = [r.model_dump() for r in ctx.rubrics if r.name != c.attribute]
            return await self.ask(
                "verify",
                self._variables(conversation, c.original_answer or "", c.rewrite or "", by_name[c.attribute].model_dump(), others, c.augmentation),
                {"prompt": ctx.pair.prompt_text, "original": c.original_answer, "rewrite": c.rewrite, "rubric": c.attribute, "direction": c.augmentation},
                validation={"other_rubrics": other_names(c)},
            )

        kept: list[Candidate] = []
        for c, resp in zip(ctx.rewrites, await asyncio.gather(*(one(c) for c in ctx.rewrites))):
            if resp.status == "unsupported":
                c.quality["verification"] = "unsupported"
                kept.append(c)
                continue
            if not resp.ok:
                ctx.rejections.append(c.reject("verify", f"oracle_{resp.status}", failure_detail(resp)))
                continue
            v = resp.parsed
            expected = other_names(c)
            incomplete = v.coverage_problem(expected)  # type: ignore[union-attr]
            if incomplete:
                ctx.rejections.append(c.reject("verify", "verdict_incomplete", incomplete[:500]))
                continue
            moved = [o.rubric for o in v.others if o.change != "same"]  # type: ignore[union-attr]
            summary = f"target {v.target}" + (f"; also changed: {', '.join(moved)}" if moved else "")  # type: ignore[union-attr]
            if v.passes(c.augmentation, expected):  # type: ignore[union-attr]
                c.quality["verification"] = f"pass: {summary}"
                c.checks.append("verified")
                kept.append(c)
            else:
                reason = "target_not_moved" if v.target != ("worse" if c.augmentation == "degrade" else "better") else "other_rubrics_changed"  # type: ignore[union-attr]
                ctx.rejections.append(c.reject("verify", reason, f"{summary}. {v.explanation}"[:500]))  # type: ignore[union-attr]
        ctx.rewrites = kept
        return True

    def planned(self, pair: SourcePair) -> Iterable[PlannedCall]:
        """One verdict per planned rewrite (an upper bound, like the rewrites)."""
        if not (self.options.verify_enabled and wants_causal(pair, self.options)):
            return
        rubrics = assumed_rubrics()
        conversation = conversation_text(pair.prompt)
        for direction in directions(self.options, self.env.capabilities):
            answer = pair.chosen.content if direction == "degrade" else pair.rejected.content
            request = self.request("verify", self._variables(conversation, answer, answer, rubrics[0], rubrics[1:], direction), {})
            for _ in range(min(self.options.max_attributes, len(rubrics))):
                yield PlannedCall(request, exact=False, output_tokens=OUTPUT_GUESS)
