"""Evaluation pairs: the normalised `EvalPair` and loading test files (RewardBench, RM-Bench, LLMBar, crome runs).

Public API (used by evaluation, filtering and the robustness probe):
    EvalPair                                   one test pair, normalised
    as_eval_pair(obj, subset=None, where=...)  from an EvalPair, SourcePair, DatasetRow or dict
    load_eval_pairs(path, limit=None) -> (list[EvalPair], file records)
    subset_from_stem(path) -> subset name of a file without a subset column
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crome.builder.sources import load_source
from crome.train.data import DataError, as_answer, as_messages, data_files

# LLMBar files carry no subset column: their file stems map to RewardBench's names.
LLMBAR_SUBSETS = {
    "llmbar_natural": "llmbar-natural",
    "llmbar_adversarial_neighbor": "llmbar-adver-neighbor",
    "llmbar_adversarial_gptinst": "llmbar-adver-GPTInst",
    "llmbar_adversarial_gptout": "llmbar-adver-GPTOut",
    "llmbar_adversarial_manual": "llmbar-adver-manual",
}
# RM-Bench answer styles, in the order of its chosen/rejected lists.
RM_BENCH_STYLES = ("concise", "detailed_plain", "detailed_markdown")
DATA_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz", ".parquet", ".csv")


@dataclass
class EvalPair:
    """One test pair, normalised. `group` and `styles` are set for RM-Bench-style data (3x3 style grid per prompt)."""

    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    preference: float = 1.0
    subset: str = "default"
    group: str | None = None
    styles: tuple[int, int] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def as_eval_pair(obj: Any, *, subset: str | None = None, where: str = "pair") -> EvalPair:
    """An EvalPair from an EvalPair, a SourcePair, a DatasetRow or a dict with prompt/chosen/rejected."""
    if isinstance(obj, EvalPair):
        return obj
    get = obj.get if isinstance(obj, dict) else (lambda k, d=None: getattr(obj, k, d))
    pref = get("preference", 1.0)
    pref = 1.0 if pref is None else float(pref)
    metadata = get("metadata", None) or {}
    return EvalPair(
        prompt=as_messages(get("prompt"), where=f"{where}: prompt"),
        chosen=as_answer(get("chosen"), where=f"{where}: chosen"),
        rejected=as_answer(get("rejected"), where=f"{where}: rejected"),
        preference=pref,
        subset=subset or get("subset", None) or get("kind", None) or "default",
        group=_group(metadata),
        styles=_styles(metadata),
        metadata=dict(metadata) if isinstance(metadata, dict) else {},
    )


def _styles(meta: Any) -> tuple[int, int] | None:
    # The sources loader records which style variant each side of an RM-Bench pair is.
    if not isinstance(meta, dict):
        return None
    for c_key, r_key in (("chosen_style", "rejected_style"), ("chosen_index", "rejected_index"), ("chosen_idx", "rejected_idx")):
        c, r = meta.get(c_key), meta.get(r_key)
        if c is not None and r is not None:
            c = RM_BENCH_STYLES.index(c) if c in RM_BENCH_STYLES else c
            r = RM_BENCH_STYLES.index(r) if r in RM_BENCH_STYLES else r
            if isinstance(c, int) and isinstance(r, int):
                return c, r
    return None


def _group(meta: Any) -> str | None:
    if not isinstance(meta, dict):
        return None
    for key in ("group", "prompt_id", "id"):
        if meta.get(key) is not None:
            return str(meta[key])
    return None


# ---------------------------------------------------------------- loading test files


def subset_from_stem(path: Path) -> str:
    """Subset name for a file without a subset column: LLMBar files map to RewardBench names."""
    name = path.name
    for suffix in sorted(DATA_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    key = name.lower()
    return LLMBAR_SUBSETS.get(key, key.replace("_", "-"))


def _read_records(path: Path) -> list[dict[str, Any]] | None:
    """Records of a JSON list / JSONL / Parquet file, or None for shapes left to the sources loader."""
    name = path.name
    if name.endswith((".jsonl", ".jsonl.gz")):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if name.endswith((".json", ".json.gz")):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, list) else None
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    return None


def _is_pair_table(records: list[dict[str, Any]]) -> bool:
    # RewardBench format (and crome rows): prompt plus one chosen and one rejected answer per record.
    if not records or not isinstance(records[0], dict):
        return False
    first = records[0]
    if not all(k in first for k in ("prompt", "chosen", "rejected")):
        return False
    return all(isinstance(first[k], str) or (isinstance(first[k], list) and len(first[k]) == 1 and isinstance(first[k][0], dict)) for k in ("chosen", "rejected"))


def _from_source_loader(path: Path, limit: int | None) -> tuple[list[EvalPair], dict[str, Any]]:
    result = load_source(str(path), limit=limit)
    default = subset_from_stem(path)
    pairs = [as_eval_pair(sp, subset=sp.subset or default, where=f"{path.name} row {sp.row}") for sp in result.pairs]
    reasons = Counter(q.reason for q in result.quarantined)
    return pairs, {"shape": result.shape, "quarantined": sum(reasons.values()), "quarantine_reasons": dict(reasons)}


def _load_file(path: Path, limit: int | None) -> tuple[list[EvalPair], dict[str, Any]]:
    records = _read_records(path)
    if records is not None and _is_pair_table(records):
        default = subset_from_stem(path)
        records = records[:limit] if limit else records
        pairs = [as_eval_pair(r, subset=r.get("subset") or r.get("kind") or default, where=f"{path.name} row {i}") for i, r in enumerate(records)]
        return pairs, {"shape": "pairs", "quarantined": 0}
    return _from_source_loader(path, limit)


def _load_rows_dir(path: Path, limit: int | None) -> tuple[list[EvalPair], dict[str, Any]]:
    # A crome run or published folder: its test split when it has one, else every row; subsets are kinds.
    splits = data_files(path)
    files = splits.get("test") or [f for fs in splits.values() for f in fs]
    pairs: list[EvalPair] = []
    for f in files:
        records = _read_records(Path(f)) or []
        pairs += [as_eval_pair(r, subset=r.get("kind"), where=f"{Path(f).name} row {i}") for i, r in enumerate(records)]
    return (pairs[:limit] if limit else pairs), {"shape": "crome_rows", "split": "test" if "test" in splits else "all", "quarantined": 0}


def load_eval_pairs(path: str | Path, *, limit: int | None = None) -> tuple[list[EvalPair], list[dict[str, Any]]]:
    """Pairs from a file, a directory of files, or a crome run / published folder; `limit` applies per file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir() and (path / "data").is_dir() and data_files(path):
        pairs, info = _load_rows_dir(path, limit)
        return pairs, [{"path": str(path), "pairs": len(pairs), **info}]
    files = sorted(p for p in path.iterdir() if p.name.endswith(DATA_SUFFIXES)) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: no data files ({', '.join(DATA_SUFFIXES)})")
    pairs, infos = [], []
    for f in files:
        got, info = _load_file(f, limit)
        pairs += got
        infos.append({"path": str(f), "pairs": len(got), "subsets": sorted({p.subset for p in got}), **info})
    return pairs, infos
