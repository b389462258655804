"""`crome publish` (Parquet shards + dataset card, to the Hub or a folder) and `crome audit` (DuckDB over the rows)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from crome.builder.hub.publish import DEFAULT_MAX_SHARD_SIZE


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    @app.command("publish")
    def publish_cmd(
        run_dir: Path = typer.Argument(..., help="Run dir written by `crome build --out`."),
        to: str = typer.Option(..., "--to", help="Hub dataset ORG/NAME, or a local folder (./folder) laid out as on the Hub."),
        private: bool = typer.Option(False, "--private", help="Create the Hub repo private."),
        revision: Optional[str] = typer.Option(None, "--revision", help="Hub branch to commit to (created if missing)."),
        test_fraction: float = typer.Option(0.0, "--test-fraction", min=0.0, max=0.99,
                                            help="Share of source pairs held out as a test split that shares no prompt or answer text with train (IQN ties included)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the test split (default: the build seed)."),
        license: Optional[str] = typer.Option(None, "--license", help="Licence id when the source's is unknown (e.g. cc-by-4.0)."),
        repo_id: Optional[str] = typer.Option(None, "--repo-id", help="Hub id the card's snippets name when --to is a folder."),
        max_shard_size: str = typer.Option(DEFAULT_MAX_SHARD_SIZE, "--max-shard-size", help="Largest Parquet shard (Arrow bytes)."),
    ) -> None:
        """Publish a run as Parquet shards and a dataset card: one commit with what changed, none if nothing did."""
        from crome.builder.hub.publish import PublishError, publish

        err = Console(stderr=True)
        try:
            release, result = publish(
                run_dir, to, private=private, revision=revision, test_fraction=test_fraction, seed=seed,
                license=license, repo_id=repo_id, max_shard_size=max_shard_size,
            )
        except PublishError as e:
            _fail(str(e))
            return
        for w in release.warnings:
            err.print(f"[yellow]warning:[/] {w}")
        splits = ", ".join(f"{n} {name}" for name, n in release.splits.items())
        if not result.changed:
            typer.echo(f"{result.target}: unchanged ({len(result.unchanged)} files already up to date); no commit made.")
            return
        typer.echo(f"{result.target}: {release.rows} rows ({splits}), licence {release.license}")
        for label, paths in (("added", result.added), ("updated", result.updated), ("deleted", result.deleted)):
            for p in paths:
                typer.echo(f"  {label:8} {p}")
        if result.commit_url:
            typer.echo(f"commit: {result.commit_url}")

    @app.command("audit")
    def audit_cmd(
        path: str = typer.Argument(..., help="Run dir, folder of Parquet files, .parquet file or hf://datasets/ORG/NAME."),
        sql: Optional[str] = typer.Option(None, "--sql", help="A SELECT against the `pairs` view (and `rejections` for a run dir)."),
        report: Optional[Path] = typer.Option(None, "--report", help="Write a self-contained HTML report here."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of tables."),
        samples: int = typer.Option(3, "--samples", min=0, help="Random rows shown per kind."),
        seed: int = typer.Option(0, "--seed", help="Seed of the samples."),
    ) -> None:
        """Counts, preference balance, length and formatting by side, rejections, duplicates and samples (DuckDB)."""
        from crome.builder.hub.audit import AuditError, audit, run_query

        console = Console()
        try:
            if sql is not None:
                columns, rows = run_query(path, sql)
                _print_query(console, columns, rows, as_json)
                return
            result = audit(path, samples=samples, seed=seed)
        except AuditError as e:
            _fail(str(e))
            return
        if report is not None:
            from crome.builder.hub.audit_html import render_html

            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(render_html(result), encoding="utf-8")
        if as_json:
            typer.echo(json.dumps(result.to_json(), ensure_ascii=False, indent=2, default=str))
        else:
            _print_report(console, result)
        if report is not None:
            Console(stderr=True).print(f"report: {report}")


def _print_query(console: Console, columns: list[str], rows: list[tuple], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps([dict(zip(columns, r)) for r in rows], ensure_ascii=False, indent=2, default=str))
        return
    table = Table(*columns, show_lines=False)
    for r in rows:
        table.add_row(*("" if v is None else str(v) for v in r))
    console.print(table)


def _print_report(console: Console, report) -> None:
    from crome.builder.hub.audit import format_value

    console.print(f"[bold]crome audit[/] {report.source} ({report.source_type}, {report.files} files, {report.rows:,} rows)")
    for section in report.sections:
        table = Table(title=section.title, title_justify="left", caption=section.note or None, caption_justify="left")
        for i, c in enumerate(section.columns):
            numeric = any(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in section.rows)
            # Headers wrap at their words; values (kind, side, reasons) stay whole.
            widest = max((len(format_value(c, r[i])) for r in section.rows), default=1)
            table.add_column(c.replace("_", " "), justify="right" if numeric else "left",
                             min_width=None if numeric else min(widest, 30))
        for row in section.rows:
            table.add_row(*(format_value(c, v) for c, v in zip(section.columns, row)))
        console.print(table)
    for kind, rows in report.samples.items():
        for s in rows:
            head = f"{kind} · {s['augmentation']}" + (f" · {s['attribute']}" if s.get("attribute") else "") + f" · preference {s['preference']:g}"
            body = (f"[bold]prompt[/] {_clip(s['prompt'])}\n[blue]chosen[/] {_clip(s['chosen'])}\n"
                    f"[dark_orange]rejected[/] {_clip(s['rejected'])}")
            console.print(Panel(body, title=head, title_align="left"))


def _clip(text: str, n: int = 400) -> str:
    from rich.markup import escape

    text = text if len(text) <= n else text[:n] + " …"
    return escape(text)
