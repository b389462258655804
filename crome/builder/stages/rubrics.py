"""Stage 1: one oracle call per distinct prompt lists its 3 to 6 causal rubrics."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Iterable

from crome.builder.stages.base import PlannedCall, Stage, StageEnv, conversation_text, directions, failure_detail, wants_causal
from crome.builder.stages.records import PairContext
from crome.schemas import Rubric, SourcePair
from crome.schemas.calls import OracleRequest, OracleResponse
from crome.schemas.hashing import stable_hash

OUTPUT_GUESS = 250  # tokens of a rubric list
MEMO = 4096  # prompts whose rubric call a build remembers (memory stays flat however long the source)


class RubricsStage(Stage):
    """Rubrics are per prompt, not per pair: pairs that share a prompt share one call (and one future)."""

    name = "rubrics"
    tasks = ("rubrics",)

    def __init__(self, env: StageEnv) -> None:
        super().__init__(env)
        # The last MEMO prompts' futures (in order of first use): pairs sharing a prompt are usually neighbours
        # (RM-Bench's nine); one further away asks `generate` again, which answers from the store.
        self._memo: OrderedDict[str, asyncio.Future[OracleResponse]] = OrderedDict()

    def _request(self, pair: SourcePair) -> OracleRequest:
        conversation = conversation_text(pair.prompt)
        return self.request("rubrics", {"prompt": conversation}, {"prompt": pair.prompt_text, "conversation": conversation})

    async def __call__(self, ctx: PairContext) -> bool:
        if not wants_causal(ctx.pair, self.options):
            return False
        key = stable_hash([m.model_dump() for m in ctx.pair.prompt])
        fut = self._memo.get(key)
        if fut is None:
            fut = self._memo[key] = asyncio.ensure_future(self.env.generate(self._request(ctx.pair)))
            if len(self._memo) > MEMO:
                self._memo.popitem(last=False)  # an evicted call still in flight goes on; its waiters hold it
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

    def planned(self, pair: SourcePair) -> Iterable[PlannedCall]:
        if wants_causal(pair, self.options) and directions(self.options, self.env.capabilities):
            yield PlannedCall(self._request(pair), exact=True, output_tokens=OUTPUT_GUESS)
