"""`crome build`: turn a preference dataset into a Crome counterfactual dataset in RUN_DIR.

Also `crome status RUN_DIR` (where a run stands: counts, calls, spend, batch jobs) and `crome merge`
(shards built with --shard i/N combined into the unsharded result).

Exit codes of `crome build`: 0 complete, 1 internal errors (every pair, or more than
--max-failures, raised: a bug; the first traceback is printed) or a run store that cannot write,
2 bad input, 3 oracle error, 4 stopped (budget or failures; re-run to resume), 5 batch jobs in
flight (re-run later to collect them), 130 interrupted (Ctrl-C or SIGTERM: the calls in flight
were recorded; re-run to resume).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from crome.cli.errors import fail, os_error, warn

err = Console(stderr=True)


def parse_mapping(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise typer.BadParameter(f"expected FIELD=COLUMN pairs separated by commas, got {part!r}", param_hint="--map")
        out[key.strip()] = value.strip()
    return out


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise typer.BadParameter(f"expected i/N such as 0/4, got {text!r}", param_hint="--shard") from None
    if not (n >= 1 and 0 <= i < n):
        raise typer.BadParameter(f"shard {text!r}: need 0 <= i < N", param_hint="--shard")
    return i, n


def print_summary(summary: dict, console: Console) -> None:
    c = summary["counts"]
    t = Table(title=escape(f"crome build: {summary['status']}"), show_header=False)
    add = lambda label, value: t.add_row(label, escape(value))  # noqa: E731 - values hold data (reasons, rubric names)
    add("source rows", str(c["source_rows"]))
    add("quarantined", f"{c['quarantined']} {c['quarantine_reasons'] or ''}")
    add("rows", f"{c['rows']} {c['rows_by_kind']}")
    add("by augmentation", str(c["rows_by_augmentation"]))
    add("by attribute", str(c["rows_by_attribute"]))
    add("rejections", f"{c['rejections']}")
    for stage, reasons in c["rejections_by_stage"].items():
        add(f"  {stage}", str(reasons))
    if c.get("internal_errors"):
        add("internal errors", f"{c['internal_errors']} pair(s); first: {summary.get('first_internal_error')}")
    calls = summary["oracle_calls"]
    shared = f", shared in flight {calls['shared']}" if calls.get("shared") else ""
    sent = f"; {calls['requests']} requests sent" if calls.get("requests") else ""
    add("oracle calls", f"{calls['total']} (cached {calls['cached']}{shared}, new {calls['new']}, failed {calls['failed']}{sent})")
    tok = summary["tokens"]
    add("tokens billed", f"in {tok['input']:,} / out {tok['output']:,}")
    cost = summary.get("cost_usd")
    add("billed this run", "unknown model price" if cost is None else f"${cost:.4f}")
    money = summary.get("spend")
    if money and money.get("requests"):
        add("all runs", _spend_line(money))
    batch = summary.get("batch")
    if batch:
        live, done = batch["in_flight"], batch["ingested"]
        cost = "unknown model price" if batch["cost_usd"] is None else f"${batch['cost_usd']:.4f}"
        add("batch jobs", f"{live['jobs']} in flight ({live['items']} requests, est. ${live['estimated_cost_usd']:.4f}), "
            f"{done['jobs']} collected ({done['ok']} ok, {done['failed']} failed); batch cost so far {cost}")
        if batch.get("submitted_now"):
            add("  submitted now", f"{len(batch['submitted_now'])} job(s), {batch['queued']} requests")
    acc = summary["accounting"]
    add("accounting", f"{acc['with_rows']} pairs with rows + {acc['only_rejections']} only rejected + {acc['pending']} pending = {acc['source_pairs']} source pairs (+ {acc['quarantined']} quarantined); balanced={acc['balanced']}")
    add("time", f"{summary.get('seconds', 0)} s")
    console.print(t)


def _spend_line(m: dict[str, Any]) -> str:
    """Billed (every request sent) and what the kept answers cost, from `crome.builder.run.status.spend`."""
    kept = m["kept"]
    if m["cost_usd"] is None:
        money = "unknown model price"
    else:
        money = (f"billed ${m['cost_usd']:.4f} (batch ${m['batch_cost_usd']:.4f}, online ${m['online_cost_usd']:.4f}); "
                 f"the {kept['calls']:,} kept answers cost ${kept['cost_usd']:.4f}")
    unanswered = f", {m['unanswered_requests']:,} got no answer" if m.get("unanswered_requests") else ""
    return (f"{m['requests']:,} requests sent{unanswered}; tokens billed in {m['input_tokens']:,} / out {m['output_tokens']:,}; "
            f"{money}")


def _money(cost: float | None) -> str:
    return "unknown (model not in the price table)" if cost is None else f"${cost:.4f}"


def print_estimate(summary: dict[str, Any], console: Console, *, dry_run: bool = True) -> None:
    """The estimate of `--dry-run`, and of every paid build before its first call: calls, tokens, cost, costliest pairs."""
    if dry_run:
        t = Table(title=f"dry run: {escape(summary['oracle'])} (nothing was called)", show_header=True)
        t.add_column("task")
        t.add_column("calls", justify="right")
        for task, n in summary["calls"].items():
            t.add_row(task, f"{n:,}")
        t.add_row("total", f"{summary['calls_total']:,}")
        console.print(t)
    tok = summary["tokens"]
    console.print(f"estimate: {summary['calls_total']:,} calls, tokens in ~{tok['input']:,} / out ~{tok['output']:,}; "
                  f"estimated cost {_money(summary['cost_usd'])}", markup=False, highlight=False)
    top = summary.get("top_pairs") or []
    if top:
        t = Table(title="the most expensive pairs", show_header=True, title_justify="left")
        for col in ("row", "chars", "calls", "tokens in/out", "cost", "prompt"):
            t.add_column(col, justify="right" if col not in ("prompt",) else "left")
        for p in top:
            cost = "" if p["cost_usd"] is None else f"${p['cost_usd']:.4f}"
            t.add_row(str(p["row"]), f"{p['chars']:,}", str(p["calls"]), f"{p['tokens']['input']:,}/{p['tokens']['output']:,}",
                      cost, escape(p["prompt"]))
        console.print(t)
        total = summary["cost_usd"]
        if total and top[0]["cost_usd"] and top[0]["cost_usd"] > 0.5 * total and len(top) > 1:
            warn(f"source row {top[0]['row']} alone is {100 * top[0]['cost_usd'] / total:.0f}% of the estimated cost "
                 f"({top[0]['chars']:,} characters): check it, or lower --max-answer-chars")
    if summary.get("over_budget"):
        warn(f"the estimated cost {_money(summary['cost_usd'])} is over --max-cost ${summary['max_cost']:.4f}: "
             + ("a build would stop before its first call" if dry_run else "nothing was called"))
    if dry_run:
        console.print(summary["note"], markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("build")
    def build_command(
        source: str = typer.Argument(..., help="Local file (.jsonl, .jsonl.gz, .json, .parquet, .csv) or a Hub dataset id."),
        out: Path = typer.Option(..., "--out", "-o", help="Run directory (created; re-running resumes it)."),
        oracle: str = typer.Option("rules", help="rules | openai:MODEL | gemini:MODEL"),
        base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp)."),
        split: Optional[str] = typer.Option(None, help="Hub split (default: train)."),
        config: Optional[str] = typer.Option(None, "--config", help="Hub dataset config name."),
        revision: Optional[str] = typer.Option(None, help="Hub dataset revision."),
        mapping: Optional[str] = typer.Option(None, "--map", help="Column mapping, e.g. prompt=question,chosen=good,rejected=bad."),
        limit: Optional[int] = typer.Option(None, help="Read at most N source rows."),
        max_answer_chars: int = typer.Option(100_000, "--max-answer-chars", help="Quarantine a pair whose chosen or rejected answer is longer (answer_too_long)."),
        seed: int = typer.Option(0, help="Seed of every random draw (attributes, neutrals, order)."),
        max_attributes: int = typer.Option(2, "--max-attributes", help="Rubrics intervened on per source pair."),
        causal: str = typer.Option("degrade,upgrade", help="Causal augmentations to make: degrade, upgrade or both."),
        verify: Optional[bool] = typer.Option(None, "--verify/--no-verify", help="Verify rewrites with the oracle (default: on for LLM oracles, off for rules)."),
        neutral_ratio: float = typer.Option(1.0, "--neutral-ratio", help="IQN neutral pairs per source pair."),
        neutral_group_size: int = typer.Option(
            16, "--neutral-group-size", help="IQN ties draw their prompt within fixed random groups of about N source pairs (what a leak-free test split holds out)."
        ),
        cross_prompt: bool = typer.Option(False, "--cross-prompt", help="Also add RRM-style cross-prompt pairs."),
        concurrency: int = typer.Option(16, help="Oracle calls in flight."),
        rpm: Optional[int] = typer.Option(None, help="Requests per minute limit."),
        tpm: Optional[int] = typer.Option(None, help="Tokens per minute limit."),
        timeout: Optional[float] = typer.Option(None, help="Seconds per oracle request (default 60)."),
        schema_mode: str = typer.Option("auto", "--schema-mode", help="Structured output: auto (json_schema, falling back as the server requires), json_schema, json_object or text."),
        max_cost: Optional[float] = typer.Option(None, "--max-cost", help="Stop cleanly before the estimated cost passes USD."),
        max_failures: int = typer.Option(50, "--max-failures", help="Stop when this many calls failed in this run."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Estimate calls, tokens and cost; call nothing."),
        template: list[str] = typer.Option([], "--template", help="Pin a template version, e.g. degrade@v1 (repeatable)."),
        templates_dir: Optional[Path] = typer.Option(None, "--templates-dir", help="Folder of your own template versions (NAME/vN.jinja), searched first."),
        shard: Optional[str] = typer.Option(None, help="Build only slice i of N (by source id hash), e.g. 0/4; combine with `crome merge`."),
        batch: bool = typer.Option(False, "--batch", help="Send each pass's oracle calls as one provider batch job (half price); re-run to collect and go on."),
        wait: bool = typer.Option(False, "--wait", help="With --batch: keep polling and going on until the build completes."),
        poll_interval: float = typer.Option(60.0, "--poll-interval", help="With --wait: seconds between polls."),
        neutralize_shortcuts: bool = typer.Option(False, "--neutralize-shortcuts", help="Find phrase shortcuts in the source and add ties that differ only in each (shortcut_neutral)."),
        shortcut_phrases: Optional[Path] = typer.Option(None, "--shortcut-phrases", help="File of phrases to give ('opening: ...', 'closing: ...') or veto ('veto: ...'); implies --neutralize-shortcuts."),
        shortcut_max_per_phrase: int = typer.Option(1000, "--shortcut-max-per-phrase", min=1, help="Shortcut-neutral ties per phrase at most."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
        executor: str = typer.Option("local", "--executor", help="local: this process | ray: --shards N shard builds as Ray tasks, then merged into --out."),
        shards: Optional[int] = typer.Option(None, "--shards", help="With --executor ray: how many shards (each a `--shard i/N` build under OUT/shards/)."),
        ray_address: Optional[str] = typer.Option(None, "--ray-address", help="With --executor ray: the cluster to join (default: $RAY_ADDRESS, else a local Ray)."),
    ) -> None:
        """Build a Crome dataset: rubrics, causal counterfactuals, IQN neutrals, validation, dedup, export."""
        from pydantic import ValidationError

        from crome.builder.run.config import BuildConfig
        from crome.builder.run.generate import BuildStopped
        from crome.builder.oracles.base import SystematicOracleError
        from crome.builder.run.pipeline import Progress as Hooks
        from crome.builder.run.pipeline import build
        from crome.builder.sources import SourceError
        from crome.builder.store import RunStoreError

        from crome.cli.shortcuts_cmd import print_phrases, read_phrase_file

        phrases = read_phrase_file(shortcut_phrases) if shortcut_phrases else []
        try:
            cfg = BuildConfig(
                neutralize_shortcuts=neutralize_shortcuts or shortcut_phrases is not None, shortcut_phrases=phrases,
                shortcut_max_per_phrase=shortcut_max_per_phrase,
                source=source, out=str(out), oracle=oracle, base_url=base_url, split=split, config_name=config,
                revision=revision, mapping=parse_mapping(mapping), limit=limit, max_answer_chars=max_answer_chars, seed=seed, max_attributes=max_attributes,
                causal=[c.strip() for c in causal.split(",") if c.strip()], verify=verify, neutral_ratio=neutral_ratio,
                neutral_group_size=neutral_group_size, cross_prompt=cross_prompt, concurrency=concurrency, timeout=timeout, schema_mode=schema_mode, rpm=rpm, tpm=tpm, max_cost=max_cost,
                max_failures=max_failures, dry_run=dry_run, shard=parse_shard(shard), batch=batch, batch_wait=wait,
                poll_interval=poll_interval,
                templates={t.partition("@")[0]: t for t in template},
                templates_dir=str(templates_dir) if templates_dir else None,
            )
        except ValidationError as exc:
            fail(option_error(exc))

        if executor != "local" or shards is not None or ray_address is not None:
            from crome.cli.shards_cmd import build_sharded

            build_sharded(cfg, executor=executor, shards=shards, address=ray_address, quiet=quiet, print_summary=print_summary)
            return

        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[calls]}"),
                   TimeElapsedColumn(), TimeRemainingColumn()]
        # Started with the first pair, not before: a build refused at the start prints its one error line and nothing else.
        bar = Progress(*columns, console=err, disable=quiet, transient=False)
        task = bar.add_task("pairs", total=None, calls="")

        def start(n: int) -> None:
            bar.start()
            bar.update(task, total=n)

        def advance(stats: dict) -> None:
            cost = f" ${stats['cost_usd']:.4f}" if stats.get("cost_usd") else ""
            bar.update(task, advance=1, calls=f"calls {stats['new']} new / {stats['cached']} cached / {stats['failed']} failed{cost}")

        from crome.builder.run.generate import StoreWriteError
        from crome.builder.run.pipeline import BuildInterrupted

        hooks = Hooks(start=start, advance=advance, stage=lambda s: bar.update(task, description=s),
                      notice=lambda m: err.print(m, style="yellow", markup=False, highlight=False),
                      estimate=lambda summary: print_estimate(summary, err, dry_run=False))
        error: tuple[str, int] | None = None
        try:
            result = build(cfg, hooks)
        except (SourceError, RunStoreError, ValueError) as exc:  # OutputError and RunInUseError among them
            error = (str(exc), 2)
        except StoreWriteError as exc:
            error = (str(exc), 1)
        except OSError as exc:
            error = (os_error(exc), 2)
        except SystematicOracleError as exc:
            error = (f"oracle error, run stopped: {exc}", 3)
        except BuildInterrupted as exc:
            error = (str(exc), 130)
        except KeyboardInterrupt:
            error = ("interrupted again: exited at once; answers still in flight were not recorded "
                     "(a re-run sends them again). Re-run the same command to resume.", 130)
        finally:
            bar.stop()
        if error is not None:
            fail(*error)
        if result.stopped == "dry_run":
            print_estimate(result.summary, err)
            return
        if result.stopped == "estimate_over_budget":
            fail(f"the estimated cost (${result.summary['cost_usd']:.4f}) is over --max-cost ${cfg.max_cost:.4f}: nothing was "
                 "called; raise --max-cost, or build fewer pairs (--limit)", code=4)
        print_summary(result.summary, err)
        print_phrases(result.summary.get("shortcuts"), err)
        if result.stopped == "batch_pending":
            err.print(f"batch job(s) in flight: re-run the same command later to collect them and go on "
                      f"(or add --wait); `crome status {out}` shows them", style="yellow", markup=False)
            raise typer.Exit(5)
        if result.stopped == "internal_errors":
            fail(f"run stopped: {result.summary['counts']['internal_errors']} pair(s) failed with an internal error "
                 f"(a bug; the first traceback is above): {result.summary.get('first_internal_error')}", code=1)
        if result.stopped:
            err.print(f"run stopped ({result.stopped}); re-run the same command to resume", style="yellow", markup=False)
            raise typer.Exit(4)

    @app.command("status")
    def status_command(
        run_dir: Path = typer.Argument(..., help="Run directory of `crome build`."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Where a run stands: counts, oracle calls, spend and batch jobs (reads the store only; calls nothing)."""
        from crome.builder.run.status import run_status
        from crome.builder.store import RunStoreError
        from crome.outputs import OutputError

        try:
            report = run_status(run_dir)
        except (RunStoreError, FileNotFoundError, OutputError) as exc:
            fail(exc)
        if as_json:
            typer.echo(json.dumps(report, indent=2))
            return
        print_status(report, Console())

    @app.command("merge")
    def merge_command(
        shards: list[Path] = typer.Argument(..., help="Run directories of `crome build --shard i/N`, all N of them."),
        out: Path = typer.Option(..., "--out", "-o", help="Run directory of the merged dataset (new)."),
        source: Optional[str] = typer.Option(None, "--source", help="The source the shards were built from, if it moved (default: the path they recorded)."),
        templates_dir: Optional[Path] = typer.Option(None, "--templates-dir", help="The --templates-dir the shards were built with, if any."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary table."),
    ) -> None:
        """Merge complete shards into the dataset one unsharded build gives (cross-shard dedup included); calls no oracle."""
        from pydantic import ValidationError

        from crome.builder.run.merge import MergeError, merge
        from crome.builder.sources import SourceError
        from crome.builder.store import RunStoreError
        from crome.outputs import OutputError

        try:
            result = merge(shards, out, source=source, templates_dir=str(templates_dir) if templates_dir else None)
        except ValidationError as exc:  # the build options, --templates-dir among them
            fail(option_error(exc))
        except (MergeError, SourceError, RunStoreError, OutputError) as exc:
            fail(exc)
        if not quiet:
            print_summary(result.summary, err)
            totals = result.summary["shards"]["totals"]
            cost = "unknown model price" if totals["cost_usd"] is None else f"${totals['cost_usd']:.4f}"
            err.print(f"merged {result.summary['shards']['count']} shards: {totals['requests']} oracle requests, billed {cost} in the shards",
                      markup=False)


def option_error(exc: Any) -> str:
    """A BuildConfig ValidationError as one line: the first option it names and what is wrong with it."""
    first = exc.errors()[0]
    where = ".".join(str(x) for x in first["loc"])
    return f"{'option ' + where + ': ' if where else ''}{first['msg'].removeprefix('Value error, ')}"


def print_status(report: dict, console: Console) -> None:
    t = Table(title=escape(f"crome status: {report['run']} ({report['status']})"), show_header=False)
    t.add_row("oracle", escape(str(report["oracle"])) + (f"  shard {report['shard'][0]}/{report['shard'][1]}" if report.get("shard") else ""))
    live = report.get("building")
    if live:
        done = f"{live['pairs_done']}/{live['pairs_total']} pairs" if live.get("pairs_total") else "starting"
        cost = f", ${live['cost_usd']:.4f} so far" if live.get("cost_usd") else ""
        t.add_row("build in progress", f"pid {live['pid']}, stage {escape(str(live['stage']))}: {done}; "
                  f"{live.get('calls') or 0} calls ({live.get('new_calls') or 0} new, {live.get('failed_calls') or 0} failed){cost}")
        t.add_row("counts below", f"from the last export ({live['last_export_at']})" if live.get("last_export_at") else "no export yet")
    if report.get("interrupted"):
        i = report["interrupted"]
        t.add_row("last build", f"stopped at stage {escape(str(i['stage']))} ({i['pairs_done']}/{i['pairs_total']} pairs, "
                  f"{i['updated_at']}) before it finished: re-run it to resume")
    c = report["counts"]
    if c.get("source_pairs") is not None:
        t.add_row("pairs", f"{c['source_pairs']} ({c['pending'] or 0} pending), {c['quarantined']} quarantined")
        t.add_row("rows", f"{c['rows']}, rejections {c['rejections']}")
    calls = report["calls"]
    if not live:  # while a build runs, its calls are in the row above
        t.add_row("oracle calls", f"{calls['total']} recorded, {calls['failed']} failed {calls['by_status'] or ''}")
    m = report["spend"]
    if m is not None:
        t.add_row("spend", escape(_spend_line(m)))
    b = report["batch"]
    if b["jobs"]:
        t.add_row("batch", f"{b['in_flight']['jobs']} job(s) in flight ({b['in_flight']['items']} requests, "
                  f"est. ${b['in_flight']['estimated_cost_usd']:.4f}); {b['ingested']['jobs']} collected")
    console.print(t)
    if b["jobs"]:
        jobs = Table(title="batch jobs", show_header=True)
        for col in ("#", "job", "state", "provider state", "requests", "tasks", "ok", "failed", "missing", "tokens in/out", "cost"):
            jobs.add_column(col)
        for j in b["jobs"]:
            tokens = "" if j["input_tokens"] is None else f"{j['input_tokens']:,}/{j['output_tokens']:,}"
            cost = f"${j['cost_usd']:.4f}" if j["cost_usd"] is not None else (f"est. ${j['estimated_cost_usd']:.4f}" if j["state"] != "abandoned" else "-")
            state = j["state"] + (" (adopted)" if j["adopted"] else "")
            jobs.add_row(str(j["seq"]), j["job_id"] or j["intent"], state, j["provider_state"] or "", str(j["items"]),
                         ", ".join(f"{k} {v}" for k, v in j["tasks"].items()), *(str(j[k]) if j[k] is not None else "" for k in ("ok", "failed", "missing")),
                         tokens, cost)
        console.print(jobs)
    if report.get("shards"):
        s = report["shards"]["totals"]
        console.print(f"merged from {report['shards']['count']} shards: {s['requests']} requests, "
                      + ("unknown cost" if s["cost_usd"] is None else f"${s['cost_usd']:.4f}") + " spent in the shards")
