"""The `crome` command line. Each area registers its own commands from its own module."""

from __future__ import annotations

import logging

import typer

from crome import __version__
from crome.cli.errors import VERBOSE, run

app = typer.Typer(
    name="crome",
    help="Build counterfactual preference datasets (Crome), publish and audit them, train robust reward models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals could hold API keys
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"crome {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages; show the traceback of an internal error."),
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    VERBOSE["on"] = verbose


def _register() -> None:
    from crome.cli import build_cmd, publish_cmd, shortcuts_cmd, sources_cmd, train_cmd

    for module in (sources_cmd, build_cmd, publish_cmd, train_cmd, shortcuts_cmd):
        module.register(app)


_register()


def main() -> None:
    """The `crome` command: every error is one line on stderr (user errors exit 2); `crome -v` shows tracebacks."""
    run(app)
