"""The folders crome writes: which files are crome's, and replacing them so that a kill never leaves half.

Every folder crome writes into (a run, a merged or filtered run, a published dataset folder) holds
a marker, `.crome.json`, written when crome creates (or adopts) the folder. It names the kind of
output and the command that made it, and lists every file crome wrote there. A command writes only
into a folder that is new, empty or marked for its kind of output, and changes or deletes only the
files the marker lists; anything else in the folder is the user's and stays byte-identical. A folder
an older crome wrote (no marker, but recognisably a crome output of that kind) is adopted: its
crome files are listed in a new marker, everything else in it stays foreign.

The outputs of a command (the export) are replaced as one transaction:

1. the new files are written under `.crome-staging/` inside the folder (same filesystem, so renames);
2. the marker records the plan, renames and deletions (the commit point);
3. the renames and deletions run;
4. the marker records the export (its id, and every file's size and sha256) and drops the plan.

A kill before 2 leaves the previous export untouched (the next export clears the staging folder);
a kill after 2 leaves a plan that the next writer of the folder completes (`recover`). Readers
(`read_export`) take the files the export record names, check them, and refuse a folder whose plan
is pending, with one line saying what to re-run.

This module is a leaf (it imports nothing else of crome but the version): run, hub and train all
write folders, and the lowest place all three may import is the bottom of the package.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from crome import __version__

try:
    import fcntl
except ImportError:  # Windows: no flock; the run store's own DuckDB lock still keeps a second build out.
    fcntl = None  # type: ignore[assignment]

MARKER = ".crome.json"
STAGING = ".crome-staging"
_INTERNAL = (MARKER, MARKER + ".tmp", STAGING)


class OutputError(ValueError):
    """A folder crome may not write into, or outputs it cannot read as one export; the message is one line."""


class IncompleteExport(OutputError):
    """The folder's last export is unfinished or its files changed since: re-run the command that wrote it."""


@dataclass(frozen=True)
class Layout:
    """What one kind of output folder holds."""

    kind: str  # "run", "filtered", "dataset"
    what: str  # how a message names it: "a run folder (crome build, crome merge)"
    lock: str  # the file whose flock is the folder's writer lock
    own: tuple[str, ...] = ()  # files and folders the command creates besides its exports
    exports: str = r"$^"  # regex of the paths an export writes: owned ones are replaced or deleted by the next
    # A folder an older crome wrote (no marker): adopted when this says yes.
    legacy: Callable[[Path], bool] | None = field(default=None, compare=False)

    def is_export(self, rel: str) -> bool:
        return re.fullmatch(self.exports, rel) is not None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def file_digest(path: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return {"size": size, "sha256": h.hexdigest()}


def _write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write to a temporary name, then rename: a kill leaves the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _walk(folder: Path) -> Iterator[str]:
    """Every file (and empty folder) under `folder`, relative, in a stable order."""
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.is_dir() and not entry.is_symlink():
            inner = list(_walk(entry))
            yield from (f"{entry.name}/{r}" for r in inner) if inner else [entry.name + "/"]
        else:
            yield entry.name


def read_marker(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise OutputError(f"{path} is not a crome marker (expected JSON, found {type(e).__name__}): move it away or use another folder") from None
    if not isinstance(marker, dict) or marker.get("marker") != "crome" or not isinstance(marker.get("files"), list):
        raise OutputError(f"{path} is not a crome marker (expected the JSON crome writes): move it away or use another folder")
    return marker


class Folder:
    """An output folder crome owns (part of it: the files its marker lists)."""

    def __init__(self, path: Path, layout: Layout, marker: dict[str, Any]) -> None:
        self.path = path
        self.layout = layout
        self.marker = marker

    @property
    def files(self) -> set[str]:
        return set(self.marker["files"])

    @property
    def export(self) -> dict[str, Any] | None:
        return self.marker.get("export")

    def owns(self, rel: str) -> bool:
        return rel in _INTERNAL or rel in self.marker["files"]

    def check_free(self, rel: str) -> None:
        """`rel` may be written: absent, or crome's own."""
        if (self.path / rel).exists() and not self.owns(rel):
            raise OutputError(f"{self.path / rel} exists and crome did not write it: move it away or use another folder")

    def own(self, *rels: str) -> None:
        new = [r for r in rels if not self.owns(r)]
        for rel in new:
            self.check_free(rel)
        if new:
            self.marker["files"] = sorted(self.files | set(new))
            self.save()

    def disown(self, rel: str) -> None:
        """`rel` is not crome's (any more): never replaced, never deleted. Saved with the next marker write."""
        self.marker["files"] = sorted(self.files - {rel})

    def adopt(self, rel: str) -> None:
        """`rel` is crome's to replace from now on, whoever wrote it (the user said so, e.g. --overwrite-card)."""
        self.marker["files"] = sorted(self.files | {rel})

    def save(self) -> None:
        _write_json(self.path / MARKER, self.marker)


def claim(path: str | Path, layout: Layout, writer: str, *, option: str = "--out", create: bool = True) -> Folder:
    """The folder at `path` for `writer` (e.g. "crome build") to write: new, empty, marked for its kind, or adopted.

    Raises OutputError naming the first foreign file otherwise. With `create=False` nothing is
    written yet (a later `claim` creates it): the check alone, before a long job starts.
    """
    folder = Path(path).expanduser()
    hint = f"give {option} a new or empty folder, or one {layout.what} made"
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{option} {path} is a file; expected a folder: {hint}")
    marker = read_marker(folder) if folder.is_dir() else None
    if marker is not None:
        if marker.get("kind") != layout.kind:
            raise OutputError(f"{option} {path} was written by `{marker.get('written_by', 'crome')}`, not by {layout.what}: {hint}")
        marked = Folder(folder, layout, marker)
        if create:
            marked.own(*layout.own)  # names a newer crome added to the layout
        return marked
    owned: set[str] = set()
    if folder.is_dir() and any(folder.iterdir()):
        if layout.legacy is None or not layout.legacy(folder):
            first = next((r.rstrip("/") for r in _walk(folder)), "")
            raise OutputError(f"{option} {path} holds files crome did not write ({folder / first}): {hint}")
        owned = {r for r in layout.own if (folder / r).exists()} | {r for r in _walk(folder) if layout.is_export(r)}
    marker = {
        "marker": "crome",
        "about": "crome owns the files listed here and only those; it never changes or deletes anything else in this folder",
        "kind": layout.kind,
        "written_by": writer,
        "crome_version": __version__,
        "created_at": _now(),
        "files": sorted(owned),
    }
    if not create:
        return Folder(folder, layout, marker)
    folder.mkdir(parents=True, exist_ok=True)
    claimed = Folder(folder, layout, marker)
    claimed.save()
    claimed.own(*layout.own)
    return claimed


# ---------------------------------------------------------------- the writer lock


def _lock_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


@contextmanager
def folder_lock(folder: Path, name: str, *, what: str = "folder") -> Iterator[None]:
    """Hold the exclusive flock of `folder/name` (the file then names this pid); refuse at once if another holds it."""
    if fcntl is None:
        yield
        return
    path = Path(folder) / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _lock_pid(path)
            raise OutputError(f"{what} {folder} is in use by another process (pid {pid if pid else 'unknown'}); "
                              "wait for it to finish, or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def lock_holder(folder: Path, name: str) -> int | None:
    """The pid holding `folder/name`'s flock (0 when it cannot be told), or None when no process holds it.

    Probes with a shared lock released at once; creates nothing.
    """
    path = Path(folder) / name
    if fcntl is None or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _lock_pid(path) or 0
    finally:
        os.close(fd)  # releases the probe's lock, if it got one
    return None


# ---------------------------------------------------------------- exports


def _apply(folder: Path, plan: dict[str, Any]) -> None:
    """Run a recorded plan; idempotent, so a plan interrupted halfway can run again."""
    for rel in plan["moves"]:
        staged = folder / STAGING / rel
        if staged.exists():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, folder / rel)
    for rel in plan["deletes"]:
        (folder / rel).unlink(missing_ok=True)


def _finish(owned: Folder, plan: dict[str, Any]) -> None:
    _apply(owned.path, plan)
    owned.marker["files"] = sorted(owned.files - set(plan["deletes"]))
    owned.marker["export"] = plan["export"]
    owned.marker.pop("pending", None)
    owned.save()
    shutil.rmtree(owned.path / STAGING, ignore_errors=True)


def recover(owned: Folder) -> bool:
    """Complete an export whose commit was interrupted (call it holding the folder's writer lock); True if one was."""
    plan = owned.marker.get("pending")
    if not plan:
        return False
    _finish(owned, plan)
    return True


class Export:
    """One export of a folder's outputs: stage files with `path`/`copy`/`keep`, then `commit`.

    Owned files matching the layout's export pattern that are not part of the new export are
    deleted at commit (a shard the new export no longer has); nothing else is.
    """

    def __init__(self, owned: Folder, writer: str) -> None:
        recover(owned)
        self.owned = owned
        self.writer = writer
        self.staging = owned.path / STAGING
        shutil.rmtree(self.staging, ignore_errors=True)  # leftovers of an export killed before its commit point
        self.staging.mkdir(parents=True)
        self.staged: list[str] = []
        self.kept: dict[str, dict[str, Any]] = {}

    def path(self, rel: str) -> Path:
        """Where to write `rel` now; it replaces the folder's `rel` at commit."""
        self.owned.check_free(rel)
        self.staged.append(rel)
        target = self.staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def copy(self, rel: str, source: Path) -> None:
        shutil.copyfile(source, self.path(rel))

    def keep(self, rel: str) -> None:
        """`rel` is already in the folder as it should be: part of the new export, not rewritten."""
        self.owned.check_free(rel)
        old = (self.owned.export or {}).get("files", {}).get(rel)
        current = self.owned.path / rel
        self.kept[rel] = old if old and current.stat().st_size == old["size"] else file_digest(current)

    def stale(self) -> list[str]:
        """crome's outputs in the folder that the new export does not have: deleted at commit."""
        new = set(self.staged) | set(self.kept)
        return sorted(r for r in self.owned.files if self.owned.layout.is_export(r) and r not in new)

    def commit(self, stage: Callable[[str], None] = lambda name: None) -> dict[str, Any]:
        """Replace the outputs; returns the export record (id, files with size and sha256)."""
        files = {rel: file_digest(self.staging / rel) for rel in self.staged} | self.kept
        export_id = hashlib.sha256(json.dumps(sorted((r, d["sha256"]) for r, d in files.items())).encode()).hexdigest()[:16]
        stale = self.stale()
        record = {"id": export_id, "written_by": self.writer, "written_at": _now(), "files": dict(sorted(files.items()))}
        plan = {"moves": sorted(self.staged), "deletes": stale, "export": record}
        stage("committing")
        self.owned.marker["files"] = sorted(self.owned.files | set(self.staged))
        self.owned.marker["pending"] = plan
        self.owned.save()  # the commit point: from here the new export is what the folder holds
        _finish(self.owned, plan)
        stage("committed")
        return record

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


@dataclass(frozen=True)
class ExportRecord:
    folder: Path
    kind: str
    written_by: str
    id: str
    written_at: str
    files: dict[str, dict[str, Any]]

    def paths(self, pattern: str = r".*") -> list[Path]:
        return [self.folder / rel for rel in self.files if re.fullmatch(pattern, rel)]


def read_export(folder: str | Path, *, hashes: bool = False) -> ExportRecord | None:
    """The folder's last complete export, its files checked (size, or sha256 with `hashes`); None if unmarked."""
    folder = Path(folder)
    marker = read_marker(folder)
    if marker is None:
        return None
    writer = marker.get("written_by", "crome")
    if marker.get("pending"):
        raise IncompleteExport(f"{folder}: its last export was interrupted while its files were being replaced; "
                               f"re-run the `{writer}` that wrote it to finish it")
    export = marker.get("export")
    if not export:
        raise IncompleteExport(f"{folder} holds no finished export yet: run (or re-run) the `{writer}` that writes it")
    for rel, want in export["files"].items():
        path = folder / rel
        if not path.is_file():
            raise IncompleteExport(f"{path} is missing: the folder is not the export `{export.get('written_by', writer)}` "
                                   f"wrote at {export.get('written_at')}; re-run it")
        have = file_digest(path) if hashes else {"size": path.stat().st_size}
        if any(have[k] != want[k] for k in have):
            raise IncompleteExport(f"{path} changed after `{export.get('written_by', writer)}` wrote it at "
                                   f"{export.get('written_at')}: re-run it rather than editing its outputs")
    return ExportRecord(folder=folder, kind=marker["kind"], written_by=export.get("written_by", writer), id=export["id"],
                        written_at=export.get("written_at", ""), files=export["files"])


__all__ = [
    "MARKER", "STAGING", "Export", "ExportRecord", "Folder", "IncompleteExport", "Layout", "OutputError", "atomic_write",
    "claim", "file_digest", "folder_lock", "lock_holder", "read_export", "read_marker", "recover",
]
