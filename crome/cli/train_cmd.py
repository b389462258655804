"""`crome train`, `crome eval`, `crome filter`: reward models on crome data (the recipe is in crome/train/RECIPE.md)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

import typer

from crome.cli.errors import fail, os_error

log = logging.getLogger(__name__)

_EXPECTED = (ValueError, FileNotFoundError, FileExistsError, ImportError)


def _fail(e: Exception) -> None:
    log.debug("failed", exc_info=e)
    fail(os_error(e) if isinstance(e, OSError) and e.strerror else e)


def _config_from_cli(base: dict[str, Any], extra: list[str]) -> Any:
    """CromeConfig from our options plus any TrainingArguments flags (`--deepspeed ds.json`, `--fsdp ...`)."""
    from transformers import HfArgumentParser

    from crome.train.config import CromeConfig

    argv: list[str] = []
    for key, value in base.items():
        if value is None:
            continue
        if isinstance(value, bool):
            argv += [f"--{key}", str(value)]
        elif isinstance(value, list):
            argv += [f"--{key}", *map(str, value)]
        else:
            argv += [f"--{key}", str(value)]
    # Extra flags come last so they override ours.
    (config,) = HfArgumentParser(CromeConfig).parse_args_into_dataclasses(args=argv + list(extra))
    return config


def _print_table(title: str, rows: list[tuple[str, ...]], headers: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # Subset names, model paths and transform names are data: never rich markup.
    table = Table(title=escape(title))
    for h in headers:
        table.add_column(h)
    for r in rows:
        table.add_row(*(escape(c) for c in r))
    Console(stderr=True).print(table)


def _fmt(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, float) else ("" if x is None else str(x))


def _print_robustness(rob: dict[str, Any]) -> None:
    pct = lambda x: "" if x is None else f"{100 * x:.1f}"  # noqa: E731
    rows = [
        (name, f"{t['covered']} ({pct(t['coverage'])}%)", pct(t["clean_accuracy"]), pct(t["accuracy"]), pct(t["drop"]), pct(t["flip_rate"]))
        for name, t in rob["transforms"].items()
    ]
    s = rob["summary"]
    rows.append(("MEAN", f"{s['transforms_measured']} measured", "", pct(s["mean_accuracy"]), pct(s["mean_drop"]), ""))
    title = f"robustness: {rob['strict_pairs']} strict pairs, clean accuracy {pct(rob['clean']['accuracy'])}% (both answers changed)"
    _print_table(title, rows, ("transform", "covered", "clean acc %", "perturbed acc %", "drop", "flips %"))
    side = rob.get("one_sided_side")
    if side:
        rows = [
            (name, str(e[side]["covered"]), pct(e[side]["flip_rate"]), str(e[side]["to_wrong"]), str(e[side]["to_right"]),
             pct(e[side]["clean_accuracy"]), pct(e[side]["accuracy"]))
            for name, e in rob["one_sided"].items()
        ]  # fmt: skip
        headers = ("transform", "covered", "flips %", "to wrong", "to right", "clean acc %", "acc %")
        _print_table(f"one-sided: only the {side} answer changed", rows, headers)


def _print_pairpm(rep: dict[str, Any]) -> None:
    rows = [
        (name, str(s["n"]), _fmt(s.get("accuracy")), _fmt(s.get("position_consistency")), _fmt(s.get("position_bias")), _fmt(s.get("tie_abs_p")))
        for name, s in [*rep["subsets"].items(), ("ALL", rep["overall"])]
    ]
    _print_table("PairPM: P averaged over both orders", rows, ("subset", "pairs", "accuracy", "position consistency", "position bias", "tie |P-0.5|"))


def _best_of_n(model: str, data: list[Path], spec: str, draws: int, seed: int, limit: Optional[int], batch_size: int,
               max_length: int, dtype: str, device: Optional[str], out: Optional[Path]) -> None:  # fmt: skip
    from crome.train.bestofn import evaluate_best_of_n

    try:
        try:
            ns = [int(x) for x in spec.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"--best-of-n takes a comma list of integers, got {spec!r}") from None
        report = evaluate_best_of_n(
            model, data, ns, draws=draws, seed=seed, limit=limit, batch_size=batch_size, max_length=max_length, dtype=dtype, device=device
        )
    except _EXPECTED as e:
        _fail(e)
    bon = report["best_of_n"]
    rows = [
        (n, str(r["prompts"]), str(r["draws"]), _fmt(r.get("pick")), _fmt(r.get("best")), _fmt(r.get("random")), _fmt(r.get("hit_rate")),
         " ".join(f"{k} {v:.2f}" for k, v in r.get("pick_styles", {}).items()))
        for n, r in bon["n"].items()
    ]  # fmt: skip
    _print_table(f"Best-of-N {model} ({report['arch']}: {bon['selection']})", rows,
                 ("N", "prompts", "draws", "pick gold", "best gold", "random gold", "hit rate", "pick styles"))  # fmt: skip
    _write_report(report, out)


def _write_report(report: dict, out: Optional[Path]) -> None:
    """The report as JSON: to `out` (its folder created) or to stdout."""
    text = json.dumps(report, indent=2, sort_keys=True) + "\n"
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    else:
        typer.echo(text, nl=False)


def register(app: typer.Typer) -> None:
    @app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def train_cmd(
        ctx: typer.Context,
        data: str = typer.Argument(..., help="Run dir, published folder (DIR/data/*.parquet), Parquet file or Hub dataset id."),
        model: str = typer.Option(..., "--model", "-m", help="Hugging Face path or id (AutoModelForSequenceClassification, 1 label)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output dir: model, tokenizer, crome_train.json."),
        kinds: Optional[str] = typer.Option(
            None, help="Comma list of row kinds to train on: original (augmentation original, source ties included: the baseline), causal, neutral (augmented ties)."),
        arch: str = typer.Option("bt", help="bt: scalar reward per answer; pairpm: reads both answers, predicts P(A > B), both orders."),
        pairpm_head: str = typer.Option("auto", help="PairPM head: lm (logit A - logit B at the answer slot), classifier, auto."),
        judge_template: str = typer.Option("pairpm_judge/v1", help="Versioned judging instruction of an lm-head PairPM."),
        tie_weight: float = typer.Option(1.0, help="lambda, weight of the tie loss on neutral rows."),
        loss_normalization: str = typer.Option(
            "pairs", help="pairs: mean over all pairs, ties weighted by lambda; per_kind: mean BT over strict pairs + lambda x mean tie loss."),
        center_rewards: Optional[float] = typer.Option(None, help="Reward-centering coefficient (e.g. 0.01)."),
        max_length: int = typer.Option(1024, help="Max tokens per side; prompt truncated first, truncated pairs reported."),
        epochs: float = typer.Option(1.0, help="Training epochs."),
        max_steps: int = typer.Option(-1, help="Stop after N optimizer steps (overrides --epochs)."),
        batch_size: int = typer.Option(8, help="Pairs per device per step (2x sequences per forward pass)."),
        grad_accum: int = typer.Option(1, help="Gradient accumulation steps."),
        lr: Optional[float] = typer.Option(None, help="Learning rate [default: 1e-5, or 1e-4 with --lora]."),
        seed: int = typer.Option(0, help="Seed (data order, fresh head init, holdout split)."),
        eval_fraction: float = typer.Option(0.0, help="Hold out this share of source pairs for eval when DATA has no test split."),
        lora: bool = typer.Option(False, "--lora", help="Train LoRA adapters (peft) plus the score head; saves the merged model."),
        bf16: bool = typer.Option(False, "--bf16", help="bf16 mixed precision."),
        logging_steps: int = typer.Option(10, help="Log metrics every N steps."),
        max_train_rows: Optional[int] = typer.Option(None, help="Train on the first N rows only (smoke tests)."),
    ) -> None:
        """Train a reward model with the Crome loss. Any TrainingArguments flag may follow (e.g. --deepspeed ds.json)."""
        try:
            config = _config_from_cli(
                {
                    "output_dir": str(out), "model_name_or_path": model, "dataset": data,
                    "kinds": kinds.split(",") if kinds else None, "tie_weight": tie_weight, "arch": arch,
                    "pairpm_head": pairpm_head, "judge_template": judge_template,
                    "loss_normalization": loss_normalization,
                    "center_rewards": center_rewards, "max_length": max_length, "num_train_epochs": epochs,
                    "max_steps": max_steps, "per_device_train_batch_size": batch_size,
                    "per_device_eval_batch_size": batch_size, "gradient_accumulation_steps": grad_accum,
                    "learning_rate": lr if lr is not None else (1e-4 if lora else 1e-5), "seed": seed,
                    "eval_fraction": eval_fraction, "lora": lora, "bf16": bf16, "logging_steps": logging_steps,
                    "max_train_rows": max_train_rows,
                },
                ctx.args,
            )
            from crome.train.trainer import CONFIG_FILE

            if config.arch == "pairpm":
                from crome.train.pairpm.trainer import train
            else:
                from crome.train.trainer import train
            path = train(config)
        except _EXPECTED as e:
            _fail(e)
        record = json.loads((path / CONFIG_FILE).read_text())
        rows = [("train rows", json.dumps(record["data"]["train_rows_by_kind"])), ("eval rows", str(record["data"]["eval_rows"]))]
        for split, rep in record["truncation"].items():
            rows.append((f"{split} truncated pairs", f"{rep['truncated_pairs']} of {rep['pairs']} (max_length {rep['max_length']})"))
        rows.append(("train loss", _fmt(record["train_metrics"].get("train_loss"))))
        rows += [(k, _fmt(v)) for k, v in sorted(record["eval_metrics"].items()) if not k.endswith(("runtime", "per_second"))]
        _print_table(f"crome train -> {path}", rows, ("", "value"))

    @app.command("eval")
    def eval_cmd(
        model: str = typer.Argument(..., help="Reward model path or id."),
        data: list[Path] = typer.Option(..., "--data", "-d", help="Test file or directory (repeatable): RewardBench format, LLMBar, RM-Bench, crome rows."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the JSON report here (default: stdout)."),
        batch_size: int = typer.Option(16, help="Sequences per forward pass."),
        max_length: int = typer.Option(1024, help="Max tokens per side (prompt truncated first)."),
        limit: Optional[int] = typer.Option(None, help="First N pairs of each file (RM-Bench: of each file's prompts)."),
        dtype: str = typer.Option("auto", help="Weights dtype: auto, float32, bfloat16, float16."),
        device: Optional[str] = typer.Option(None, help="Device (default: cuda when available, else cpu)."),
        perturb: Optional[str] = typer.Option(
            None, help="Robustness: 'all' or a comma list of transformations applied to both answers (see crome.train.robustness)."
        ),
        one_sided: Optional[str] = typer.Option(
            None, help="Also change only this answer (chosen or rejected) and report how often the ranking flips."
        ),
        perturb_seed: int = typer.Option(0, help="Seed of the transformations' random choices."),
        best_of_n: Optional[str] = typer.Option(
            None, "--best-of-n", help="Best-of-N instead of pair accuracy: comma list of N (e.g. 2,4,6); --data holds candidate sets."
        ),
        bon_draws: int = typer.Option(8, help="Best-of-N: seeded draws of N candidates per prompt."),
        bon_seed: int = typer.Option(0, help="Best-of-N: seed of the draws."),
    ) -> None:
        """Pairwise accuracy per subset, RewardBench sections, RM-Bench difficulty and tie |d|, as a JSON report.

        With --perturb: accuracy under each meaning-preserving transformation next to clean accuracy on
        the pairs it covers (the drop); with --one-sided too: how often changing one answer flips the ranking.
        """
        if best_of_n is not None:
            _best_of_n(model, data, best_of_n, bon_draws, bon_seed, limit, batch_size, max_length, dtype, device, out)
            return
        from crome.train.evaluate import evaluate_model

        try:
            report = evaluate_model(
                model, data, batch_size=batch_size, max_length=max_length, limit=limit, dtype=dtype, device=device,
                perturb=perturb, one_sided=one_sided, perturb_seed=perturb_seed,
            )
        except _EXPECTED as e:
            _fail(e)
        rows = [
            (name, str(s["n"]), _fmt(s.get("accuracy")), _fmt(s.get("tie_abs_margin")), str(s["truncated"]))
            for name, s in report["subsets"].items()
        ]
        o = report["overall"]
        rows.append(("ALL", str(o["n"]), _fmt(o.get("accuracy")), _fmt(o.get("tie_abs_margin")), str(o["truncated"])))
        rows += [(f"[RewardBench] {k}", "", _fmt(v["score"]), "", "") for k, v in report["rewardbench"].items()]
        rows += [
            (f"[RM-Bench] {k}", str(v["n"]), f"easy {_fmt(v['easy'])} normal {_fmt(v['normal'])} hard {_fmt(v['hard'])}", "", "")
            for k, v in report["rm_bench"].items()
        ]
        _print_table(f"crome eval {model}", rows, ("subset", "pairs", "accuracy", "tie |d|", "truncated"))
        if "pairpm" in report:
            _print_pairpm(report["pairpm"])
        if "robustness" in report:
            _print_robustness(report["robustness"])
        _write_report(report, out)

    @app.command("filter")
    def filter_cmd(
        run_dir: Path = typer.Argument(..., help="Run dir written by `crome build` (or a published folder: its test split is copied unfiltered)."),
        rm: str = typer.Option(..., "--rm", help="Baseline reward model trained on the original rows: BT, or a PairPM (its margin is logit P, both orders)."),
        out: Path = typer.Option(..., "--out", "-o", help="New run dir for the filtered rows."),
        keep_margin: Optional[float] = typer.Option(
            None, "--keep-margin", help="tau, baseline reward units: keep causal pairs with margin < tau (misranked ones always)."),
        keep_fraction: Optional[float] = typer.Option(
            None, "--keep-fraction", help="Scale-free: keep this share of causal pairs, those with the lowest margins (misranked ones always)."),
        tie_margin: Optional[float] = typer.Option(
            None, "--tie-margin", help="Tie tau, baseline reward units: keep IQN ties with |margin| > tie tau."),
        tie_fraction: Optional[float] = typer.Option(
            None, "--tie-fraction", help="Scale-free: keep this share of IQN ties, those with the largest |margin|."),
        batch_size: int = typer.Option(16, help="Sequences per forward pass."),
        max_length: int = typer.Option(1024, help="Max tokens per side (prompt truncated first)."),
        dtype: str = typer.Option("auto", help="Weights dtype: auto, float32, bfloat16, float16."),
        device: Optional[str] = typer.Option(None, help="Device (default: cuda when available, else cpu)."),
    ) -> None:
        """Keep the augmented pairs a baseline RM misranks or is unsure about; the rest become filter rejections.

        Originals (source ties included) and a test split are kept unscored. crome/train/RECIPE.md explains the thresholds.
        """
        from crome.train.filter import filter_run

        try:
            summary = filter_run(
                run_dir, out, baseline=rm, keep_margin=keep_margin, keep_fraction=keep_fraction, tie_margin=tie_margin,
                tie_fraction=tie_fraction, batch_size=batch_size, max_length=max_length, dtype=dtype, device=device,
            )
        except _EXPECTED as e:
            _fail(e)
        f = summary["filter"]
        rows = []
        for kind in ("causal", "neutral"):
            t = f["thresholds"][kind]
            given = ", ".join(f"{k} {v:g}" for k, v in (t["given"] or {}).items()) or "-"
            m = (f["margins"].get(kind) or {})
            spread = f"p10 {m['p10']:.3f} / p50 {m['p50']:.3f} / p90 {m['p90']:.3f}" if m else ""
            rows.append((kind, given, _fmt(t["tau"]), spread, str(t["kept"]), str(t["dropped"])))
        for name, n in sorted(f["unscored"].items()):
            rows.append((name, "not scored", "", "", str(n), "0"))
        _print_table(f"crome filter -> {out}", rows, ("rows", "threshold", "tau", "margins", "kept", "dropped"))
