"""`crome train`, `crome eval`, `crome filter`: reward models on crome data (the recipe is in crome/train/RECIPE.md)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Optional

import typer

from crome.cli.errors import VERBOSE, fail, first_line, os_error

log = logging.getLogger(__name__)

_EXPECTED = (ValueError, FileNotFoundError, FileExistsError, ImportError)
# What makes a folder a model transformers can load: a model config, or a (peft) adapter's.
_MODEL_FILES = ("config.json", "adapter_config.json")


def _fail(e: Exception) -> None:
    log.debug("failed", exc_info=e)
    fail(os_error(e) if isinstance(e, OSError) else e)


def _quiet_hub_logs() -> None:
    """Without -v, huggingface_hub logs errors only: not a warning per retry (ten of them when the Hub is down) before
    the one error line that says what failed. transformers keeps its warnings (an eval of a model whose score head
    was never trained says so); it logs nothing before a model error, which `_model_arg` reports first. A level the
    user set (HF_HUB_VERBOSITY) is kept; with -v the Hub logs its warnings, as it does by default.
    """
    if "HF_HUB_VERBOSITY" not in os.environ:
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity(logging.WARNING if VERBOSE["on"] else logging.ERROR)


def _model_arg(name: str, value: str) -> str:
    """The model a command was given, checked before any work: a local model folder, or a Hub id that resolves.

    A value that looks like a path (it exists, starts with `.`, `/` or `~`, or has more than one `/`)
    must be a folder holding a model config. Anything else is a Hub model id: its config is fetched now
    (from the cache when HF_HUB_OFFLINE is set), so a wrong id or a missing network fails here, in one
    line naming the model, and not after the data was read. Returns the value, `~` expanded.
    """
    expected = f"{name} {value}: expected a local model folder (with config.json) or a Hub model id; found"
    path = Path(value).expanduser()
    if path.exists() or value.startswith((".", "/", "~")) or value.count("/") > 1:
        if not path.exists():
            fail(f"{expected} no such folder")
        if not path.is_dir():
            fail(f"{expected} a file, not a folder")
        if not any((path / f).is_file() for f in _MODEL_FILES):
            fail(f"{expected} a folder without config.json")
        return str(path) if value.startswith("~") else value
    _hub_model(name, value, f"{expected} no such folder, and")
    return value


def _hub_model(name: str, value: str, expected: str) -> None:
    """Fetch a Hub model's config (or a peft adapter's) into the cache; fail in one line if that cannot be done.

    Exit 2 when the id is wrong (invalid, no such repo, no config, not cached while HF_HUB_OFFLINE is set);
    3 when the Hub refuses (a gated model) or cannot be reached, as `crome publish` exits.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.utils import (EntryNotFoundError, GatedRepoError, HFValidationError, LocalEntryNotFoundError,
                                       RepositoryNotFoundError)

    from crome.cli.publish_cmd import HUB_ERROR, is_hub_error

    for filename in _MODEL_FILES:
        try:
            hf_hub_download(value, filename)
            return
        except Exception as e:  # noqa: BLE001 - the Hub's client raises many types; only its own errors are expected here
            if not is_hub_error(e):
                raise
            log.debug("cannot fetch %s of %s", filename, value, exc_info=e)
            if isinstance(e, HFValidationError):
                fail(f"{expected} it is not a Hub id either: {first_line(e)}")
            if isinstance(e, LocalEntryNotFoundError):  # not cached, and the Hub was not asked (offline) or did not answer
                if constants.HF_HUB_OFFLINE:
                    fail(f"{expected} no such model in the local Hub cache (HF_HUB_OFFLINE is set)")
                fail(f"{name} {value}: not in the local Hub cache, and the Hub could not be reached: {first_line(e)}", code=HUB_ERROR)
            if isinstance(e, GatedRepoError):
                fail(f"{name} {value}: the Hub refused: {first_line(e)}", code=HUB_ERROR)
            if isinstance(e, RepositoryNotFoundError):
                fail(f"{expected} no such model on the Hub (a private one needs `hf auth login` or HF_TOKEN)")
            if not isinstance(e, EntryNotFoundError):  # no config.json: a peft adapter's, then?
                fail(f"{name} {value}: the Hub refused or could not be reached: {first_line(e)}", code=HUB_ERROR)
    fail(f"{expected} a Hub repo without config.json")


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


def _best_of_n_sizes(spec: str) -> list[int]:
    try:
        return [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        fail(f"--best-of-n takes a comma list of integers, got {spec!r}")


def _best_of_n(model: str, data: list[Path], ns: list[int], draws: int, seed: int, limit: Optional[int], batch_size: int,
               max_length: int, dtype: str, device: Optional[str], out: Optional[Path]) -> None:  # fmt: skip
    from crome.train.bestofn import evaluate_best_of_n

    try:
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
        _quiet_hub_logs()
        model = _model_arg("--model", model)
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
        sizes = _best_of_n_sizes(best_of_n) if best_of_n is not None else None  # options first: they cost nothing
        _quiet_hub_logs()
        model = _model_arg("MODEL", model)
        if sizes is not None:
            _best_of_n(model, data, sizes, bon_draws, bon_seed, limit, batch_size, max_length, dtype, device, out)
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
        _quiet_hub_logs()
        rm = _model_arg("--rm", rm)
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
