"""Publish a run: deterministic Parquet shards and a dataset card, to a local folder or the Hub.

A release is staged first (the exact files, in the Hub's layout, with their hashes); syncing then
compares hashes with what the target holds, so an unchanged run changes nothing and a changed run
updates in one commit: adds for new or changed files, deletes for shards that no longer exist.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pydantic import ValidationError

from crome import __version__
from crome.builder.hub.card import CardInputs, SplitFacts, public_summary, render_card
from crome.builder.hub.splits import SplitError, SplitReport
from crome.builder.hub.splits import split_rows as leak_free_split
from crome.schemas.hashing import file_sha256
from crome.schemas import ROW_COLUMNS, DatasetRow, hf_features, to_table

CARD = "README.md"
# The shard names `datasets.push_to_hub` writes; anything else in data/ is not ours to delete.
SHARD_RE = re.compile(r"^data/(?P<split>\w+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")
DEFAULT_MAX_SHARD_SIZE = "500MB"  # the datasets default: big enough for few shards, small enough to stream
# Rows per Parquet row group: small enough for the dataset viewer and DuckDB range reads on long texts.
ROW_GROUP_SIZE = 1000
_KIND_RANK = {"original": 0, "causal": 1, "neutral": 2}


class PublishError(Exception):
    """A run that cannot be published, or a target that cannot be written; the message says which and why."""


@dataclass(frozen=True)
class StagedFile:
    path: str  # path in the repo, posix
    sha256: str
    git_sha1: str  # git blob id: how the Hub names a file that is not stored in LFS
    size: int


@dataclass
class Release:
    """The files of one publication, staged under `root` in the Hub's layout."""

    root: Path
    files: dict[str, StagedFile]
    splits: dict[str, int]  # rows per split
    license: str
    warnings: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(self.splits.values())

    def commit_message(self) -> str:
        parts = ", ".join(f"{name} {n}" for name, n in self.splits.items())
        return f"crome {__version__}: publish {self.rows} rows ({parts})"


@dataclass
class SyncResult:
    target: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    commit_url: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.deleted)


# ---------------------------------------------------------------- reading the run


def read_summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "summary.json"
    if not path.is_file():
        raise PublishError(f"{run_dir} has no summary.json: is it a run dir written by `crome build --out`?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PublishError(f"{path} is not valid JSON: {e}") from None


def read_rows(run_dir: Path) -> list[DatasetRow]:
    """Every row of RUN_DIR/data/*.parquet, validated against the data contract."""
    files = sorted((run_dir / "data").glob("*.parquet"))
    if not files:
        raise PublishError(f"{run_dir} has no data/*.parquet: is it a run dir written by `crome build --out`?")
    rows: list[DatasetRow] = []
    for f in files:
        table = pq.read_table(f)
        missing = [c for c in ROW_COLUMNS if c not in table.column_names]
        extra = [c for c in table.column_names if c not in ROW_COLUMNS]
        if missing or extra:
            raise PublishError(f"{f.name}: columns differ from the data contract (missing {missing}, unexpected {extra})")
        for i, record in enumerate(table.to_pylist()):
            try:
                rows.append(DatasetRow.model_validate(record))
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(p) for p in err["loc"]) or "row"
                raise PublishError(f"{f.name} row {i} (id {record.get('id')}): {where}: {err['msg']}") from None
    return rows


def rejection_counts(run_dir: Path, summary: dict[str, Any]) -> Counter:
    """(stage, reason) -> count, from rejections.parquet, else from the summary's counts."""
    path = run_dir / "rejections.parquet"
    if path.is_file():
        table = pq.read_table(path, columns=["stage", "reason"])
        return Counter(zip(table.column("stage").to_pylist(), table.column("reason").to_pylist()))
    by_stage = (summary.get("counts") or {}).get("rejections_by_stage") or {}
    return Counter({(stage, reason): n for stage, reasons in by_stage.items() for reason, n in reasons.items()})


def resolve_license(summary: dict[str, Any], requested: str | None) -> tuple[str, list[str]]:
    """The source's licence when known, else --license, else "other" with a warning."""
    source_license = ((summary.get("source") or {}).get("license") or "").strip().lower()
    if source_license:
        if requested and requested.strip().lower() != source_license:
            return source_license, [f"the source's licence {source_license!r} is kept; --license {requested!r} ignored"]
        return source_license, []
    if requested:
        return requested.strip().lower(), []
    return "other", ["the source's licence is unknown and no --license was given: the card says 'other'"]


# ---------------------------------------------------------------- splits and shards


def split_rows(rows: list[DatasetRow], test_fraction: float, seed: int) -> tuple[dict[str, list[DatasetRow]], SplitReport | None, list[str]]:
    """{"train": [...]} or {"train": [...], "test": [...]} sharing no prompt or answer text; sorted so row order never matters."""
    if not 0.0 <= test_fraction < 1.0:
        raise PublishError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    # Sorted by source pair, then kind: deterministic bytes whatever order the build wrote rows in.
    rows = sorted(rows, key=lambda r: (r.source_id, _KIND_RANK.get(r.kind, 9), r.augmentation, r.attribute or "", r.id))
    if test_fraction == 0.0:
        return {"train": rows}, None, []
    try:
        return leak_free_split(rows, test_fraction, seed)
    except SplitError as e:
        raise PublishError(str(e)) from None


def _parse_size(size: str | int) -> int:
    from datasets.utils.py_utils import convert_file_size_to_int

    try:
        return convert_file_size_to_int(size)
    except ValueError:
        raise PublishError(f"--max-shard-size {size!r} is not a size like 500MB") from None


def _hf_schema_metadata() -> dict[bytes, bytes]:
    # What `datasets` writes itself: load_dataset reads the features back exactly from it.
    return {b"huggingface": json.dumps({"info": {"features": hf_features(DatasetRow).to_dict()}}).encode()}


def write_shards(rows: list[DatasetRow], split: str, root: Path, max_shard_size: int) -> tuple[list[str], int]:
    """Write data/{split}-NNNNN-of-NNNNN.parquet under root; (paths in repo, Arrow bytes)."""
    table = to_table(rows, DatasetRow).replace_schema_metadata(_hf_schema_metadata())
    n_shards = max(1, math.ceil(table.nbytes / max_shard_size)) if len(rows) else 1
    n_shards = min(n_shards, max(1, len(rows)))
    per_shard = math.ceil(len(rows) / n_shards) if rows else 0
    paths = []
    (root / "data").mkdir(parents=True, exist_ok=True)
    for i in range(n_shards):
        path = f"data/{split}-{i:05d}-of-{n_shards:05d}.parquet"
        shard = table.slice(i * per_shard, per_shard)
        pq.write_table(shard, root / path, compression="zstd", row_group_size=ROW_GROUP_SIZE, write_statistics=True)
        paths.append(path)
    return paths, table.nbytes


def _digest(root: Path, path: str) -> StagedFile:
    data = (root / path).read_bytes()
    # The Hub names a plain git file by its blob id and an LFS file by its sha256: keep both to compare either.
    git = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    return StagedFile(path=path, sha256=file_sha256(str(root / path)), git_sha1=git, size=len(data))


def stage_release(
    run_dir: Path,
    staging: Path,
    *,
    repo_id: str,
    test_fraction: float = 0.0,
    seed: int | None = None,
    license: str | None = None,
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
) -> Release:
    """Write the release (shards + README.md) under staging and hash every file."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    rows = read_rows(run_dir)
    duplicates = sum(n - 1 for n in Counter(r.id for r in rows).values() if n > 1)
    split_seed = int(summary.get("seed") or 0) if seed is None else seed
    splits, split_report, warnings = split_rows(rows, test_fraction, split_seed)
    license_id, license_warnings = resolve_license(summary, license)
    warnings = license_warnings + warnings
    status = summary.get("status", "complete")
    if status != "complete":
        warnings.append(f"the build did not complete ({status}): the card says so; rerun `crome build` to finish it")
    if duplicates:
        warnings.append(f"{duplicates} rows repeat an id already published in this run (see `crome audit`)")

    limit = _parse_size(max_shard_size)
    facts = []
    for name, split in splits.items():
        paths, nbytes = write_shards(split, name, staging, limit)
        facts.append(SplitFacts(name=name, rows=split, num_bytes=nbytes, files=paths))
    download_size = sum((staging / p).stat().st_size for f in facts for p in f.files)
    card = render_card(CardInputs(
        repo_id=repo_id, license=license_id, summary=public_summary(summary), splits=facts,
        download_size=download_size, rejections=rejection_counts(run_dir, summary),
        test_fraction=test_fraction, split_seed=split_seed, split=split_report,
    ))
    # The run dir's absolute location is the one local path a card could pick up from a careless field.
    for local in {str(run_dir.resolve()), str(run_dir.resolve().parent)}:
        card = card.replace(local, run_dir.name)
    (staging / CARD).write_text(card, encoding="utf-8")

    paths = [CARD] + [p for f in facts for p in f.files]
    return Release(
        root=staging, files={p: _digest(staging, p) for p in paths},
        splits={f.name: len(f.rows) for f in facts}, license=license_id, warnings=warnings,
    )


# ---------------------------------------------------------------- targets


def is_local_target(to: str) -> bool:
    """`./folder`, `/abs/folder`, `~/x`, `file://...` are folders; `ORG/NAME` and `hf://datasets/ORG/NAME` are Hub repos."""
    if to.startswith("hf://"):
        return False
    if to.startswith((".", "/", "~", "file://")) or "\\" in to:
        return True
    return to.count("/") != 1


def hub_repo_id(to: str) -> str:
    repo_id = to.removeprefix("hf://").removeprefix("datasets/").strip("/")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise PublishError(f"--to {to!r} is not a Hub dataset id ORG/NAME: {e}") from None
    if "/" not in repo_id:
        raise PublishError(f"--to {to!r}: give the Hub id as ORG/NAME (or ./{to} for a local folder)")
    return repo_id


def sync_to_folder(release: Release, folder: Path) -> SyncResult:
    """Make folder hold exactly the release's files (other files than README.md and shards are left alone)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    result = SyncResult(target=str(folder))
    for path, staged in release.files.items():
        dest = folder / path
        if dest.is_file():
            if file_sha256(str(dest)) == staged.sha256:
                result.unchanged.append(path)
                continue
            result.updated.append(path)
        else:
            result.added.append(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copyfile(release.root / path, tmp)
        os.replace(tmp, dest)
    data = folder / "data"
    if data.is_dir():
        for f in sorted(data.iterdir()):
            path = f"data/{f.name}"
            if SHARD_RE.match(path) and path not in release.files:
                f.unlink()
                result.deleted.append(path)
    return result


def _remote_matches(remote: Any, staged: StagedFile) -> bool:
    lfs = getattr(remote, "lfs", None)
    if lfs is not None:
        return lfs.sha256 == staged.sha256
    return remote.blob_id == staged.git_sha1


def sync_to_hub(release: Release, repo_id: str, *, private: bool = False, revision: str | None = None, api: Any = None) -> SyncResult:
    """One commit with the changed files and the stale shards deleted; no commit when nothing changed.

    The token comes from HF_TOKEN or the user's saved login, resolved by huggingface_hub; it is never printed.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.hf_api import RepoFile

    api = api or HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    if revision and revision != "main":
        api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
    # Compare against one fixed commit and commit on top of it, so a concurrent push fails instead of mixing.
    parent = api.repo_info(repo_id, repo_type="dataset", revision=revision).sha
    remote = {
        f.path: f
        for f in api.list_repo_tree(repo_id, repo_type="dataset", revision=parent or revision, recursive=True)
        if isinstance(f, RepoFile)
    }
    result = SyncResult(target=f"hf://datasets/{repo_id}" + (f"@{revision}" if revision else ""))
    operations: list[Any] = []
    for path, staged in release.files.items():
        if path in remote and _remote_matches(remote[path], staged):
            result.unchanged.append(path)
            continue
        (result.updated if path in remote else result.added).append(path)
        operations.append(CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(release.root / path)))
    for path in sorted(remote):
        if SHARD_RE.match(path) and path not in release.files:
            result.deleted.append(path)
            operations.append(CommitOperationDelete(path_in_repo=path))
    if operations:
        info = api.create_commit(
            repo_id, operations=operations, commit_message=release.commit_message(),
            repo_type="dataset", revision=revision, parent_commit=parent,
        )
        result.commit_url = getattr(info, "commit_url", None)
    return result


def publish(
    run_dir: Path | str,
    to: str,
    *,
    private: bool = False,
    revision: str | None = None,
    test_fraction: float = 0.0,
    seed: int | None = None,
    license: str | None = None,
    repo_id: str | None = None,
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
    api: Any = None,
) -> tuple[Release, SyncResult]:
    """Publish RUN_DIR to a Hub repo (ORG/NAME) or a local folder laid out as on the Hub."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PublishError(f"run dir {run_dir} does not exist")
    local = is_local_target(to)
    if local:
        folder = Path(to.removeprefix("file://")).expanduser()
        if folder.resolve() == run_dir.resolve():
            raise PublishError("--to is the run dir itself: publish to another folder")
        # The card's snippets name a Hub id; a folder has none until pushed, so say which.
        card_repo = repo_id or f"ORG/{folder.resolve().name}"
    else:
        card_repo = hub_repo_id(to)
        if repo_id and repo_id != card_repo:
            raise PublishError(f"--repo-id {repo_id} differs from --to {to}")
    with tempfile.TemporaryDirectory(prefix="crome-publish-") as tmp:
        release = stage_release(
            run_dir, Path(tmp), repo_id=card_repo, test_fraction=test_fraction, seed=seed,
            license=license, max_shard_size=max_shard_size,
        )
        if local:
            result = sync_to_folder(release, folder)
        else:
            result = sync_to_hub(release, card_repo, private=private, revision=revision, api=api)
    return release, result
