"""Readers: generators of (row index, row dict or `_Unreadable`), for local files, dataset folders and Hub ids.

They raise `SourceError` when the file itself cannot be read; a row that cannot be decoded is
yielded as an `_Unreadable` so the stream can quarantine it and go on.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import os
import re
import sys
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from crome.builder.sources.errors import SourceError, _first_line, _Unreadable
from crome.builder.sources.fields import _kind

FILE_TYPES = ".jsonl, .jsonl.gz, .json, .parquet or .csv"
PARQUET_BATCH_ROWS = 512
# Suffixes that mean the user named a file, so a missing one is "no such file", not a Hub id.
_FILE_SUFFIXES = {".jsonl", ".json", ".gz", ".parquet", ".csv", ".tsv", ".txt", ".arrow", ".xlsx", ".zip", ".ndjson"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")

_READ_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, UnicodeDecodeError, zlib.error, csv.Error)


def _read_jsonl(path: Path, name: str, opener: Callable[..., Any] = open) -> Iterator[tuple[int, Any]]:
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            index = 0
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue  # blank lines (a trailing newline) are not rows
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    row = _Unreadable("bad_json", f"line {lineno} is not valid JSON ({e.msg})")
                except RecursionError:
                    row = _Unreadable("bad_json", f"line {lineno} nests lists or objects deeper than a JSON reader can follow")
                yield index, row
                index += 1
    except _READ_ERRORS as e:
        raise SourceError(f"cannot read {name}: {e}") from None


def _read_json(path: Path, name: str) -> Iterator[tuple[int, Any]]:
    # A .json file holds one JSON list; many Hub datasets also name JSON Lines files .json.
    try:
        with open(path, encoding="utf-8") as f:
            first_line = f.readline()
            while first_line and not first_line.strip():
                first_line = f.readline()
        if not first_line.lstrip().startswith("["):
            try:
                if isinstance(json.loads(first_line), dict):
                    yield from _read_jsonl(path, name)
                    return
            except json.JSONDecodeError:
                pass
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise SourceError(f"cannot read {name}: not valid JSON (line {e.lineno}: {e.msg})") from None
    except RecursionError:
        raise SourceError(f"cannot read {name}: it nests lists or objects deeper than a JSON reader can follow") from None
    except _READ_ERRORS as e:
        raise SourceError(f"cannot read {name}: {e}") from None
    if not isinstance(data, list):
        raise SourceError(f"cannot read {name}: expected a JSON list of row objects (or JSON Lines), found {_kind(data)}")
    for index, row in enumerate(data):
        yield index, row


def _read_parquet(path: Path, name: str) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        index = 0
        with pq.ParquetFile(path) as pf:
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
                for row in batch.to_pylist():
                    yield index, row
                    index += 1
    except (pa.ArrowException, *_READ_ERRORS) as e:
        raise SourceError(f"cannot read {name}: not a readable Parquet file ({e})") from None


def _read_csv(path: Path, name: str) -> Iterator[tuple[int, Any]]:
    # Answers are long; the csv module's default 128 KiB field limit would reject real rows.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            for index, row in enumerate(csv.DictReader(f)):
                row.pop(None, None)  # cells beyond the header
                yield index, row
    except _READ_ERRORS as e:
        raise SourceError(f"cannot read {name}: {e}") from None


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """`datasets` logs its own copy of an error before raising it: the user gets ours, one line."""
    import datasets

    level = datasets.logging.get_verbosity()
    if logging.getLogger().isEnabledFor(logging.DEBUG):  # crome -v: everything
        yield
        return
    datasets.logging.set_verbosity(logging.CRITICAL)
    try:
        yield
    finally:
        datasets.logging.set_verbosity(level)


def _read_datasets(spec: str, name: str, split: str | None, config: str | None, revision: str | None, *, folder: bool = False) -> Iterator[tuple[int, Any]]:
    """Rows of a Hub dataset (or a local dataset folder) through `datasets.load_dataset`, streamed."""
    import datasets

    kwargs: dict[str, Any] = {"streaming": True}
    if config is not None:
        kwargs["name"] = config
    if split is not None:
        kwargs["split"] = split
    if revision is not None:
        kwargs["revision"] = revision
    what = f"the folder {name} (expected {FILE_TYPES} files of preference rows)" if folder else name
    with _quiet_datasets():
        try:
            ds = datasets.load_dataset(spec, **kwargs)
        except Exception as e:  # datasets raises many unrelated types (network, config, file); all mean "cannot load"
            verb = "read" if folder else "load"
            raise SourceError(f"cannot {verb} {what}{'' if folder else ' with datasets.load_dataset'}: {_first_line(e)}") from None
        if isinstance(ds, Mapping):
            splits = list(ds)
            if "train" in ds or len(splits) == 1:
                ds = ds["train" if "train" in ds else splits[0]]
            else:
                raise SourceError(f"{name} has splits: {', '.join(splits)}; choose one with split (--split)")
        try:
            for index, row in enumerate(ds):
                yield index, row
        except SourceError:
            raise
        except Exception as e:  # a streamed read can fail at any row (network, corrupt shard, a file that is not data)
            raise SourceError(f"cannot read {what}: {_first_line(e)}") from None


def _display_name(path: Path) -> str:
    """parent-folder/file: enough to recognise the source, without an absolute local path."""
    parent = path.resolve().parent.name
    return f"{parent}/{path.name}" if parent else path.name


def _open(spec: str, split: str | None, config: str | None, revision: str | None) -> tuple[str, str | None, Iterator[tuple[int, Any]]]:
    """(display name, hub id or None, row reader) for a local file, a local dataset folder or a Hub id."""
    spec = str(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve().name, None, _read_datasets(str(path), path.resolve().name, split, config, revision, folder=True)
    if path.exists():
        name = _display_name(path)
        lower = path.name.lower()
        if lower.endswith(".jsonl.gz"):
            return name, None, _read_jsonl(path, name, gzip.open)
        if lower.endswith(".jsonl"):
            return name, None, _read_jsonl(path, name)
        if lower.endswith(".json"):
            return name, None, _read_json(path, name)
        if lower.endswith(".parquet"):
            return name, None, _read_parquet(path, name)
        if lower.endswith(".csv"):
            return name, None, _read_csv(path, name)
        raise SourceError(f"cannot read {path.name}: expected {FILE_TYPES}")
    looks_like_file = (
        spec.startswith((".", "/", "~")) or spec.count("/") > 1 or os.sep != "/" and os.sep in spec
        or path.suffix.lower() in _FILE_SUFFIXES
    )
    if looks_like_file or not _HUB_ID.match(spec):
        raise SourceError(f"cannot read {path.name or spec}: no such file or directory (expected a local {FILE_TYPES} file or a Hub dataset id)")
    return spec, spec, _read_datasets(spec, spec, split, config, revision)


def _hub_license(repo_id: str, revision: str | None, cache_dir: str | os.PathLike | None = None) -> str | None:
    """The licence from the dataset card, only if the card is already in the local Hub cache (no network)."""
    try:
        from huggingface_hub import DatasetCard, try_to_load_from_cache

        path = try_to_load_from_cache(repo_id, "README.md", cache_dir=cache_dir, revision=revision, repo_type="dataset")
        if not isinstance(path, str):
            return None
        license = DatasetCard.load(path).data.get("license")
    except Exception:  # the licence is informative only; a missing or odd card must not stop a build
        return None
    if isinstance(license, list):
        license = ", ".join(str(x) for x in license)
    return str(license) if license else None
