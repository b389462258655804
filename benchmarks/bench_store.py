"""Run store throughput: call records written per second, in batches and one per transaction.

The targets are > 2,000 calls/s in batches of 256 and > 300 calls/s one per transaction (each
commit is durable, so the second figure is bounded by the write-ahead log's syncs). The floors
checked by `--check` are looser, for loaded machines; they used to sit in the store's tests.
Also timed: looking the batched calls up again by key (what a replaying build does per micro-batch).
Each figure is the best of `--repeat` runs, each in a fresh store: other load only slows a run down.

    python benchmarks/bench_store.py [--calls 1024] [--batch 256] [--single 100] [--repeat 3] [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

from crome.builder.store import CallRecord, RunStore
from crome.prompts import load_template
from crome.schemas.calls import OracleResponse
from crome.schemas.oracle import Counterfactual

TARGETS = {"batched_calls_per_s": 2000, "single_calls_per_s": 300}
FLOORS = {"batched_calls_per_s": 1000, "single_calls_per_s": 100}


def records(prefix: str, n: int) -> list[CallRecord]:
    """`n` ok degrade calls, the shape a build records most, with distinct keys."""
    request = load_template("degrade@v1").request(
        context={"side": "chosen"}, prompt="user: How many moons does Mars have?",
        answer="Mars has two moons: Phobos and Deimos.",
        rubric={"name": "factuality", "definition": "States that Mars has two moons."},
        other_rubrics=[{"name": "completeness", "definition": "Names both moons."}],
    )
    parsed = Counterfactual(rewrite="Mars has three moons.", change="wrong count")
    response = OracleResponse(status="ok", parsed=parsed, raw=parsed.model_dump_json(), input_tokens=10, output_tokens=5, latency_s=0.25)
    return [CallRecord.from_response(f"{prefix}{i}", request, response, "gemini", "gemini-2.0-flash") for i in range(n)]


def run(calls: int, batch: int, single: int) -> dict:
    batched, one_by_one = records("b", calls), records("s", single)
    with tempfile.TemporaryDirectory() as tmp, RunStore.open(tmp) as store:
        start = time.perf_counter()
        for i in range(0, calls, batch):
            store.record_calls(batched[i : i + batch])
        batched_s = time.perf_counter() - start
        start = time.perf_counter()
        for rec in one_by_one:
            store.record_calls([rec])
        single_s = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(0, calls, batch):
            store.get_calls(r.key for r in batched[i : i + batch])
        lookup_s = time.perf_counter() - start
        assert store.counts()["oracle_calls"] == calls + single
    return {
        "calls": calls, "batch": batch, "single": single,
        "batched_calls_per_s": round(calls / batched_s), "single_calls_per_s": round(single / single_s),
        "lookup_calls_per_s": round(calls / lookup_s),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=1024, help="calls recorded in batches")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--single", type=int, default=100, help="calls recorded one per transaction")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--check", action="store_true", help="exit 1 if a rate is under its floor")
    args = ap.parse_args()
    runs = [run(args.calls, args.batch, args.single) for _ in range(args.repeat)]
    for x in runs:
        print(json.dumps(x))
    r = {k: max(x[k] for x in runs) for k in runs[0]}
    print("| record_calls | calls | calls/s | target | floor (--check) |")
    print("|---|---|---|---|---|")
    print(f"| batches of {r['batch']} | {r['calls']:,} | {r['batched_calls_per_s']:,} | > {TARGETS['batched_calls_per_s']:,} | {FLOORS['batched_calls_per_s']:,} |")
    print(f"| one per transaction | {r['single']:,} | {r['single_calls_per_s']:,} | > {TARGETS['single_calls_per_s']:,} | {FLOORS['single_calls_per_s']:,} |")
    print(f"| get_calls lookups, batches of {r['batch']} | {r['calls']:,} | {r['lookup_calls_per_s']:,} | | |")
    below = [k for k, floor in FLOORS.items() if r[k] <= floor]
    if args.check and below:
        sys.exit(f"under the floor: {', '.join(below)}")


if __name__ == "__main__":
    main()
