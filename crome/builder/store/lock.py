"""The run lock: one writer per run directory, and errors that name who holds the run.

The writer holds an exclusive `flock` on RUN_DIR/crome.lock (which names its pid) on top of
DuckDB's own file lock; a second writer, or a reader while the writer is open, gets
`RunInUseError`. Read-only opens take no lock: they can run side by side while no writer holds the run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import duckdb

from crome.builder.store.errors import RunInUseError, RunStoreError

try:
    import fcntl
except ImportError:  # Windows: DuckDB's own file lock still keeps a second writer out.
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = "crome.lock"

_PID = re.compile(r"PID (\d+)")


def _lock_pid(lock_path: Path) -> int | None:
    try:
        text = lock_path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def in_use(run_dir: Path, pid: int | None, *, reading: bool = False) -> RunInUseError:
    """The error for a run held by `pid`, saying what to do about it."""
    if pid == os.getpid():
        return RunInUseError(f"run {run_dir} is already open in this process (pid {pid}); use or close that store first")
    who = f"pid {pid}" if pid is not None else "pid unknown"
    action = "read it when that process has finished" if reading else "wait for it to finish, stop it, or use another output directory"
    return RunInUseError(f"run {run_dir} is in use by another process ({who}); {action}")


def acquire_lock(run_dir: Path) -> int | None:
    """Exclusive flock on RUN_DIR/crome.lock, which then names this process's pid."""
    if fcntl is None:
        return None
    lock_path = run_dir / LOCK_FILE
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise in_use(run_dir, _lock_pid(lock_path)) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release_lock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # releases the flock


def open_error(e: duckdb.Error, run_dir: Path, path: Path, *, reading: bool = False) -> Exception:
    """What DuckDB's failure to open `path`, the store of `run_dir`, means to the user."""
    message = str(e)
    if "different configuration" in message:
        # This process already holds the file through another connection (e.g. a writer).
        return in_use(run_dir, os.getpid())
    if "lock" not in message.lower():
        return RunStoreError(f"cannot open run store {path}: {message}")
    match = _PID.search(message)
    pid = int(match.group(1)) if match else _lock_pid(run_dir / LOCK_FILE)
    return in_use(run_dir, pid, reading=reading)
