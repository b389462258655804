"""Exact and near-duplicate detection for pairs and generated answers.

- Exact: the `stable_hash` of the normalised text (lower case, whitespace collapsed, punctuation
  stripped at both ends), so "Paris." and " paris" are one text.
- Near: the Jaccard similarity of the two texts' shingle sets, estimated from MinHash signatures
  (datasketch `MinHash`, 128 permutations, fixed seed) and found through `MinHashLSH`. Shingles
  are 5-word windows; a text under 10 words has too few of those to compare, so it is shingled
  into 5-character windows instead. Two texts are near-duplicates at an estimated Jaccard of
  0.85 or more (the default): a rewording of a few words in a paragraph, not two answers on one
  topic. With 128 permutations the estimate's standard error is about 0.03 near that threshold.

The first text registered wins: `check` answers "is this a duplicate of something seen?" and
registers the text when it is not. Deterministic: word hashes are CRC-32 and the MinHash seed is
fixed, so the same texts in the same order give the same answers on every machine.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
import string
import zlib
from typing import Literal, Protocol, Sequence

import numpy as np
from datasketch import MinHash, MinHashLSH
from pydantic import BaseModel

from crome.builder.stages.base import Stage, StageEnv
from crome.builder.stages.records import PairContext
from crome.schemas.hashing import Bloom, stable_hash

# CJK characters are words of their own (no spaces between words in those scripts).
_WORD_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W_]+")
_EDGE_PUNCT = string.punctuation + "\u2018\u2019\u201c\u201d\u2026\u3002\uff01\uff1f "
_ROLL = np.uint64(1_000_003)  # odd multiplier of the rolling shingle hash
_MASK32 = np.uint64(0xFFFFFFFF)


def normalise(text: str) -> str:
    """Lower case, whitespace collapsed to one space, punctuation and spaces stripped at both ends."""
    return " ".join(text.lower().split()).strip(_EDGE_PUNCT)


def shingle_hashes(norm: str, shingle: int = 5) -> list[int]:
    """32-bit hashes of the text's word shingles (character shingles under 2 * `shingle` words).

    A word shingle's hash is a rolling polynomial of its words' CRC-32s, computed with numpy:
    no per-shingle string is built, which keeps 500-word texts well under a millisecond.
    """
    words = _WORD_RE.findall(norm)
    if len(words) >= 2 * shingle:
        crc = zlib.crc32
        h = np.array([crc(w.encode()) for w in words], dtype=np.uint64)
        n = len(h) - shingle + 1
        acc = h[:n].copy()
        for k in range(1, shingle):
            acc = acc * _ROLL + h[k : k + n]  # wraps modulo 2^64, as intended
        return np.unique(acc & _MASK32).tolist()
    if len(norm) <= shingle:
        return [zlib.crc32(norm.encode())] if norm else []
    return sorted({zlib.crc32(norm[i : i + shingle].encode()) for i in range(len(norm) - shingle + 1)})


class DupResult(BaseModel):
    duplicate: bool
    of: str | None = None  # id of the item it duplicates
    kind: Literal["exact", "near"] | None = None
    similarity: float | None = None  # estimated Jaccard (1.0 for exact)


def _identity(x: int) -> int:
    return x


class DedupBackend(Protocol):
    """Where a `Deduper` keeps what it registered before its last `drain` (the run store, in a build)."""

    def exact(self, index: str, key: str) -> str | None:
        """The item first registered under exact key `key`, or None."""

    def bands(self, index: str, bands: list[int]) -> dict[int, list[int]]:
        """Band key -> the items (registration numbers) filed under it."""

    def signatures(self, index: str, items: list[int]) -> dict[int, tuple[str, np.ndarray]]:
        """Item number -> (item id, MinHash values)."""


@dataclass
class Drained:
    """What a `Deduper` registered since its last drain, for its backend to store."""

    exact: list[tuple[str, str]]  # (key, item id)
    bands: list[tuple[int, int]]  # (band key, item number)
    signatures: list[tuple[int, str, bytes]]  # (item number, item id, MinHash values as little-endian uint64)


def band_key(band: int, values: np.ndarray) -> int:
    """A 64-bit key for one LSH band of a signature (band number and its values): what the store files it under."""
    digest = hashlib.blake2b(band.to_bytes(2, "little") + values.astype("<u8").tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


@functools.lru_cache(maxsize=8)
def lsh_ranges(threshold: float, num_perm: int) -> tuple[tuple[int, int], ...]:
    """The band ranges `MinHashLSH` picks for `threshold`: found by numerical integration (scipy), about
    0.3 s each time, so once per process and setting rather than once per `Deduper` (a build makes several)."""
    return tuple(MinHashLSH(threshold=threshold, num_perm=num_perm).hashranges)


class Deduper:
    """Registers texts and tells whether a new one duplicates an earlier one, exactly or nearly.

    Near candidates are found as datasketch's `MinHashLSH` finds them (its band and row counts for
    the threshold: any band equal), then ranked by estimated Jaccard. With a `backend`, what was
    registered before the last `drain()` lives there (a build: DuckDB tables in the run store) and
    only the items registered since, a Bloom filter of exact keys and what `prefetch` loaded stay
    in memory; without one, everything stays in memory. The answers are the same either way.
    """

    def __init__(self, threshold: float = 0.85, num_perm: int = 128, shingle: int = 5, seed: int = 1, *,
                 backend: DedupBackend | None = None, name: str = "", capacity: int = 0):
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if shingle < 1 or num_perm < 2:
            raise ValueError(f"need shingle >= 1 and num_perm >= 2, got {shingle} and {num_perm}")
        self.threshold = threshold
        self.num_perm = num_perm
        self.shingle = shingle
        self.seed = seed
        self._ranges = lsh_ranges(threshold, num_perm)
        self.backend, self.name = backend, name
        self._bloom = Bloom(capacity) if backend is not None else None
        self._exact: dict[str, str] = {}  # normalised-text hash -> first item id (since the last drain)
        self._bands: dict[int, list[int]] = {}  # band key -> item numbers (since the last drain)
        self._sigs: dict[int, tuple[str, np.ndarray]] = {}  # item number -> (id, values): since the last drain, and prefetched
        self._fetched: dict[int, list[int]] = {}  # band key -> item numbers in the backend (prefetched)
        self._minhashes: dict[str, MinHash] = {}  # normalised text -> its MinHash (prefetched)
        self._n = 0  # items registered with a signature, ever (their numbers: the order of registration)
        self._count = 0
        self._drained_at = 0
        template = MinHash(num_perm=num_perm, seed=seed, hashfunc=_identity)
        try:  # datasketch >= 2 takes the permutations of a template: no RNG set-up per text
            MinHash(num_perm=num_perm, seed=seed, hashfunc=_identity, permutations=template.permutations, scheme=template.scheme)
            self._mh_kwargs = {"permutations": template.permutations, "scheme": template.scheme}
        except (TypeError, AttributeError):
            self._mh_kwargs = {}

    def __len__(self) -> int:
        return self._count

    def minhash(self, text: str, *, normalised: bool = False) -> MinHash:
        m = MinHash(num_perm=self.num_perm, seed=self.seed, hashfunc=_identity, **self._mh_kwargs)
        m.update_batch(shingle_hashes(text if normalised else normalise(text), self.shingle))
        return m

    def _band_keys(self, values: np.ndarray) -> list[int]:
        return [band_key(i, values[a:b]) for i, (a, b) in enumerate(self._ranges)]

    def prefetch(self, texts: Sequence[str]) -> None:
        """Load what near checks of `texts` will need from the backend, in two queries (a build: before each batch)."""
        if self.backend is None:
            return
        wanted: list[int] = []
        for text in texts:
            norm = normalise(text)
            if norm not in self._minhashes:
                m = self._minhashes[norm] = self.minhash(norm, normalised=True)
                wanted.extend(k for k in self._band_keys(m.hashvalues) if k not in self._fetched)
        if self._drained_at == 0:
            return  # no signature stored yet
        found = self.backend.bands(self.name, sorted(set(wanted)))
        for k in wanted:
            self._fetched[k] = found.get(k, [])
        missing = sorted({i for items in found.values() for i in items} - set(self._sigs))
        if missing:
            self._sigs.update(self.backend.signatures(self.name, missing))

    def _first_exact(self, key: str) -> str | None:
        first = self._exact.get(key)
        if first is None and self._bloom is not None and key in self._bloom:
            first = self.backend.exact(self.name, key)  # type: ignore[union-attr]
        return first

    def _candidates(self, keys: list[int]) -> set[int]:
        found: set[int] = set()
        for k in keys:
            found.update(self._bands.get(k, ()))
            if self.backend is not None and self._drained_at:
                stored = self._fetched.get(k)
                if stored is None:
                    stored = self._fetched[k] = self.backend.bands(self.name, [k]).get(k, [])
                found.update(stored)
        missing = sorted(i for i in found if i not in self._sigs)
        if missing:
            self._sigs.update(self.backend.signatures(self.name, missing))  # type: ignore[union-attr]
        return found

    def probe(self, text: str, *, near: bool = True) -> tuple[DupResult, "Probe"]:
        """Is `text` a duplicate of a registered one? Registers nothing; `add` registers the probe.

        With `near=False` only the exact key is checked (no MinHash is built); such an item, once
        added, is not found by later near checks.
        """
        norm = normalise(text)
        probe = Probe(key=stable_hash(norm))
        first = self._first_exact(probe.key)
        if first is not None:
            return DupResult(duplicate=True, of=first, kind="exact", similarity=1.0), probe
        if near:
            probe.sig = self._minhashes.get(norm) or self.minhash(norm, normalised=True)
            probe.bands = self._band_keys(probe.sig.hashvalues)
            best, best_sim = None, 0.0
            values = probe.sig.hashvalues
            for k in self._candidates(probe.bands):
                sim = float(np.count_nonzero(values == self._sigs[k][1])) / float(self.num_perm)
                if sim > best_sim or (sim == best_sim and best is not None and k < best):
                    best, best_sim = k, sim
            if best is not None and best_sim >= self.threshold:
                return DupResult(duplicate=True, of=self._sigs[best][0], kind="near", similarity=round(best_sim, 4)), probe
        return DupResult(duplicate=False), probe

    def add(self, item_id: str, probe: "Probe") -> None:
        """Register a probed text under `item_id` (the first registration of a text wins)."""
        if probe.key not in self._exact and (self._bloom is None or self._first_exact(probe.key) is None):
            self._exact[probe.key] = item_id
            self._count += 1
            if self._bloom is not None:
                self._bloom.add(probe.key)
        if probe.sig is not None:
            k = self._n
            self._n += 1
            for band in probe.bands or self._band_keys(probe.sig.hashvalues):
                self._bands.setdefault(band, []).append(k)
            self._sigs[k] = (item_id, probe.sig.hashvalues)

    def check(self, item_id: str, text: str, *, near: bool = True) -> DupResult:
        """Is `text` a duplicate of an earlier one? If not, it is registered under `item_id`."""
        result, probe = self.probe(text, near=near)
        if not result.duplicate:
            self.add(item_id, probe)
        return result

    def drain(self) -> Drained:
        """Hand what was registered since the last drain to the caller (for the backend) and forget it here."""
        if self.backend is None:
            raise RuntimeError("an in-memory Deduper keeps its index; drain() is for a Deduper with a backend")
        out = Drained(
            exact=list(self._exact.items()),
            bands=[(band, k) for band, items in self._bands.items() for k in items],
            signatures=[(k, item, values.astype("<u8").tobytes()) for k, (item, values) in self._sigs.items() if k >= self._drained_at],
        )
        self._exact, self._bands, self._sigs, self._fetched, self._minhashes = {}, {}, {}, {}, {}
        self._drained_at = self._n
        return out


@dataclass
class Probe:
    """What `Deduper.probe` computed for a text, so `add` need not compute it again."""

    key: str
    sig: MinHash | None = None
    bands: list[int] | None = None


def _prompt_text(prompt: str | Sequence) -> str:
    if isinstance(prompt, str):
        return prompt
    parts = []
    for m in prompt:
        role, content = (m["role"], m["content"]) if isinstance(m, dict) else (m.role, m.content)
        parts.append(f"{role}: {content}")
    return "\n".join(parts)


def text_key(prompt: str | Sequence, chosen: str, rejected: str, *, ordered: bool = True) -> str:
    """The text a pair is deduplicated on: prompt, then the two answers.

    `ordered=False` sorts the answers, so a tie and its swapped copy give the same text; a strict
    preference keeps its order (chosen first), as swapping it flips its meaning.
    """
    a, b = (chosen, rejected) if ordered else tuple(sorted((chosen, rejected)))
    return f"{_prompt_text(prompt)}\n\n[answer 1]\n{a}\n\n[answer 2]\n{b}"



KIND_ORDER = {"original": 0, "causal": 1, "neutral": 2}


class DedupStage(Stage):
    """Exact and near-duplicate pairs and generated answers; the first in source order wins.

    Listed twice in the pipeline: before the neutrals (so a tie is only made from pairs that stay)
    and after them (the ties themselves). Both share one index, and each candidate is checked once.
    """

    name = "dedup"
    ordered = True

    def __init__(self, env: StageEnv) -> None:
        super().__init__(env)
        index = env.shared.setdefault("dedup", (Deduper(threshold=self.options.dedup_threshold), Deduper(threshold=self.options.dedup_threshold)))
        self.pairs, self.answers = index

    def prepare(self, batch: Sequence[PairContext]) -> None:
        """Near checks look up the rewrites' MinHash bands: for a batch of pairs, in one query."""
        self.answers.prefetch([c.rewrite for ctx in batch for c in ctx.candidates if c.rewrite is not None and not c.deduped])

    async def __call__(self, ctx: PairContext) -> bool:
        kept = [c for c in ctx.candidates if c.deduped]
        for c in sorted((c for c in ctx.candidates if not c.deduped), key=lambda c: KIND_ORDER[c.kind]):
            # Probe both before registering either: a rejected candidate must leave no trace
            # that a later one could be called a duplicate of.
            dup, pair_probe = self.pairs.probe(text_key(c.prompt, c.chosen, c.rejected, ordered=c.preference == 1.0), near=False)
            answer_probe = None
            if not dup.duplicate and c.rewrite is not None:
                dup, answer_probe = self.answers.probe(c.rewrite)
            if dup.duplicate:
                similarity = f"similarity {dup.similarity:.3f}" if dup.similarity is not None else ""
                ctx.rejections.append(c.reject("dedup", f"{dup.kind}_duplicate", similarity, duplicate_of=dup.of))
                continue
            cid = c.id
            self.pairs.add(cid, pair_probe)
            if answer_probe is not None:
                self.answers.add(cid, answer_probe)
            c.deduped = True
            kept.append(c)
        ctx.candidates = kept
        return True


__all__ = ["KIND_ORDER", "Bloom", "DedupBackend", "DedupStage", "Deduper", "Drained", "DupResult", "band_key", "normalise", "shingle_hashes", "text_key"]
