"""`python kill_at_progress.py ARGS...`: `crome ARGS...`, SIGKILLed the moment its progress file reaches `$KILL_STAGE`.

The kill happens inside the process, right after the build reports the stage (and, with
`$KILL_ROWS`, at least that many rows exported), so it lands at the same point of the work on a
fast or a loaded machine.
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    stage = os.environ["KILL_STAGE"]
    rows = int(os.environ.get("KILL_ROWS", "0"))
    from crome.builder.run import progress

    real_update = progress.ProgressFile.update

    def update(self, *, force: bool = False, **fields):
        real_update(self, force=force, **fields)
        if self.state.get("stage") == stage and self.state.get("rows_exported", 0) >= rows:
            os.kill(os.getpid(), signal.SIGKILL)

    progress.ProgressFile.update = update
    sys.argv = ["crome", *sys.argv[1:]]
    from crome.cli import main as crome

    crome()


if __name__ == "__main__":
    main()
