"""`RUN/progress.json`: where a running build is, for whoever watches it (a person, `crome status`, a test).

Written atomically at every stage change and at most every `interval` seconds as pairs finish,
so it is cheap and always a whole JSON document. It says what the process is doing now; the
store and `summary.json` stay the record of what was done.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

PROGRESS_FILE = "progress.json"


class ProgressFile:
    def __init__(self, run_dir: Path, interval: float = 0.5) -> None:
        self.path = Path(run_dir) / PROGRESS_FILE
        self.interval = interval
        self.state: dict[str, Any] = {"pid": os.getpid(), "stage": "starting", "pairs_done": 0, "pairs_total": 0}
        self._last = 0.0

    def update(self, *, force: bool = False, **fields: Any) -> None:
        self.state.update(fields)
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        self.state["updated_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.state, indent=2) + "\n")
        os.replace(tmp, self.path)

    def stage(self, name: str) -> None:
        self.update(stage=name, force=True)


def read_progress(run_dir: str | Path) -> dict[str, Any] | None:
    """The last progress a build wrote into `run_dir`, or None."""
    path = Path(run_dir) / PROGRESS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
