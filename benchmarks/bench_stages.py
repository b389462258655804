"""Speed of the two pure per-item checks every build runs on every rewrite: edit statistics and dedup.

These were wall-clock floors in the test suite; timings belong here, where a loaded CI machine
cannot fail them and a quiet one can measure them.

    python benchmarks/bench_stages.py       # prints the figures
"""

from __future__ import annotations

import random
import statistics
import time

from crome.builder.stages.checks import edit_stats
from crome.builder.stages.dedup import Deduper

WORDS = ("the model answer data paris capital france river mountain code python list value result "
         "energy light water history science music number table graph cloud").split()


def paragraph(seed: int, n: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n)) + "."


def bench_edit_stats(repeats: int = 20) -> float:
    """Median seconds of edit_stats on a 2,000-word answer with 150 words changed."""
    words = [f"word{i % 997}" for i in range(2000)]
    a = " ".join(words)
    b = " ".join(words[:700] + ["changed"] * 50 + words[750:1500] + words[1600:])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        edit_stats(a, b)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_dedup(n: int = 3000, words: int = 400) -> float:
    """Items per second through Deduper.check (exact + MinHash LSH near-duplicate) for distinct texts."""
    texts = [paragraph(s, words) for s in range(n)]
    d = Deduper()
    t0 = time.perf_counter()
    dups = sum(d.check(str(k), t).duplicate for k, t in enumerate(texts))
    assert dups == 0
    return n / (time.perf_counter() - t0)


def main() -> None:
    print(f"edit_stats, 2,000 words: median {1000 * bench_edit_stats():.1f} ms (was a test floor of 50 ms)")
    print(f"dedup, 400-word texts: {bench_dedup():,.0f} items/s (was a test floor of 300 items/s)")


if __name__ == "__main__":
    main()
