"""Helpers shared by the source tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from crome.builder.sources import LoadResult
from crome.schemas import Quarantined, SourcePair
from paths import SHARED_DATA

# Never reach the Hub from tests; set before `datasets` / `huggingface_hub` read their config on import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

DATA = SHARED_DATA
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} not present")


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def only_quarantine(result: LoadResult) -> Quarantined:
    assert len(result.quarantined) == 1, result.quarantined
    return result.quarantined[0]


def roles(pair: SourcePair) -> list[str]:
    return [m.role for m in pair.prompt]


def convo(*turns: tuple[str, str]) -> list[dict]:
    return [{"role": r, "content": c} for r, c in turns]
