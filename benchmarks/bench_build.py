"""Throughput and peak memory of the whole offline pipeline (`crome build --oracle rules`).

Inputs are real pairs from ../shared/data: the 1,000-pair UltraFeedback sample, and 10,000
pairs drawn from all the pairwise sets there (UltraFeedback, HH-RLHF harmless and helpful, the
DPO demo and RM-Bench), written as one TRL-conversational JSONL file. Each size runs in a fresh
process (peak RSS is per process); a second run of the same command measures the replay.

    python benchmarks/bench_build.py            # prints a markdown table, writes benchmarks/results/build.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SOURCES = [
    DATA / "ultrafeedback-binarized-sample" / "train_clean.jsonl",
    DATA / "ultrafeedback-binarized-sample" / "eval_clean.jsonl",
    DATA / "hh-rlhf-harmless-test" / "test.jsonl.gz",
    DATA / "hh-rlhf-helpful-rmgallery" / "anthropic_helpful_0521.jsonl",
    DATA / "llamafactory-dpo-demo" / "dpo_en_demo.json",
    *sorted((DATA / "rm-bench").glob("*.json")),
]


def mixed_source(n: int, path: Path) -> Path:
    from crome.builder.sources import iter_source
    from crome.schemas import SourcePair

    written = 0
    with path.open("w") as f:
        for src in SOURCES:
            for item in iter_source(str(src)):
                if not isinstance(item, SourcePair):
                    continue
                f.write(json.dumps({
                    "prompt": [m.model_dump() for m in item.prompt],
                    "chosen": [item.chosen.model_dump()],
                    "rejected": [item.rejected.model_dump()],
                }) + "\n")
                written += 1
                if written == n:
                    return path
    raise SystemExit(f"only {written} pairs available")


def one(source: str, out: str) -> dict:
    """Run one build in this process and report time and peak memory."""
    import pyarrow.parquet as pq

    from crome.builder.run.config import BuildConfig
    from crome.builder.run.pipeline import build

    t0 = time.perf_counter()
    result = build(BuildConfig(source=source, out=out))
    seconds = time.perf_counter() - t0
    rows_bytes = sum(pq.read_table(p).nbytes for p in Path(out, "data").glob("*.parquet"))
    s = result.summary
    return {
        "source_pairs": s["counts"]["source_pairs"],
        "rows": s["counts"]["rows"],
        "calls": s["oracle_calls"]["total"],
        "new_calls": s["oracle_calls"]["new"],
        "seconds": round(seconds, 2),
        "pairs_per_s": round(s["counts"]["source_pairs"] / seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rows_arrow_mb": round(rows_bytes / 2**20, 1),
    }


def run_child(source: Path, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--one", str(source), "--out", str(out)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one")
    ap.add_argument("--out")
    ap.add_argument("--sizes", default="1000,10000")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.out)))
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(x) for x in args.sizes.split(",")]:
            src = SOURCES[0] if n == 1000 else mixed_source(n, Path(tmp) / f"mixed{n}.jsonl")
            out = Path(tmp) / f"run{n}"
            first = run_child(src, out)
            replay = run_child(src, out)
            results.append({"size": n, "source": src.name, "first": first, "replay": replay})
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "build.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| source pairs | run | oracle calls (new) | rows | seconds | pairs/s | peak RSS MB | rows in Arrow MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        for label in ("first", "replay"):
            x = r[label]
            print(f"| {x['source_pairs']:,} | {label} | {x['calls']:,} ({x['new_calls']:,}) | {x['rows']:,} | {x['seconds']} | {x['pairs_per_s']} | {x['peak_rss_mb']} | {x['rows_arrow_mb']} |")


if __name__ == "__main__":
    main()
