"""Throughput and peak memory of the whole offline pipeline (`crome build --oracle rules`) from 1k to 300k source pairs.

Sources. Every pairwise set in ../shared/data is read with crome's own readers: UltraFeedback
(train and eval), HH-RLHF harmless and helpful, the LLaMA-Factory DPO demo, LLMBar (all eight
files), RM-Bench (four files): 15,880 distinct pairs. (XSTest is left out: it holds completions
to be paired, not pairs.) A source of N pairs takes them in that order, then again as seeded
variants until N is reached:

- copy 0 of a pair is the pair as it is;
- copy k >= 1 of base pair j replaces each word (whitespace-separated token) of its prompt and of
  both answers, with probability 0.2, by a word drawn from a fixed vocabulary (the 2,000 most
  frequent words of the base pairs), with `random.Random(f"{k}:{j}")`: the same file on every run.

At 0.2 a 5-word shingle survives with probability 0.8^5 = 0.33, so two copies of one pair have a
shingle Jaccard near 0.2, far under the near-duplicate threshold (0.85): dedup does not collapse
them, and their exact keys differ. The vocabulary is fixed, so the variants add no new words to
the IQN relatedness idf either. The sources are written as one TRL-conversational JSONL file each.

Every build runs in a fresh process (peak RSS is per process): wall time, pairs/s, peak RSS.
Then: the 100k source as 4 shards (`--shard i/4`, one process each) merged by `crome merge`
(time and RSS of the merge), and the 10k build with `--executor ray --shards 2` on a local Ray,
compared file by file with the unsharded 10k build.

    python benchmarks/bench_build.py --sizes 1000,10000,100000,300000 --merge 100000 --ray 10000
    python benchmarks/bench_build.py --table        # the markdown table of benchmarks/results/build.json

Results are added to benchmarks/results/build.json (one entry per measurement, replaced when run again).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SOURCES = [
    DATA / "ultrafeedback-binarized-sample" / "train_clean.jsonl",
    DATA / "ultrafeedback-binarized-sample" / "eval_clean.jsonl",
    DATA / "hh-rlhf-harmless-test" / "test.jsonl.gz",
    DATA / "hh-rlhf-helpful-rmgallery" / "anthropic_helpful_0521.jsonl",
    DATA / "llamafactory-dpo-demo" / "dpo_en_demo.json",
    *sorted((DATA / "llmbar").glob("*.json")),
    *sorted((DATA / "rm-bench").glob("*.json")),
]
RESULTS = ROOT / "benchmarks" / "results" / "build.json"
SWAP = 0.2  # the share of words a variant replaces
VOCAB = 2000
_TOKEN = re.compile(r"\S+")


def base_pairs() -> list[dict]:
    from crome.builder.sources import iter_source
    from crome.schemas import SourcePair

    out = []
    for src in SOURCES:
        for item in iter_source(str(src)):
            if isinstance(item, SourcePair):
                out.append({"prompt": [m.model_dump() for m in item.prompt], "chosen": item.chosen.content, "rejected": item.rejected.content})
    return out


def vary(text: str, rng: random.Random, vocab: list[str]) -> str:
    return _TOKEN.sub(lambda m: rng.choice(vocab) if rng.random() < SWAP else m.group(0), text)


def write_source(n: int, path: Path) -> Path:
    """N pairs: the base pairs, then seeded variants of them (see the module docstring)."""
    base = base_pairs()
    words = Counter(w for p in base for t in (p["chosen"], p["rejected"], *(m["content"] for m in p["prompt"])) for w in _TOKEN.findall(t))
    vocab = [w for w, _ in words.most_common(VOCAB)]
    with path.open("w") as f:
        for i in range(n):
            k, j = divmod(i, len(base))
            p = base[j]
            if k:
                rng = random.Random(f"{k}:{j}")
                p = {"prompt": [{**m, "content": vary(m["content"], rng, vocab)} for m in p["prompt"]],
                     "chosen": vary(p["chosen"], rng, vocab), "rejected": vary(p["rejected"], rng, vocab)}
            f.write(json.dumps({"prompt": p["prompt"], "chosen": [{"role": "assistant", "content": p["chosen"]}],
                                "rejected": [{"role": "assistant", "content": p["rejected"]}]}) + "\n")
    return path


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def child_build(source: str, out: str, shard: str | None) -> dict:
    from crome.builder.run.config import BuildConfig
    from crome.builder.run.pipeline import build

    t0 = time.perf_counter()
    shard_t = tuple(int(x) for x in shard.split("/")) if shard else None
    s = build(BuildConfig(source=source, out=out, shard=shard_t)).summary
    seconds = time.perf_counter() - t0
    return {"source_pairs": s["counts"]["source_pairs"], "rows": s["counts"]["rows"], "calls": s["oracle_calls"]["total"],
            "seconds": round(seconds, 1), "pairs_per_s": round(s["counts"]["source_pairs"] / seconds, 1), "peak_rss_mb": peak_rss_mb(),
            # CPU seconds of the process (every thread, DuckDB's included): what the build costs whatever else the machine runs.
            "cpu_s": round(time.process_time(), 1), "pairs_per_cpu_s": round(s["counts"]["source_pairs"] / time.process_time(), 1),
            "dedup": s["counts"]["rejections_by_stage"].get("dedup", {})}


def child_merge(shards: list[str], out: str) -> dict:
    from crome.builder.run.merge import merge

    t0 = time.perf_counter()
    s = merge(shards, out).summary
    return {"rows": s["counts"]["rows"], "seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb": peak_rss_mb(),
            "cpu_s": round(time.process_time(), 1)}


def child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(args)], capture_output=True, text=True)
    if out.returncode != 0:  # the child's own error, not only its exit status
        sys.stderr.write(out.stderr[-20000:])
        raise SystemExit(f"{args[0]} {args[2] if args[0] == 'build' else ''} failed (exit {out.returncode}); its error is above")
    return json.loads(out.stdout.splitlines()[-1])


def digest(run: Path) -> str:
    h = hashlib.sha256()
    for p in sorted((run / "data").glob("*.parquet")) + [run / "rejections.parquet"]:
        h.update(p.read_bytes())
    return h.hexdigest()


def machine() -> dict:
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": sys.version.split()[0]}


def record(entry: dict) -> None:
    RESULTS.parent.mkdir(exist_ok=True)
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    if not isinstance(old, list) or (old and "what" not in old[0]):
        old = []  # the format before the streaming build
    old = [e for e in old if (e["what"], e.get("size")) != (entry["what"], entry.get("size"))]
    RESULTS.write_text(json.dumps([*old, entry], indent=2) + "\n")
    print(json.dumps(entry), flush=True)


def table() -> None:
    entries = json.loads(RESULTS.read_text())
    print("| run | source pairs | rows | seconds | pairs/s | CPU s | pairs per CPU s | peak RSS MB | load avg (start / end) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for e in entries:
        r = e["result"]
        pairs = r.get("source_pairs", e.get("size", ""))
        rate = r.get("pairs_per_s", "")
        print(f"| {e['what']} | {pairs:,} | {r['rows']:,} | {r['seconds']} | {rate} | {r.get('cpu_s', '')} | {r.get('pairs_per_cpu_s', '')} | "
              f"{r.get('peak_rss_mb', '')} | "
              f"{e['before']['load_average'][0]} / {e['after']['load_average'][0]} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--sizes", default="1000,10000,100000,300000")
    ap.add_argument("--merge", type=int, default=100000, help="merge 4 shards of this size (0: skip)")
    ap.add_argument("--ray", type=int, default=10000, help="Ray executor, 2 shards, on this size (0: skip)")
    ap.add_argument("--work", default=None, help="where sources and runs go (default: a temporary folder)")
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    if args.child:
        kind, *rest = json.loads(args.child)
        print(json.dumps(child_build(*rest) if kind == "build" else child_merge(*rest)))
        return
    if args.table:
        table()
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="crome-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(x) for x in args.sizes.split(",") if x]

    def source(n: int) -> Path:
        path = work / f"pairs{n}.jsonl"
        return path if path.exists() else write_source(n, path)

    for n in sizes:
        before = machine()
        result = child(["build", str(source(n)), str(work / f"run{n}"), None])
        record({"what": "build", "size": n, "before": before, "after": machine(), "result": result})
    if args.merge:
        n = args.merge
        shards = [work / f"shard{n}-{i}" for i in range(4)]
        for i, d in enumerate(shards):
            if not (d / "summary.json").exists():
                before = machine()
                result = child(["build", str(source(n)), str(d), f"{i}/4"])
                record({"what": f"build, shard {i}/4", "size": n, "before": before, "after": machine(), "result": result})
        before = machine()
        result = child(["merge", [str(d) for d in shards], str(work / f"merged{n}")])
        same = (work / f"run{n}").exists() and digest(work / f"merged{n}") == digest(work / f"run{n}")
        record({"what": "merge of 4 shards", "size": n, "before": before, "after": machine(),
                "result": {**result, "source_pairs": n, "identical_to_unsharded": same}})
    if args.ray:
        n = args.ray
        before = machine()
        t0 = time.perf_counter()
        run = work / f"ray{n}"
        cmd = [sys.executable, "-m", "crome", "build", str(source(n)), "--out", str(run), "--executor", "ray", "--shards", "2", "-q"]
        subprocess.run(cmd, check=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        seconds = round(time.perf_counter() - t0, 1)
        if not (work / f"run{n}").exists():
            child(["build", str(source(n)), str(work / f"run{n}"), None])
        summary = json.loads((run / "summary.json").read_text())
        record({"what": "ray executor, 2 shards, local", "size": n, "before": before, "after": machine(),
                "result": {"source_pairs": n, "rows": summary["counts"]["rows"], "seconds": seconds,
                           "pairs_per_s": round(n / seconds, 1), "identical_to_unsharded": digest(run) == digest(work / f"run{n}")}})


if __name__ == "__main__":
    main()
