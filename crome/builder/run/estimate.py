"""How many oracle calls, tokens and dollars a build would take, without calling anything.

Shown by `--dry-run` and at the start of every paid build, which stops before its first call when
the estimate passes `--max-cost`. Each stage lists the calls it would send for a pair
(`Stage.planned`): requests known before the earlier stages answer (rubrics) are exact and looked
up in the cache, so a resumed run is charged only for what is missing; the rest are upper bounds
(ratings against an assumed rubric list, every drawn rubric getting every requested
intervention), less the calls of that task the store already holds, so a resumed run's estimate
shrinks as its work is done. Tokens are estimated from characters; output tokens from each
stage's guess. The most expensive pairs are listed so that an outsized one can be found before it
is paid for.
"""

from __future__ import annotations

from typing import Any, Sequence

from crome.builder.oracles.base import Oracle, cache_key
from crome.builder.stages.base import Stage
from crome.builder.store import RETRY_STATUSES, RunStore
from crome.schemas import SourcePair

NOTE = ("rubric calls are exact (cached ones excluded); ratings assume 4 rubrics; rewrites and verifications are upper "
        "bounds, less the calls of their task already stored")
TOP_PAIRS = 5
_LOOKUP_CHUNK = 2000


def _stored_by_task(store: RunStore) -> dict[str, int]:
    """Calls per task the store holds in a final state (a re-run replays them)."""
    stats = store.call_stats()
    return {task: sum(n for status, n in statuses.items() if status not in RETRY_STATUSES)
            for task, statuses in stats["by_task_status"].items()}


def estimate(
    stages: Sequence[Stage], pairs: Sequence[SourcePair], store: RunStore, oracle: Oracle, *, batch: bool = False,
    max_cost: float | None = None,
) -> dict[str, Any]:
    tasks = [t for s in stages for t in s.tasks]
    calls = dict.fromkeys(tasks, 0)
    cached = dict.fromkeys(tasks, 0)
    bounded = dict.fromkeys(tasks, 0)  # upper-bound calls per task, before what the store holds is taken off
    bounded_tokens = {t: [0, 0] for t in tasks}
    per_pair: list[tuple[int, int, int, SourcePair]] = []  # (input tokens, output tokens, calls, pair)
    exact: dict[str, tuple[int, Any]] = {}  # cache key -> (pair index, planned call); first pair sending it pays
    for i, pair in enumerate(pairs):
        tin = tout = n = 0
        for stage in stages:
            for planned in stage.planned(pair):
                request = planned.request
                if planned.exact:
                    key = cache_key(oracle, request)
                    if key not in exact:
                        exact[key] = (i, planned)
                    continue
                bounded[request.task] += 1
                bounded_tokens[request.task][0] += request.estimated_input_tokens
                bounded_tokens[request.task][1] += planned.output_tokens
                tin, tout, n = tin + request.estimated_input_tokens, tout + planned.output_tokens, n + 1
        per_pair.append((tin, tout, n, pair))
    keys = list(exact)
    stored: dict[str, Any] = {}
    for j in range(0, len(keys), _LOOKUP_CHUNK):  # one query per chunk, not per pair
        stored.update(store.get_calls(keys[j : j + _LOOKUP_CHUNK]))
    tokens_in = tokens_out = 0
    for key, (i, planned) in exact.items():
        task = planned.request.task
        rec = stored.get(key)
        if rec is not None and rec.replayable:
            cached[task] += 1
            continue
        calls[task] += 1
        tokens_in += planned.request.estimated_input_tokens
        tokens_out += planned.output_tokens
        tin, tout, n, pair = per_pair[i]
        per_pair[i] = (tin + planned.request.estimated_input_tokens, tout + planned.output_tokens, n + 1, pair)
    done = _stored_by_task(store)
    for task, n in bounded.items():
        left = max(0, n - done.get(task, 0))
        calls[task] += left
        cached[task] += n - left
        if n:
            tokens_in += bounded_tokens[task][0] * left // n
            tokens_out += bounded_tokens[task][1] * left // n
    price = None
    if oracle.capabilities.priced:
        from crome.builder.oracles.llm.pricing import estimate_cost

        price = lambda i, o: estimate_cost(oracle.model, i, o, batch=batch)  # noqa: E731 - --batch: batch prices
    cost = price(tokens_in, tokens_out) if price else (0.0 if not oracle.capabilities.priced else None)
    top = sorted(per_pair, key=lambda p: (-(p[0] + p[1]), p[3].row))[:TOP_PAIRS]
    return {
        "status": "dry_run",
        "oracle": oracle.name,
        "source_pairs": len(pairs),
        "calls": calls,
        "calls_total": sum(calls.values()),
        "cached": cached,
        "tokens": {"input": tokens_in, "output": tokens_out},
        "cost_usd": cost,
        "max_cost": max_cost,
        "over_budget": max_cost is not None and cost is not None and cost > max_cost,
        "top_pairs": [_pair_line(tin, tout, n, pair, price) for tin, tout, n, pair in top if n],
        "note": NOTE,
    }


def _pair_line(tin: int, tout: int, calls: int, pair: SourcePair, price) -> dict[str, Any]:
    prompt = " ".join(pair.prompt[-1].content.split())
    return {
        "row": pair.row, "source_id": pair.source_id, "calls": calls,
        "chars": sum(len(m.content) for m in pair.prompt) + len(pair.chosen.content) + len(pair.rejected.content),
        "tokens": {"input": tin, "output": tout},
        "cost_usd": price(tin, tout) if price else None,
        "prompt": prompt if len(prompt) <= 60 else prompt[:59] + "…",
    }
