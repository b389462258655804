"""`--dry-run`: how many oracle calls, tokens and dollars a build would take, without calling anything.

Each stage lists the calls it would send for a pair (`Stage.planned`): requests known before the
earlier stages answer (rubrics) are exact and looked up in the cache, so a resumed run is charged
only for what is missing; the rest are upper bounds (ratings against an assumed rubric list,
every drawn rubric getting every requested intervention). Tokens are estimated from characters;
output tokens from each stage's guess.
"""

from __future__ import annotations

from typing import Any, Sequence

from crome.builder.oracles.base import Oracle, cache_key
from crome.builder.stages.base import Stage
from crome.builder.store import RunStore
from crome.schemas import SourcePair

NOTE = "rubric calls are exact (cached ones excluded); ratings assume 4 rubrics; rewrites and verifications are upper bounds"


def estimate(stages: Sequence[Stage], pairs: Sequence[SourcePair], store: RunStore, oracle: Oracle, *, batch: bool = False) -> dict[str, Any]:
    tasks = [t for s in stages for t in s.tasks]
    calls = dict.fromkeys(tasks, 0)
    cached = dict.fromkeys(tasks, 0)
    tokens_in = tokens_out = 0
    seen: set[str] = set()
    for pair in pairs:
        for stage in stages:
            for planned in stage.planned(pair):
                request = planned.request
                if planned.exact:
                    key = cache_key(oracle, request)
                    if key in seen:  # another pair sends the same request: one call
                        continue
                    seen.add(key)
                    rec = store.get_calls([key]).get(key)
                    if rec is not None and rec.replayable:
                        cached[request.task] += 1
                        continue
                calls[request.task] += 1
                tokens_in += request.estimated_input_tokens
                tokens_out += planned.output_tokens
    cost: float | None = 0.0
    if oracle.capabilities.priced:
        from crome.builder.oracles.llm.pricing import estimate_cost

        cost = estimate_cost(oracle.model, tokens_in, tokens_out, batch=batch)  # --batch: batch prices
    return {
        "status": "dry_run",
        "oracle": oracle.name,
        "source_pairs": len(pairs),
        "calls": calls,
        "calls_total": sum(calls.values()),
        "cached": cached,
        "tokens": {"input": tokens_in, "output": tokens_out},
        "cost_usd": cost,
        "note": NOTE,
    }
