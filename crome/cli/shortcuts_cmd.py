"""`crome neutralize RUN --out RUN2`, and the shortcut printouts of `crome build` and `crome audit`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from crome.cli.errors import fail, note


def read_phrase_file(path: Path) -> list[dict[str, str]]:
    """--shortcut-phrases FILE, parsed (one line per phrase); a bad line is one error naming it."""
    from crome.builder.stages.shortcut import parse_phrase_file

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        fail(f"cannot read --shortcut-phrases {path}: {e.strerror or e}")
    except UnicodeDecodeError:
        fail(f"--shortcut-phrases {path}: not UTF-8 text")
    try:
        return parse_phrase_file(text, f"--shortcut-phrases {path.name}")
    except ValueError as e:
        fail(e)


def print_phrases(record: dict[str, Any] | None, console: Console) -> None:
    """The phrases a build or a neutralize considered: used (with their ties) and left alone (with why)."""
    if not record:
        return
    t = Table(title=f"shortcut phrases: {record['ties']} tie(s) added", title_justify="left")
    for col in ("where", "phrase", "origin", "status", "split (chosen / rejected / both)", "strength", "ties", "note"):
        t.add_column(col)
    for p in record["phrases"]:
        split = f"{p['chosen_only']} / {p['rejected_only']} / {p['both']} of {p['pairs']}" if p.get("pairs") is not None else ""
        strength = f"{p['strength']:+.3f}" if p.get("strength") is not None else ""
        ties = f"{p['ties']} ({p['removed']} removed, {p['added']} added)" if "ties" in p else ""
        why = p.get("reason") or (f"{p['answers_skipped']} answer(s) too short to edit" if p.get("answers_skipped") else "")
        t.add_row(p["feature"], escape(repr(p["text"])), p.get("origin") or "", p["status"], split, strength, ties, escape(why))
    if not record["phrases"]:
        t.add_row("", "(no phrase shortcut found)", "", "", "", "", "", "")
    console.print(t)


def print_shortcuts(shortcuts: list[dict[str, Any]], console: Console, limit: int = 20) -> None:
    """The audit's shortcut candidates, strongest first (significant ones marked)."""
    t = Table(title="Shortcuts: surface cues that split chosen from rejected (strict pairs, Holm-corrected)", title_justify="left",
              caption="strength = (chosen only - rejected only) / pairs; * significant at 0.05 after Holm's correction", caption_justify="left")
    for col in ("", "feature", "cue", "kind", "attribute", "pairs", "chosen only", "rejected only", "both", "strength", "p (Holm)"):
        t.add_column(col, justify="right" if col in ("pairs", "chosen only", "rejected only", "both", "strength", "p (Holm)") else "left")
    for s in shortcuts[:limit]:
        scope = f"{s['attribute']} {s['augmentation']}" if s.get("attribute") else ""
        p = "—" if s["p_adjusted"] is None else f"{s['p_adjusted']:.2g}"
        t.add_row("*" if s["significant"] else "", s["feature"], escape(repr(s["text"])[:60]), s["kind"], escape(scope), f"{s['pairs']:,}",
                  f"{s['chosen_only']:,}", f"{s['rejected_only']:,}", f"{s['both']:,}", f"{s['strength']:+.3f}", p)
    if not shortcuts:
        t.add_row("", "(none)", "", "", "", "", "", "", "", "", "")
    console.print(t)


def register(app: typer.Typer) -> None:
    @app.command("neutralize")
    def neutralize_cmd(
        run_dir: Path = typer.Argument(..., help="Run dir of `crome build`, `crome merge` or `crome filter`."),
        out: Path = typer.Option(..., "--out", "-o", help="New folder: the run's rows plus shortcut-neutral ties."),
        shortcut_phrases: Optional[Path] = typer.Option(None, "--shortcut-phrases", help="File of phrases to give ('opening: ...', 'closing: ...') or veto ('veto: ...')."),
        max_per_phrase: int = typer.Option(1000, "--max-per-phrase", min=1, help="Ties per phrase at most."),
        min_strength: float = typer.Option(0.1, "--min-strength", min=0.0, max=1.0, help="Found phrases moving fewer pairs than this are reported, not neutralised."),
        seed: int = typer.Option(0, "--seed", help="Seed of which pairs and which answer get a tie."),
        as_json: bool = typer.Option(False, "--json", help="Print the `shortcuts` record as JSON."),
    ) -> None:
        """Find phrase shortcuts in a built run and add ties that differ only in each phrase (shortcut_neutral)."""
        from crome.builder.run.neutralize import NeutralizeError, neutralize_run
        from crome.outputs import OutputError

        user = read_phrase_file(shortcut_phrases) if shortcut_phrases else []
        try:
            summary = neutralize_run(run_dir, out, user=user, seed=seed, max_per_phrase=max_per_phrase, min_strength=min_strength)
        except (NeutralizeError, OutputError) as e:
            fail(e)
        if as_json:
            typer.echo(json.dumps(summary["shortcuts"], ensure_ascii=False, indent=2))
        else:
            print_phrases(summary["shortcuts"], Console(stderr=True))
        note(f"{out}: {summary['counts']['rows']:,} rows ({summary['shortcuts']['ties']:,} shortcut-neutral ties added)")
