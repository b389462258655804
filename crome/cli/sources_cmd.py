"""`crome sources inspect`: what a source looks like once normalised, and which rows are quarantined why."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from crome.builder.sources import QUARANTINE_REASONS, SHAPES, SourceError, iter_source
from crome.cli.errors import fail
from crome.schemas.source import Quarantined, SourcePair

# The terminal report lists quarantined rows one by one up to this many; --json lists them all.
MAX_LISTED = 50
CLIP = 100


def _clip(text: str, width: int = CLIP) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= width else one_line[: width - 1] + "…"


def _inspect(
    source: str, *, limit: int | None, split: str | None, config: str | None, revision: str | None,
    mapping: str | None, samples: int, max_answer_chars: int | None = None,
) -> dict[str, Any]:
    """Stream the source once; keep counts, the first `samples` pairs and every quarantined row."""
    examples: list[SourcePair] = []
    quarantined: list[Quarantined] = []
    with iter_source(source, split=split, config=config, revision=revision, mapping=mapping, limit=limit,
                     max_answer_chars=max_answer_chars) as stream:
        for item in stream:
            if isinstance(item, Quarantined):
                quarantined.append(item)
            elif len(examples) < samples:
                examples.append(item)
    return {
        "source": {
            "name": stream.name, "hub_id": stream.hub_id, "license": stream.license,
            "split": split, "config": config, "revision": revision,
        },
        "shape": stream.shape,
        "mapping": stream.mapping,
        "columns": stream.columns,
        "counts": {"rows": stream.rows_read, "pairs": stream.pairs, "quarantined": stream.quarantined},
        "quarantine_reasons": dict(stream.reasons.most_common()),
        "quarantined": [q.model_dump() for q in quarantined],
        "samples": [p.model_dump(mode="json") for p in examples],
    }


def _print_report(report: dict[str, Any], console: Console) -> None:
    src, counts = report["source"], report["counts"]
    head = Table.grid(padding=(0, 2))
    head.add_row("source", Text(src["name"]))
    if src["hub_id"]:
        head.add_row("hub id", Text(src["hub_id"]))
    for key in ("split", "config", "revision", "license"):
        if src[key]:
            head.add_row(key, Text(str(src[key])))
    head.add_row("shape", Text(f"{report['shape']}  ({SHAPES[report['shape']]})"))
    if report["mapping"]:
        head.add_row("mapping", Text(", ".join(f"{k}={v}" for k, v in report["mapping"].items())))
    head.add_row("rows", f"{counts['rows']:,}")
    head.add_row("pairs", f"{counts['pairs']:,}")
    head.add_row("quarantined", f"{counts['quarantined']:,}")
    console.print(head)

    if report["quarantine_reasons"]:
        rows_by_reason: dict[str, list[int]] = defaultdict(list)
        for q in report["quarantined"]:
            rows_by_reason[q["reason"]].append(q["row"])
        table = Table(title="Quarantine reasons", title_justify="left")
        for col in ("reason", "count", "meaning", "example rows"):
            table.add_column(col)
        for reason, n in report["quarantine_reasons"].items():
            rows = sorted(set(rows_by_reason[reason]))
            shown = ", ".join(map(str, rows[:5])) + (", …" if len(rows) > 5 else "")
            table.add_row(reason, f"{n:,}", QUARANTINE_REASONS.get(reason, ""), shown)
        console.print(table)

        listed = report["quarantined"][:MAX_LISTED]
        table = Table(title=f"Quarantined rows ({counts['quarantined']:,})", title_justify="left")
        for col in ("row", "reason", "detail"):
            table.add_column(col)
        for q in listed:
            table.add_row(str(q["row"]), q["reason"], Text(q["detail"]))
        console.print(table)
        if counts["quarantined"] > len(listed):
            console.print(f"… and {counts['quarantined'] - len(listed):,} more (--json lists them all)")

    if report["samples"]:
        table = Table(title="Normalised pairs (first rows, text clipped)", title_justify="left", show_lines=True)
        for col in ("row", "prompt", "chosen", "rejected"):
            table.add_column(col, overflow="fold")
        for pair in report["samples"]:
            turns = len(pair["prompt"])
            prompt = _clip(pair["prompt"][-1]["content"])
            if turns > 1:
                prompt = f"[{turns} turns] {prompt}"
            table.add_row(
                str(pair["row"]), Text(prompt), Text(_clip(pair["chosen"]["content"])), Text(_clip(pair["rejected"]["content"]))
            )
        console.print(table)


def register(app: typer.Typer) -> None:
    sources = typer.Typer(help="Inspect preference data sources.", no_args_is_help=True)
    app.add_typer(sources, name="sources")

    @sources.command("inspect")
    def _inspect_cmd(
        source: str = typer.Argument(..., help="Local .jsonl, .jsonl.gz, .json, .parquet or .csv file, a dataset folder, or a Hub dataset id."),
        limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Read at most N source rows."),
        split: Optional[str] = typer.Option(None, "--split", help="Split of a Hub dataset (default: train)."),
        config: Optional[str] = typer.Option(None, "--config", help="Configuration (subset) of a Hub dataset."),
        revision: Optional[str] = typer.Option(None, "--revision", help="Branch, tag or commit of a Hub dataset."),
        mapping: Optional[str] = typer.Option(
            None, "--map", help="Explicit columns, e.g. prompt=question,chosen=good,rejected=bad (label=COL when chosen/rejected are A/B)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print a machine-readable JSON report."),
        samples: int = typer.Option(3, "--samples", min=0, help="How many normalised pairs to show."),
        max_answer_chars: int = typer.Option(100_000, "--max-answer-chars", min=1, help="Quarantine longer answers, as `crome build` does."),
    ) -> None:
        """Detect a source's shape, count rows, pairs and quarantined rows, and show normalised examples."""
        try:
            report = _inspect(source, limit=limit, split=split, config=config, revision=revision, mapping=mapping, samples=samples,
                              max_answer_chars=max_answer_chars)
        except SourceError as e:
            fail(e)
        if as_json:
            typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        else:
            _print_report(report, Console())
