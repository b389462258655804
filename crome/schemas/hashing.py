"""The one canonical hash: sorted-key JSON, sha256, algorithm prefix.

Used for oracle-call cache keys, dataset row ids, source ids and dedup keys, so that the same
content always gets the same id on every machine and in every run. `Bloom` answers "certainly
never filed" for such keys without asking a store (the dedup index, the call cache).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Iterable

import numpy as np
from pydantic import BaseModel

ALGORITHM = "sha256"
_HEX = re.compile(r"[0-9a-fA-F]+")


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


class Bloom:
    """A Bloom filter over `stable_hash` keys (`sha256:<hex>`, or bare hex): "certainly not added" without asking a store.

    10 bits per expected key and 7 probes (about 1% false positives at capacity); a positive is
    confirmed by the store, so the filter changes no decision, only how often the store is asked.
    The probes are the key's first 7 groups of 8 hex digits: the keys are hashes already.
    """

    PROBES = 7

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, int(capacity))
        self.bits = max(1 << 16, 10 * self.capacity)
        self._array = np.zeros((self.bits + 7) // 8, dtype=np.uint8)

    def _digest(self, key: str) -> str:
        """The hex digits the probes read: the key's own hash, or the sha256 of any other key (a test's "k1")."""
        digest = key.rsplit(":", 1)[-1]
        if len(digest) >= 8 * self.PROBES and _HEX.fullmatch(digest):
            return digest[: 8 * self.PROBES]
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[: 8 * self.PROBES]

    def _positions(self, key: str) -> list[int]:
        digest = self._digest(key)
        return [int(digest[8 * i : 8 * i + 8], 16) % self.bits for i in range(self.PROBES)]

    def add(self, key: str) -> None:
        for p in self._positions(key):
            self._array[p >> 3] |= 1 << (p & 7)

    def add_many(self, keys: Iterable[str]) -> None:
        """`add` for many keys at once (vectorised: reading a large store's keys back stays quick)."""
        hexes = "".join(self._digest(k) for k in keys)
        if not hexes:
            return
        pos = np.frombuffer(bytes.fromhex(hexes), dtype=">u4").astype(np.uint64) % np.uint64(self.bits)
        np.bitwise_or.at(self._array, (pos >> np.uint64(3)).astype(np.int64), (np.uint64(1) << (pos & np.uint64(7))).astype(np.uint8))

    def __contains__(self, key: str) -> bool:
        return all(self._array[p >> 3] & (1 << (p & 7)) for p in self._positions(key))
