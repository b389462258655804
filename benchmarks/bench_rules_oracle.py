"""Throughput of the rules oracle: calls per second per task, on one core, with no pipeline around it.

Two workloads: the sample answers of the rules tests (a prompt's rubrics, two ratings and two
degrades per pair, the mix a 10k-pair build makes), and the first pairs of the UltraFeedback
sample in ../shared/data (rubrics, then a degrade per rubric with a donor answer, as a build
makes them). The rules oracle does microseconds of string handling per call: a build of 10,000
pairs must not wait on it. The mixed figure is checked against a floor (500 calls/s, about a
tenth of a free core) that only a pathology misses; the script exits 1 below it.

    python benchmarks/bench_rules_oracle.py              # prints a markdown table
    python benchmarks/bench_rules_oracle.py --pairs 300  # fewer real pairs
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "builder" / "oracles" / "rules"))
sys.path.insert(0, str(ROOT))

from rules_helpers import CODE_ANSWER, ESSAY, PROMPTS, RECIPE  # noqa: E402

from crome.builder.oracles import OracleRequest, OracleResponse  # noqa: E402
from crome.builder.oracles.rules import RulesOracle  # noqa: E402
from crome.schemas import Counterfactual, Ratings, Rubrics  # noqa: E402

UF = ROOT.parent / "shared" / "data" / "ultrafeedback-binarized-sample" / "train_clean.jsonl"
FLOOR = 500  # calls/s on the mixed workload
MODELS = {"rubrics": Rubrics, "rate": Ratings, "degrade": Counterfactual}


class Tally:
    """Calls, seconds and statuses per row label."""

    def __init__(self) -> None:
        self.calls: Counter = Counter()
        self.seconds: Counter = Counter()
        self.status: dict[str, Counter] = {}
        self.oracle = RulesOracle()

    def call(self, label: str, task: str, context: dict) -> OracleResponse:
        request = OracleRequest(task, f"{task}@v1", "x", (), MODELS[task], context=context)
        t0 = time.perf_counter()
        resp = self.oracle.generate(request)
        self.seconds[label] += time.perf_counter() - t0
        self.calls[label] += 1
        self.status.setdefault(label, Counter())[resp.status] += 1
        return resp


def mixed(n: int) -> tuple[int, float]:
    """The workload of the old throughput test: per pair, rubrics, two ratings, a completeness and a factuality degrade."""
    prompts, answers = list(PROMPTS.values()), [RECIPE, ESSAY, CODE_ANSWER]
    oracle, calls = RulesOracle(), 0
    t0 = time.perf_counter()
    for k in range(n):
        p, a = prompts[k % len(prompts)], answers[k % len(answers)] + f"\n\nNote {k}."
        oracle.generate(OracleRequest("rubrics", "rubrics@v1", "x", (), Rubrics, context={"prompt": p}))
        oracle.generate(OracleRequest("rate", "rate@v1", "x", (), Ratings, context={"side": "chosen", "rubrics": ["clarity"]}))
        oracle.generate(OracleRequest("rate", "rate@v1", "x", (), Ratings, context={"side": "rejected", "rubrics": ["clarity"]}))
        for rubric in ("completeness", "factuality"):
            oracle.generate(OracleRequest("degrade", "degrade@v1", "x", (), Counterfactual, context={"answer": a, "rubric": rubric, "seed": k}))
        calls += 5
    return calls, time.perf_counter() - t0


def real(n: int) -> Tally:
    rows = [json.loads(line) for line in UF.read_text().splitlines()[:n]]
    tally = Tally()
    for i, row in enumerate(rows):
        prompt, answer = row["prompt"], row["chosen"]
        rubrics = tally.call("rubrics", "rubrics", {"prompt": prompt, "conversation": prompt}).parsed.rubrics
        tally.call("rate", "rate", {"side": "chosen", "rubrics": [r.name for r in rubrics]})
        donor = rows[(i + 7) % len(rows)]["chosen"]
        for r in rubrics:
            tally.call(f"degrade {r.name}", "degrade", {"answer": answer, "rubric": r.name, "donor": donor, "seed": i})
    return tally


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mixed", type=int, default=2000, help="sample pairs for the mixed workload (5 calls each)")
    ap.add_argument("--pairs", type=int, default=1000, help="real UltraFeedback pairs")
    args = ap.parse_args()

    mixed(20)  # warm up: compiled regexes, first imports
    calls, seconds = mixed(args.mixed)
    rate = calls / seconds
    print("| workload | task | calls | calls/s | mean us/call | statuses |")
    print("|---|---|---|---|---|---|")
    print(f"| test samples | mixed (rubrics, rate x2, degrade x2) | {calls:,} | {rate:,.0f} | {1e6 * seconds / calls:,.0f} | |")
    if UF.is_file():
        tally = real(args.pairs)
        for label in sorted(tally.calls, key=lambda x: (not x.startswith("rubrics"), not x.startswith("rate"), x)):
            c, s = tally.calls[label], tally.seconds[label]
            statuses = ", ".join(f"{k} {v}" for k, v in sorted(tally.status[label].items()))
            print(f"| UltraFeedback {args.pairs:,} pairs | {label} | {c:,} | {c / s:,.0f} | {1e6 * s / c:,.0f} | {statuses} |")
        total_c, total_s = sum(tally.calls.values()), sum(tally.seconds.values())
        print(f"| UltraFeedback {args.pairs:,} pairs | all | {total_c:,} | {total_c / total_s:,.0f} | {1e6 * total_s / total_c:,.0f} | |")
    else:
        print(f"(no {UF}: real-pair rows skipped)")
    if rate < FLOOR:
        print(f"FAIL: mixed workload at {rate:,.0f} calls/s, under the {FLOOR} calls/s floor")
        raise SystemExit(1)
    print(f"\nmixed workload {rate:,.0f} calls/s: above the {FLOOR} calls/s floor")


if __name__ == "__main__":
    main()
