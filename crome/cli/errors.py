"""How the CLI tells a user what went wrong: one plain line on stderr, and an exit code.

`error: ...` and exit 2 for anything the user can fix (a bad file, folder, option or query); the
message names what was expected and what was found. Messages are printed as plain text, never as
rich markup, so a file name or an answer holding `[/b]` prints as it is. A bug (an exception no
command expects) is one line too, unless `crome -v` asked for the traceback.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

BAD_INPUT = 2
VERBOSE = {"on": False}  # set by the root callback (`crome -v`)


def one_line(text: object) -> str:
    """`text` on one line: newlines and runs of blanks become one space."""
    return " ".join(str(text).split())


def fail(message: object, code: int = BAD_INPUT) -> NoReturn:
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code)


def warn(message: object) -> None:
    typer.echo(f"warning: {one_line(message)}", err=True)


def note(message: object) -> None:
    typer.echo(one_line(message), err=True)


def first_line(text: object, limit: int = 400) -> str:
    """The first line of `text` that is not blank, on one line, cut at `limit` characters."""
    line = one_line(next((line for line in str(text).splitlines() if line.strip()), ""))
    return line if len(line) <= limit else line[: limit - 3].rstrip() + "..."


def os_error(e: OSError) -> str:
    """An OSError as one line naming the path, without Python's `[Errno N]` prefix.

    One raised with a message only (`OSError("...")`, as transformers and huggingface_hub raise it) has
    no strerror: the first line of its message says what went wrong (the lines after it are advice).
    """
    what = e.strerror or first_line(e) or type(e).__name__
    where = f": {e.filename}" if e.filename and str(e.filename) not in what else ""
    return f"{what}{where}"


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input wherever they escape a command (imported late: the CLI starts fast)."""
    from crome.builder.hub.audit import AuditError
    from crome.builder.hub.sync import PublishError
    from crome.builder.run.merge import MergeError
    from crome.builder.sources import SourceError
    from crome.builder.store import RunStoreError
    from crome.outputs import OutputError

    errors: tuple[type[BaseException], ...] = (OutputError, SourceError, PublishError, AuditError, MergeError, RunStoreError)
    if "crome.train.data" in sys.modules:  # it imports torch: a DataError can only exist if it was loaded
        errors += (sys.modules["crome.train.data"].DataError,)
    return errors


def run(app: typer.Typer, argv: list[str] | None = None) -> NoReturn:
    """Run the CLI: usage errors, user errors and bugs each end as one line (bugs: the traceback with -v)."""
    try:
        code = app(args=argv, standalone_mode=False)
    except typer.Exit as e:
        code = e.exit_code
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        code = 130
    except typer.TyperException as e:  # a usage error (unknown option, bad value, missing argument) and its kin
        if type(e).__name__ == "NoArgsIsHelpError":  # `crome` alone: the help is already printed
            sys.exit(BAD_INPUT)
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else " (see `crome --help`)"
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        typer.echo(f"error: {one_line(message)}{hint}", err=True)
        code = getattr(e, "exit_code", BAD_INPUT)
    except Exception as e:  # noqa: BLE001 - the last line of defence: nothing escapes as a traceback by default
        if VERBOSE["on"]:
            raise
        if isinstance(e, user_errors()):
            typer.echo(f"error: {one_line(e)}", err=True)
            code = BAD_INPUT
        elif isinstance(e, OSError):
            typer.echo(f"error: {os_error(e)}", err=True)
            code = BAD_INPUT
        else:
            typer.echo(f"error: internal error ({type(e).__name__}: {one_line(e)[:300]}); "
                       "run `crome -v ...` for the traceback and report it", err=True)
            code = 1
    sys.exit(code if isinstance(code, int) else 0)
