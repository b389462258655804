"""Bookkeeping ceiling: oracle calls per second a whole `crome build` records with everything stored.

A real OpenAI client (and a real google-genai client) against the fake server in its own thread
answering at zero latency: every call goes through the cache lookup, the limiter, the SDK, pydantic
validation and the DuckDB write, and the pipeline's stages around it. The figure is the rate of new
calls over the build's wall time (source loading and export included), and over the process's CPU
time (server thread included): on a shared machine the wall rate falls with the load, the CPU rate
much less, so compare two versions by `calls_per_cpu_s`, run one after the other.

    python benchmarks/bench_bookkeeping.py [--pairs 300] [--concurrency 64] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "builder" / "run")]  # the fake server, write_pairs, the responder

from fake_llm_server import FakeLLMServer  # noqa: E402
from test_build import write_pairs  # noqa: E402
from test_build_llm import responder  # noqa: E402

from crome.builder.run.config import BuildConfig  # noqa: E402
from crome.builder.oracles import get_oracle  # noqa: E402
from crome.builder.run.pipeline import build  # noqa: E402


def run(provider: str, pairs: int, concurrency: int) -> dict:
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
    os.environ.setdefault("GEMINI_API_KEY", "bench")
    with FakeLLMServer(responder=responder) as server, tempfile.TemporaryDirectory() as tmp:
        src = write_pairs(Path(tmp) / "pairs.jsonl", n=pairs)
        url = server.openai_url if provider == "openai" else server.url
        model = "gpt-4o-mini" if provider == "openai" else "gemini-2.0-flash"
        oracle = get_oracle(f"{provider}:{model}", base_url=url, concurrency=concurrency)
        t0, c0 = time.perf_counter(), time.process_time()
        s = build(BuildConfig(source=str(src), out=str(Path(tmp) / "run"), oracle=f"{provider}:{model}", concurrency=concurrency), oracle=oracle).summary
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        t1 = time.perf_counter()
        s2 = build(BuildConfig(source=str(src), out=str(Path(tmp) / "run"), oracle=f"{provider}:{model}"), oracle=oracle).summary
        replay = time.perf_counter() - t1
    return {
        "provider": provider, "pairs": pairs, "concurrency": concurrency, "new_calls": s["oracle_calls"]["new"],
        "seconds": round(seconds, 2), "calls_per_s": round(s["oracle_calls"]["new"] / seconds, 1),
        "cpu_seconds": round(cpu, 2), "calls_per_cpu_s": round(s["oracle_calls"]["new"] / cpu, 1),
        "load_average": round(os.getloadavg()[0], 1),
        "replayed_calls": s2["oracle_calls"]["cached"], "replay_seconds": round(replay, 2),
        "replayed_calls_per_s": round(s2["oracle_calls"]["cached"] / replay, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--write", action="store_true", help="write benchmarks/results/bookkeeping.json")
    args = ap.parse_args()
    results = [run(p, args.pairs, args.concurrency) for p in ("openai", "gemini")]
    if args.write:
        (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
        (ROOT / "benchmarks" / "results" / "bookkeeping.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| oracle | pairs | C | new calls | seconds | calls/s recorded | CPU s | calls per CPU s | replayed calls/s | load |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['provider']} | {r['pairs']} | {r['concurrency']} | {r['new_calls']:,} | {r['seconds']} | {r['calls_per_s']} | "
              f"{r['cpu_seconds']} | {r['calls_per_cpu_s']} | {r['replayed_calls_per_s']} | {r['load_average']} |")


if __name__ == "__main__":
    main()
