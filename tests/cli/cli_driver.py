"""Run `crome` command lines in a subprocess, several per process, as a user runs them.

`crome(...)` runs one command line as `python -m crome ...`; `crome_many([...])` runs a list of
command lines one after the other in ONE subprocess through the same entry point (`crome.cli.main`'s
error handling, `crome.cli.errors.run`), which saves the ~1 s start-up of each command. Each result
has the exit code and what the command wrote to stdout and stderr.

Run as a script, this module is that subprocess: it reads the command lines as JSON on stdin and
writes the results as JSON to the file named by its argument.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TIMEOUT = 300


@dataclass
class Result:
    argv: list[str]
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]

    def __str__(self) -> str:  # what a failed assertion shows
        return f"crome {' '.join(self.argv)}\n-> exit {self.code}\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"


def env(**extra: str) -> dict[str, str]:
    """The environment of every command: offline, nothing reaches the Hub or a real API."""
    base = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN")) and k != "HF_ENDPOINT"}
    return {**base, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            "COLUMNS": "200", **extra}


def crome(*argv: str, cwd: Path, extra_env: dict[str, str] | None = None, timeout: float = TIMEOUT) -> Result:
    p = subprocess.run([sys.executable, "-m", "crome", *argv], cwd=cwd, env=env(**(extra_env or {})), capture_output=True,
                       text=True, timeout=timeout)
    return Result(list(argv), p.returncode, p.stdout, p.stderr)


def crome_many(commands: list[list[str]], *, cwd: Path, extra_env: dict[str, str] | None = None) -> list[Result]:
    out = cwd / ".cli-results.json"
    p = subprocess.run([sys.executable, __file__, str(out)], input=json.dumps(commands), cwd=cwd,
                       env=env(**(extra_env or {})), capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0, f"the driver itself failed:\n{p.stdout}\n{p.stderr}"
    results = [Result(c, r["code"], r["stdout"], r["stderr"]) for c, r in zip(commands, json.loads(out.read_text()))]
    out.unlink()
    return results


class _CurrentStderr:
    """A stream that writes to whatever sys.stderr is now (log records land in their own command's output)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _main(results_path: str) -> None:
    import logging

    logging.basicConfig(stream=_CurrentStderr(), level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from crome.cli import app
    from crome.cli.errors import VERBOSE, run

    results = []
    for argv in json.loads(sys.stdin.read()):
        VERBOSE["on"] = False
        logging.getLogger().setLevel(logging.WARNING)
        stdout, stderr = io.StringIO(), io.StringIO()
        code: object = None
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                run(app, argv)
            except SystemExit as e:
                code = e.code
            except BaseException:  # noqa: BLE001 - what `python -m crome` would print: a traceback
                import traceback

                traceback.print_exc()
                code = 1
        results.append({"code": code if isinstance(code, int) else 1, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()})
    Path(results_path).write_text(json.dumps(results))


if __name__ == "__main__":
    _main(sys.argv[1])
