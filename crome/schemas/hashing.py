"""The one canonical hash: sorted-key JSON, sha256, algorithm prefix.

Used for oracle-call cache keys, dataset row ids, source ids and dedup keys, so that the same
content always gets the same id on every machine and in every run.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

ALGORITHM = "sha256"


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, bytes):
        return obj.hex()
    raise TypeError(f"cannot hash object of type {type(obj).__name__}")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys, no insignificant whitespace and unicode kept as is."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default)


def stable_hash(obj: Any) -> str:
    """`sha256:<hex>` of the canonical JSON of `obj`."""
    digest = hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()
    return f"{ALGORITHM}:{digest}"


def short_id(obj: Any, length: int = 16) -> str:
    """A short hex id (the first `length` hex digits of `stable_hash`) for human-facing ids."""
    return stable_hash(obj).split(":", 1)[1][:length]


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
