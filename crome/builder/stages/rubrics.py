"""Stage 1: one oracle call per distinct prompt lists its 3 to 6 causal rubrics."""

from __future__ import annotations

import asyncio

from crome.builder.oracles.base import Generate
from crome.builder.stages.records import PairContext
from crome.builder.stages.common import ask, conversation_text, failure_detail
from crome.schemas.hashing import stable_hash
from crome.schemas import Rubric


class RubricStage:
    """Rubrics are per prompt, not per pair: pairs that share a prompt share one call (and one future)."""

    def __init__(self, generate: Generate, template):
        self.generate = generate
        self.template = template
        self._memo: dict[str, asyncio.Future] = {}

    async def _rubrics(self, ctx: PairContext):
        conversation = conversation_text(ctx.pair.prompt)
        return await ask(
            self.generate,
            self.template,
            {"prompt": conversation},
            {"prompt": ctx.pair.prompt_text, "conversation": conversation},
        )

    async def __call__(self, ctx: PairContext) -> bool:
        key = stable_hash([m.model_dump() for m in ctx.pair.prompt])
        fut = self._memo.get(key)
        if fut is None:
            fut = self._memo[key] = asyncio.ensure_future(self._rubrics(ctx))
        resp = await asyncio.shield(fut)
        if not resp.ok:
            ctx.reject_pair("rubrics", f"oracle_{resp.status}", failure_detail(resp))
            return False
        seen: set[str] = set()
        rubrics: list[Rubric] = []
        for r in resp.parsed.rubrics:  # type: ignore[union-attr]
            if r.name not in seen:
                seen.add(r.name)
                rubrics.append(r)
        ctx.rubrics = rubrics
        return True
