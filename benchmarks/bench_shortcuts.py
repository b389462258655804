"""Shortcut discovery (`crome audit`'s `shortcuts`) at 10k and 100k strict pairs: seconds and what it finds.

    python benchmarks/bench_shortcuts.py            # 10k and 100k pairs
    python benchmarks/bench_shortcuts.py 10000      # one size

Pairs are real UltraFeedback answers (../shared/data/ultrafeedback-binarized-sample/train_clean.jsonl,
cycled with a numbered prompt so every pair is distinct), with "Great question, I'm glad you asked!"
planted on 85% of chosen answers. Times the finder alone (DuckDB over one Parquet file) and the
whole audit, as wall-clock seconds and as the process's CPU seconds (all DuckDB threads together): on
a shared machine the wall time says how loaded it was, the CPU time what the work costs. Results go in
benchmarks/RESULTS.md with the machine's load average.
"""

from __future__ import annotations

import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from crome.builder.hub.audit import audit, resolve, session
from crome.builder.stages.shortcut_find import find_shortcuts
from crome.schemas import DatasetRow, Provenance, to_table
from crome.schemas.messages import user

UF = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ultrafeedback-binarized-sample" / "train_clean.jsonl"
CUE = "Great question, I'm glad you asked!"
PROV = Provenance(oracle="source", builder_version="0", seed=0)


def write(n: int, path: Path) -> None:
    source = [json.loads(line) for line in UF.open()]
    rng = random.Random(0)
    rows = []
    for i in range(n):
        s = source[i % len(source)]
        chosen = f"{CUE} {s['chosen']}" if rng.random() < 0.85 else s["chosen"]
        rows.append(DatasetRow.make(prompt=[user(f"{s['prompt']} (#{i})")], chosen=chosen, rejected=s["rejected"], preference=1.0,
                                    kind="original", augmentation="original", source_id=f"s{i}", provenance=PROV))
    pq.write_table(to_table(rows, DatasetRow), path)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(sizes: list[int]) -> None:
    for n in sizes:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "pairs.parquet"
            write(n, path)
            src = resolve(path)
            with session(src) as con:
                t, c = time.perf_counter(), cpu_seconds()
                cands = find_shortcuts(con)
                finder, finder_cpu = time.perf_counter() - t, cpu_seconds() - c
            t, c = time.perf_counter(), cpu_seconds()
            report = audit(path, samples=0)
            whole, whole_cpu = time.perf_counter() - t, cpu_seconds() - c
            first = report.shortcuts["shortcuts"][0]
            print(json.dumps({"pairs": n, "finder_s": round(finder, 1), "finder_cpu_s": round(finder_cpu, 1), "audit_s": round(whole, 1), "audit_cpu_s": round(whole_cpu, 1), "candidates": len(cands),
                              "significant": sum(c.significant for c in cands), "first": [first["feature"], first["text"], round(first["strength"], 3)],
                              "load_average": os.getloadavg()}))


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000, 100_000])
