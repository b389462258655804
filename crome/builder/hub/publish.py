"""Publish a run: deterministic Parquet shards and a dataset card, to a local folder or the Hub.

The run is read as one export (crome.outputs: the files its last export record names, each
checked by sha256) under the run's writer lock, so no build re-exports while it is read and a run
whose export is unfinished or edited is refused. A release is staged first (the exact files, in the
Hub's layout, with their hashes); syncing (crome.builder.hub.sync) then compares hashes with what
the target holds, so an unchanged run changes nothing and a changed run updates in one commit, and
changes only files crome wrote.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyarrow.parquet as pq
from pydantic import ValidationError

from crome.builder.hub.card import CardInputs, SplitFacts, public_summary, render_card
from crome.builder.hub.splits import SplitError, SplitReport
from crome.builder.hub.splits import split_rows as leak_free_split
from crome.builder.hub.sync import (
    CARD, SHARD_RE, PublishError, Release, StagedFile, SyncResult, hub_repo_id, is_local_target, local_folder,
    sync_to_folder, sync_to_hub,
)
from crome.builder.run.progress import read_progress
from crome.builder.store import LOCK_FILE
from crome.outputs import OutputError, folder_lock, read_export
from crome.schemas import ROW_COLUMNS, DatasetRow, hf_features, to_table
from crome.schemas.hashing import file_sha256, stable_hash

DEFAULT_MAX_SHARD_SIZE = "500MB"  # the datasets default: big enough for few shards, small enough to stream
# Rows per Parquet row group: small enough for the dataset viewer and DuckDB range reads on long texts.
ROW_GROUP_SIZE = 1000
_KIND_RANK = {"original": 0, "causal": 1, "neutral": 2}
RUN_KINDS = ("run", "filtered")


# ---------------------------------------------------------------- reading the run


@dataclass
class RunExport:
    """What one export of a run holds, read together."""

    summary: dict[str, Any]
    rows: list[DatasetRow]
    rejections: Counter  # (stage, reason) -> count
    export_id: str
    warnings: list[str]


def read_summary(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise PublishError(f"{path} is not valid JSON: {e}") from None


def read_rows(files: list[Path]) -> list[DatasetRow]:
    """Every row of the run's data shards, validated against the data contract."""
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


def rejection_counts(path: Path | None, summary: dict[str, Any]) -> Counter:
    """(stage, reason) -> count, from rejections.parquet, else from the summary's counts."""
    if path is not None:
        table = pq.read_table(path, columns=["stage", "reason"])
        return Counter(zip(table.column("stage").to_pylist(), table.column("reason").to_pylist()))
    by_stage = (summary.get("counts") or {}).get("rejections_by_stage") or {}
    return Counter({(stage, reason): n for stage, reasons in by_stage.items() for reason, n in reasons.items()})


def _unfinished_build(run_dir: Path) -> str | None:
    """A later build of this run that stopped before exporting (killed): what publish says about it."""
    progress = read_progress(run_dir)
    if not progress or progress.get("stage") == "done":
        return None
    return (f"a later build of this run stopped at stage {progress.get('stage')!r} (last seen {progress.get('updated_at')}) "
            "before finishing: this publishes the last complete export; re-run that build to publish its result")


def read_run(run_dir: Path) -> RunExport:
    """Data, summary and rejections of the run's last complete export, checked and read under its writer lock."""
    try:
        record = read_export(run_dir)
    except OutputError as e:
        raise PublishError(str(e)) from None
    if record is None:
        if (run_dir / "summary.json").is_file() or (run_dir / "crome.duckdb").is_file():
            raise PublishError(f"{run_dir} was written by an older crome (it has no .crome.json export record): re-run the "
                               "same `crome build` to re-export it (every oracle call replays from its cache; nothing is paid)")
        raise PublishError(f"{run_dir} is not a run folder: expected the --out folder of `crome build`, `crome merge` or `crome filter`")
    if record.kind not in RUN_KINDS:
        raise PublishError(f"{run_dir} is a folder `{record.written_by}` wrote, not a run: publish the run folder itself")
    try:
        with folder_lock(run_dir, LOCK_FILE, what="run"):
            record = read_export(run_dir, hashes=True)  # again, under the lock, every byte checked
            if "summary.json" not in record.files:
                raise PublishError(f"{run_dir}: its export has no summary.json; re-run the `{record.written_by}` that wrote it")
            summary = read_summary(run_dir / "summary.json")
            data = sorted(record.paths(r"data/[^/]+\.parquet"))
            if not data:
                raise PublishError(f"{run_dir}: its export has no data/*.parquet; re-run the `{record.written_by}` that wrote it")
            rows = read_rows(data)
            rejections = rejection_counts(run_dir / "rejections.parquet" if "rejections.parquet" in record.files else None, summary)
            unfinished = _unfinished_build(run_dir) if record.kind == "run" else None
    except OutputError as e:
        raise PublishError(str(e)) from None
    return RunExport(summary=summary, rows=rows, rejections=rejections, export_id=record.id, warnings=[unfinished] if unfinished else [])


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
    run: RunExport | None = None,
) -> Release:
    """Write the release (shards + README.md) under staging and hash every file."""
    run_dir = Path(run_dir)
    run = run or read_run(run_dir)
    summary, rows = run.summary, run.rows
    duplicates = sum(n - 1 for n in Counter(r.id for r in rows).values() if n > 1)
    split_seed = int(summary.get("seed") or 0) if seed is None else seed
    splits, split_report, warnings = split_rows(rows, test_fraction, split_seed)
    license_id, license_warnings = resolve_license(summary, license)
    warnings = run.warnings + license_warnings + warnings
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
        download_size=download_size, rejections=run.rejections,
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


def publish(
    run_dir: Path | str,
    to: str,
    *,
    private: bool = True,
    revision: str | None = None,
    test_fraction: float = 0.0,
    seed: int | None = None,
    license: str | None = None,
    repo_id: str | None = None,
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
    overwrite_card: bool = False,
    announce: Callable[[str], None] = lambda message: None,
    api: Any = None,
) -> tuple[Release, SyncResult]:
    """Publish RUN_DIR to a Hub repo (ORG/NAME, private unless `private=False`) or a local folder laid out as on the Hub.

    `announce` hears which target was chosen before anything is read or written.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PublishError(f"run dir {run_dir} does not exist" if not run_dir.exists() else f"{run_dir} is a file; expected a run folder")
    local = is_local_target(to)
    if local:
        folder = local_folder(to)
        if folder.resolve() == run_dir.resolve():
            raise PublishError("--to is the run dir itself: publish to another folder")
        # The card's snippets name a Hub id; a folder has none until pushed, so say which.
        card_repo = repo_id or f"ORG/{folder.resolve().name}"
        announce(f"publishing to the local folder {folder} (a Hub repo is given as ORG/NAME)")
    else:
        card_repo = hub_repo_id(to)
        if repo_id and repo_id != card_repo:
            raise PublishError(f"--repo-id {repo_id} differs from --to {to}")
        visibility = "private" if private else "public"
        announce(f"publishing to the Hub dataset repo {card_repo}, {visibility} if it is created "
                 f"({'--public' if private else '--private'} for {'public' if private else 'private'}; a local folder is ./{to})")
    run = read_run(run_dir)
    with tempfile.TemporaryDirectory(prefix="crome-publish-") as tmp:
        release = stage_release(
            run_dir, Path(tmp), repo_id=card_repo, test_fraction=test_fraction, seed=seed,
            license=license, max_shard_size=max_shard_size, run=run,
        )
        if local:
            result = sync_to_folder(release, folder, overwrite_card=overwrite_card)
        else:
            result = sync_to_hub(release, card_repo, private=private, revision=revision, overwrite_card=overwrite_card, api=api)
    return release, result


__all__ = [
    "CARD", "DEFAULT_MAX_SHARD_SIZE", "SHARD_RE", "PublishError", "Release", "RunExport", "StagedFile", "SyncResult",
    "in_test_split", "is_local_target", "publish", "read_run", "split_rows", "stage_release",
]
