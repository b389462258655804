"""The bookkeeping layer alone: `CachedGenerate` over a real run store, with an oracle that answers at once.

No SDK and no HTTP: what is left is the cache lookup, single flight, the billing of each
request, the call record and the store's micro-batched writes, then a replay of the same calls.
Prints CPU microseconds per call for both. Wall and CPU time wander on a shared machine; for a
comparison between two versions count instructions instead, which do not:

    valgrind --tool=callgrind --callgrind-out-file=cg.N python benchmarks/bench_generate.py --calls N --reps 1

for two values of N, and divide the difference of the totals by the difference of the N.

    python benchmarks/bench_generate.py [--calls 4000] [--reps 3]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from crome.builder.oracles.base import Capabilities
from crome.builder.run.generate import CachedGenerate
from crome.builder.store import RunStore
from crome.prompts import load_template
from crome.schemas import Counterfactual
from crome.schemas.calls import OracleResponse

CONCURRENCY = 64


class Instant:
    """An LLM-like oracle (reads the rendered messages only) that answers at once with usage."""

    provider = "openai"
    model = "gpt-4o-mini"
    name = "openai:gpt-4o-mini"
    capabilities = Capabilities()

    async def agenerate(self, request):
        await asyncio.sleep(0)
        return OracleResponse(status="ok", parsed=Counterfactual(rewrite="a rewrite " * 20, change="c"), raw="x" * 300,
                              input_tokens=800, output_tokens=120)

    async def aclose(self) -> None:
        return None


async def run(generate: CachedGenerate, requests) -> None:
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(request):
        async with slots:
            return await generate(request)

    await asyncio.gather(*(one(r) for r in requests))
    generate.flush()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=4000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    template = load_template("degrade@v1")
    answer = "An answer that goes on for a while. " * 40
    requests = [
        template.request(context={"prompt": f"Q {i}?", "answer": answer, "donor": "another answer " * 40, "seed": 0},
                         prompt=f"Q {i}?", answer=answer, rubric={"name": "factuality", "definition": "d"}, other_rubrics=[])
        for i in range(args.calls)
    ]
    for _ in range(args.reps):
        with tempfile.TemporaryDirectory() as tmp, RunStore.open(tmp) as store:
            c0 = time.process_time()
            asyncio.run(run(CachedGenerate(store, Instant()), requests))
            new = time.process_time() - c0
            replay = CachedGenerate(store, Instant())
            c0 = time.process_time()
            asyncio.run(run(replay, requests))
            replayed = time.process_time() - c0
            assert replay.stats.cached == args.calls
        print(f"new calls: {new / args.calls * 1e6:.0f} us CPU per call; replay: {replayed / args.calls * 1e6:.0f} us CPU per call")


if __name__ == "__main__":
    main()
