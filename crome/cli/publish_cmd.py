"""`crome publish` (Parquet shards + dataset card, to the Hub or a folder) and `crome audit` (DuckDB over the rows)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from crome.builder.hub.publish import DEFAULT_MAX_SHARD_SIZE
from crome.cli.errors import fail, note, one_line, warn

# Exit code when the Hub refuses or cannot be reached (as `crome build` exits 3 on a systematic oracle error).
HUB_ERROR = 3


def register(app: typer.Typer) -> None:
    @app.command("publish")
    def publish_cmd(
        run_dir: Path = typer.Argument(..., help="Run dir written by `crome build --out` (or merge, or filter)."),
        to: str = typer.Option(..., "--to", help="A local folder (any path that exists or starts with ./, / or ~) laid out as on the Hub, or a Hub dataset ORG/NAME."),
        private: bool = typer.Option(True, "--private/--public", help="A Hub repo crome creates is private unless --public (an existing repo keeps its visibility)."),
        revision: Optional[str] = typer.Option(None, "--revision", help="Hub branch to commit to (created if missing)."),
        test_fraction: float = typer.Option(0.0, "--test-fraction", min=0.0, max=0.99,
                                            help="Share of source pairs held out as a test split that shares no prompt or answer text with train (IQN ties included)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the test split (default: the build seed)."),
        license: Optional[str] = typer.Option(None, "--license", help="Licence id when the source's is unknown (e.g. cc-by-4.0)."),
        repo_id: Optional[str] = typer.Option(None, "--repo-id", help="Hub id the card's snippets name when --to is a folder."),
        max_shard_size: str = typer.Option(DEFAULT_MAX_SHARD_SIZE, "--max-shard-size", help="Largest Parquet shard (Arrow bytes)."),
        overwrite_card: bool = typer.Option(False, "--overwrite-card", help="Replace a README.md crome did not write (or that was edited since)."),
    ) -> None:
        """Publish a run as Parquet shards and a dataset card: one commit with what changed, none if nothing did.

        Only files crome wrote are replaced or deleted: a README.md it did not write, and splits it
        does not write (e.g. data/validation-*), are kept.
        """
        from crome.builder.hub.publish import PublishError, publish

        try:
            release, result = publish(
                run_dir, to, private=private, revision=revision, test_fraction=test_fraction, seed=seed,
                license=license, repo_id=repo_id, max_shard_size=max_shard_size, overwrite_card=overwrite_card,
                announce=note,
            )
        except PublishError as e:
            fail(e)
        except Exception as e:  # noqa: BLE001 - the Hub's client raises many types; only its own errors are expected here
            if not is_hub_error(e):
                raise
            fail(f"the Hub refused or could not be reached: {one_line(e)[:400]}", code=HUB_ERROR)
        for w in release.warnings:
            warn(w)
        if result.kept:
            warn(f"kept {', '.join(result.kept)}: crome did not write it (or it was edited since); --overwrite-card replaces it")
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
        sql: Optional[str] = typer.Option(None, "--sql", help="A SELECT against the `pairs` view (and `rejections` for a run dir); printed as tab-separated text."),
        report: Optional[Path] = typer.Option(None, "--report", help="Write a self-contained HTML report here."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of tables."),
        samples: int = typer.Option(3, "--samples", min=0, help="Random rows shown per kind."),
        seed: int = typer.Option(0, "--seed", help="Seed of the samples."),
        timeout: float = typer.Option(60.0, "--timeout", help="With --sql: stop the query after this many seconds."),
        memory_limit: str = typer.Option("2GB", "--memory-limit", help="DuckDB's memory limit (it spills to a private temporary folder beyond it)."),
        max_rows: int = typer.Option(10_000, "--max-rows", help="With --sql: print at most this many rows."),
    ) -> None:
        """Counts, preference balance, length and formatting by side, rejections, duplicates and samples (DuckDB)."""
        from crome.builder.hub.audit import AuditError, audit, resolve
        from crome.builder.hub.query import run_query

        try:
            source = resolve(path)
            _say_building(source)
            if sql is not None:
                result = run_query(path, sql, timeout=timeout, memory_limit=memory_limit, max_rows=max_rows, source=source)
                print_query(result.columns, result.rows, as_json)
                if result.truncated:
                    warn(f"only the first {max_rows:,} rows are printed (--max-rows)")
                return
            result = audit(path, samples=samples, seed=seed, memory_limit=memory_limit, source=source)
        except AuditError as e:
            fail(e)
        if report is not None:
            from crome.builder.hub.audit_html import render_html

            try:
                report.parent.mkdir(parents=True, exist_ok=True)
                report.write_text(render_html(result), encoding="utf-8")
            except OSError as e:
                fail(f"cannot write --report {report}: {e.strerror or e}")
        if as_json:
            typer.echo(json.dumps(result.to_json(), ensure_ascii=False, indent=2, default=str))
        else:
            _print_report(Console(), result)
            from crome.cli.shortcuts_cmd import print_shortcuts

            print_shortcuts(result.shortcuts.get("shortcuts", []), Console())
        if report is not None:
            note(f"report: {report}")


# Where the Hub client's own errors come from (HTTP statuses, connections, timeouts); httpx may be vendored as httpx2.
_HUB_CLIENT_PACKAGES = {"huggingface_hub", "httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3"}


def is_hub_error(e: Exception) -> bool:
    """An error from talking to the Hub, not a bug of ours."""
    if isinstance(e, (ConnectionError, TimeoutError)):
        return True
    return any(c.__module__.split(".")[0] in _HUB_CLIENT_PACKAGES for c in type(e).__mro__ if c not in (Exception, BaseException))


def _say_building(source: Any) -> None:
    if source.building:
        b = source.building
        pairs = f", {b['pairs_done']}/{b['pairs_total']} pairs" if b.get("pairs_total") else ""
        note(f"a build is in progress in {source.label} (pid {b['pid']}, stage {b['stage']}{pairs}): this audits its last "
             f"finished export, written at {source.export_written_at}")


def _plain(value: Any) -> str:
    """One cell of --sql output: text as it is, but never a tab, a line break or a terminal control character."""
    if value is None:
        return "NULL"
    text = value if isinstance(value, str) else str(value)
    text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)


def print_query(columns: list[str], rows: list[tuple], as_json: bool) -> None:
    """--sql results: tab-separated plain text (a header line, then one line per row), or JSON; never markup."""
    if as_json:
        typer.echo(json.dumps([dict(zip(columns, r)) for r in rows], ensure_ascii=False, indent=2, default=str))
        return
    typer.echo("\t".join(_plain(c) for c in columns))
    for r in rows:
        typer.echo("\t".join(_plain(v) for v in r))


def _print_report(console: Console, report) -> None:
    from crome.builder.hub.audit import format_value

    console.print(f"[bold]crome audit[/] {escape(report.source)} ({report.source_type}, {report.files} files, {report.rows:,} rows)")
    for section in report.sections:
        table = Table(title=section.title, title_justify="left", caption=section.note or None, caption_justify="left")
        for i, c in enumerate(section.columns):
            numeric = any(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in section.rows)
            # Headers wrap at their words; values (kind, side, reasons) stay whole.
            widest = max((len(format_value(c, r[i])) for r in section.rows), default=1)
            table.add_column(c.replace("_", " "), justify="right" if numeric else "left",
                             min_width=None if numeric else min(widest, 30))
        for row in section.rows:
            table.add_row(*(escape(format_value(c, v)) for c, v in zip(section.columns, row)))
        console.print(table)
    for kind, rows in report.samples.items():
        for s in rows:
            head = f"{kind} · {s['augmentation']}" + (f" · {s['attribute']}" if s.get("attribute") else "") + f" · preference {s['preference']:g}"
            body = (f"[bold]prompt[/] {_clip(s['prompt'])}\n[blue]chosen[/] {_clip(s['chosen'])}\n"
                    f"[dark_orange]rejected[/] {_clip(s['rejected'])}")
            console.print(Panel(body, title=escape(head), title_align="left"))


def _clip(text: str, n: int = 400) -> str:
    text = text if len(text) <= n else text[:n] + " …"
    return escape(text)
