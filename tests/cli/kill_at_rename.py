"""`python kill_at_rename.py ARGS...`: `crome ARGS...`, SIGKILLed just before its K-th rename into a folder.

K is `$KILL_AT`; only renames whose target lies inside `$KILL_DIR` count, and not the ones of the
live progress file or of config.json (written at every build's start). This kills a command at
exactly each rename point of an export or a publish, however fast or loaded the machine is: the
renames are the moments a kill could leave half of something.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

IGNORED = {"progress.json", "config.json"}


def main() -> None:
    target = Path(os.environ["KILL_DIR"]).resolve()
    kill_at = int(os.environ["KILL_AT"])
    real_replace = os.replace
    seen = [0]

    def replace(src, dst, *args, **kwargs):
        path = Path(dst).resolve()
        if path.is_relative_to(target) and path.name not in IGNORED:
            seen[0] += 1
            if seen[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace
    sys.argv = ["crome", *sys.argv[1:]]
    from crome.cli import main as crome

    crome()


if __name__ == "__main__":
    main()
