"""crome/cli/errors.py: an OSError raised with a message only (as transformers raises it) keeps its reason."""

from __future__ import annotations

import pytest
import typer

from crome.cli.errors import VERBOSE, first_line, os_error, run


def test_an_oserror_with_a_message_only_is_its_first_line():
    hub = OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your internet connection.")
    assert hub.strerror is None
    assert os_error(hub) == "We couldn't connect to 'https://huggingface.co' to load the files."
    assert os_error(FileNotFoundError(2, "No such file or directory", "data.jsonl")) == "No such file or directory: data.jsonl"
    assert os_error(OSError()) == "OSError"  # nothing to say but the type
    assert os_error(OSError("\n\n  cannot   open\nthe rest")) == "cannot open"


def test_first_line_is_one_line_cut_where_it_is_too_long():
    assert first_line("a  b\tc\nd") == "a b c"
    long = first_line("x" * 1000, limit=50)
    assert len(long) == 50 and long.endswith("...")
    assert first_line("") == ""


def test_an_oserror_escaping_a_command_is_one_line_exit_2(capsys, monkeypatch):
    monkeypatch.setitem(VERBOSE, "on", False)  # as `crome` without -v (an earlier in-process command may have set it)
    app = typer.Typer()

    @app.command()
    def load(name: str) -> None:
        raise OSError(f"{name} is not a local folder and is not a valid model identifier\nIf this is a private repository, ...")

    @app.command()
    def other() -> None:  # two commands: typer takes the command name as the first argument
        pass

    with pytest.raises(SystemExit) as e:
        run(app, ["load", "acme/rm"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: acme/rm is not a local folder and is not a valid model identifier\n"
