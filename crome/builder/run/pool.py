"""The stages' views of the run store during a streaming build: the source pool, the IQN draw groups, the dedup index.

The stages see a sequence (the pool, in source order), a mapping (source id -> its draw group) and a
`DedupBackend`, as they would see in-memory ones; each reads the run store through
`crome.builder.store.work.BuildTables`, with a small bounded cache of what a batch prefetched.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from crome.builder.stages.dedup import Drained
from crome.builder.stages.records import PairContext
from crome.builder.store.work import BuildTables
from crome.schemas import SourcePair

CACHE = 2048  # pool pairs kept between a prefetch and their use (a batch needs a few hundred)


class _Cache(OrderedDict):
    """A bounded map: the oldest entries go first."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, items: dict) -> None:
        self.update(items)
        while len(self) > self.size:
            self.popitem(last=False)


class StorePool(Sequence[PairContext]):
    """Every source pair, by position in the source, read from the run store as drawn."""

    def __init__(self, tables: BuildTables, size: int, cache: int = CACHE) -> None:
        self.tables = tables
        self.size = size
        self._cache: _Cache = _Cache(cache)

    def __len__(self) -> int:
        return self.size

    def prefetch(self, ords: list[int]) -> None:
        missing = [o for o in ords if o not in self._cache]
        if missing:
            self._cache.put(self.tables.pool_pairs(missing))

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.size))]
        if i < 0:
            i += self.size
        if not 0 <= i < self.size:
            raise IndexError(i)
        pair = self._cache.get(i)
        if pair is None:
            self.prefetch([i])
            pair = self._cache[i]
        return PairContext(pair=pair)

    def __iter__(self) -> Iterator[PairContext]:
        for start in range(0, self.size, 1000):
            found = self.tables.pool_pairs(range(start, min(start + 1000, self.size)))
            for o in sorted(found):
                yield PairContext(pair=found[o])


class _Group(Sequence[PairContext]):
    """One draw group: its pairs in source-id order, read as drawn."""

    def __init__(self, groups: "StoreGroups", grp: int, size: int) -> None:
        self.groups, self.grp, self.size = groups, grp, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, pos: Any) -> Any:
        if isinstance(pos, slice):
            return [self[j] for j in range(*pos.indices(self.size))]
        if not 0 <= pos < self.size:
            raise IndexError(pos)
        return PairContext(pair=self.groups.member(self.grp, pos))


class StoreGroups:
    """source id -> its IQN draw group, for the pairs the build holds now (`track` / `forget`)."""

    def __init__(self, tables: BuildTables, cache: int = CACHE) -> None:
        self.tables = tables
        self.sizes = tables.group_sizes()  # one int per group (a group holds 16 to 31 pairs by default)
        self._of: dict[str, tuple[int, int]] = {}  # source id -> (draw group, pairs of it held)
        self._cache: _Cache = _Cache(cache)

    def track(self, source_id: str, grp: int | None) -> None:
        """A pair of this source id is read; a source id met twice (a repeated source row) is held until both are written."""
        if grp is not None:
            held = self._of.get(source_id)
            self._of[source_id] = (grp, 1 + (held[1] if held else 0))

    def forget(self, source_id: str) -> None:
        held = self._of.get(source_id)
        if held is not None:
            if held[1] > 1:
                self._of[source_id] = (held[0], held[1] - 1)
            else:
                del self._of[source_id]

    def get(self, source_id: str, default: Any = None) -> Any:
        held = self._of.get(source_id)
        return default if held is None else _Group(self, held[0], self.sizes[held[0]])

    def prefetch(self, draws: list[tuple[str, int]]) -> None:
        """Load the members at (source id's group, position) for several draws, in one query."""
        self._load([(self._of[sid][0], pos) for sid, pos in draws if sid in self._of])

    def _load(self, keys: list[tuple[int, int]]) -> None:
        missing = [k for k in keys if k not in self._cache]
        if missing:
            self._cache.put(self.tables.group_members(missing))

    def member(self, grp: int, pos: int) -> SourcePair:
        pair = self._cache.get((grp, pos))
        if pair is None:
            self._load([(grp, pos)])
            pair = self._cache[(grp, pos)]
        return pair


def _k64(key: str) -> int:
    return int.from_bytes(bytes.fromhex(key.rsplit(":", 1)[-1][:16]), "little", signed=True)


class StoreDedup:
    """The dedup index's backend: the `dedup_exact`, `dedup_bands` and `dedup_sigs` tables of the run store."""

    def __init__(self, tables: BuildTables) -> None:
        self.tables = tables

    def exact(self, index: str, key: str) -> str | None:
        rows = self.tables.query("SELECT item FROM dedup_exact WHERE idx = ? AND k64 = ? AND key = ?", [index, _k64(key), key])
        return rows[0][0] if rows else None

    def bands(self, index: str, bands: list[int]) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for i in range(0, len(bands), 5000):
            chunk = ", ".join(str(b) for b in bands[i : i + 5000])
            for band, item in self.tables.query(f"SELECT band, item FROM dedup_bands WHERE idx = ? AND band IN ({chunk}) ORDER BY item", [index]):
                out.setdefault(band, []).append(item)
        return out

    def signatures(self, index: str, items: list[int]) -> dict[int, tuple[str, np.ndarray]]:
        out = {}
        for i in range(0, len(items), 5000):
            chunk = ", ".join(str(k) for k in items[i : i + 5000])
            for k, item, sig in self.tables.query(f"SELECT item, id, sig FROM dedup_sigs WHERE idx = ? AND item IN ({chunk})", [index]):
                out[k] = (item, np.frombuffer(sig, dtype="<u8").astype(np.uint64))
        return out

    @staticmethod
    def entries(index: str, drained: Drained) -> list[tuple[str, pa.Table]]:
        """The drained entries as Arrow batches for `BuildTables.append`."""
        return [
            ("dedup_exact", pa.table({"idx": [index] * len(drained.exact), "k64": [_k64(k) for k, _ in drained.exact],
                                      "key": [k for k, _ in drained.exact], "item": [i for _, i in drained.exact]})),
            ("dedup_bands", pa.table({"idx": [index] * len(drained.bands), "band": pa.array([b for b, _ in drained.bands], pa.int64()),
                                      "item": pa.array([k for _, k in drained.bands], pa.int64())})),
            ("dedup_sigs", pa.table({"idx": [index] * len(drained.signatures), "item": pa.array([k for k, _, _ in drained.signatures], pa.int64()),
                                     "id": [i for _, i, _ in drained.signatures], "sig": pa.array([s for _, _, s in drained.signatures], pa.binary())})),
        ]


class MinePairs(Sequence[SourcePair]):
    """This shard's pairs, streamed from the store (what `--dry-run` estimates)."""

    def __init__(self, tables: BuildTables, count: int) -> None:
        self.tables, self.count = tables, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[SourcePair]:
        for chunk in self.tables.mine_chunks(1000):
            for _, pair, _ in chunk:
                yield pair

    def __getitem__(self, i: Any) -> Any:
        raise TypeError("MinePairs is read in order only")


def documents(tables: BuildTables, text: Callable[[SourcePair], str]) -> Iterator[str]:
    """`text(pair)` of every pool pair (the corpus the IQN relatedness idf is fitted on: document frequencies, order does not matter)."""
    import json

    from crome.schemas import Message

    for prompt in tables.iter_pool_documents("prompt"):
        messages = [Message(**m) for m in json.loads(prompt)]
        yield text(SourcePair.model_construct(prompt=messages))


__all__ = ["MinePairs", "StoreDedup", "StoreGroups", "StorePool", "documents"]
