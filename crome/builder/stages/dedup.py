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

import re
from dataclasses import dataclass
import string
import zlib
from typing import Literal, Sequence

import numpy as np
from datasketch import MinHash, MinHashLSH
from pydantic import BaseModel

from crome.builder.stages.base import Stage, StageEnv
from crome.builder.stages.records import PairContext
from crome.schemas.hashing import stable_hash

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


class Deduper:
    """Registers texts and tells whether a new one duplicates an earlier one, exactly or nearly."""

    def __init__(self, threshold: float = 0.85, num_perm: int = 128, shingle: int = 5, seed: int = 1):
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if shingle < 1 or num_perm < 2:
            raise ValueError(f"need shingle >= 1 and num_perm >= 2, got {shingle} and {num_perm}")
        self.threshold = threshold
        self.num_perm = num_perm
        self.shingle = shingle
        self.seed = seed
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._exact: dict[str, str] = {}  # normalised-text hash -> first item id
        self._ids: list[str] = []  # LSH key (its index here) -> item id; one id may be registered twice
        self._sigs: list[MinHash] = []
        template = MinHash(num_perm=num_perm, seed=seed, hashfunc=_identity)
        try:  # datasketch >= 2 takes the permutations of a template: no RNG set-up per text
            MinHash(num_perm=num_perm, seed=seed, hashfunc=_identity, permutations=template.permutations, scheme=template.scheme)
            self._mh_kwargs = {"permutations": template.permutations, "scheme": template.scheme}
        except (TypeError, AttributeError):
            self._mh_kwargs = {}

    def __len__(self) -> int:
        return len(self._exact)

    def minhash(self, text: str, *, normalised: bool = False) -> MinHash:
        m = MinHash(num_perm=self.num_perm, seed=self.seed, hashfunc=_identity, **self._mh_kwargs)
        m.update_batch(shingle_hashes(text if normalised else normalise(text), self.shingle))
        return m

    def probe(self, text: str, *, near: bool = True) -> tuple[DupResult, "Probe"]:
        """Is `text` a duplicate of a registered one? Registers nothing; `add` registers the probe.

        With `near=False` only the exact key is checked (no MinHash is built); such an item, once
        added, is not found by later near checks.
        """
        norm = normalise(text)
        probe = Probe(key=stable_hash(norm))
        first = self._exact.get(probe.key)
        if first is not None:
            return DupResult(duplicate=True, of=first, kind="exact", similarity=1.0), probe
        if near:
            probe.sig = self.minhash(norm, normalised=True)
            best, best_sim = None, 0.0
            for k in self._lsh.query(probe.sig):
                sim = probe.sig.jaccard(self._sigs[k])
                if sim > best_sim or (sim == best_sim and best is not None and k < best):
                    best, best_sim = k, sim
            if best is not None and best_sim >= self.threshold:
                return DupResult(duplicate=True, of=self._ids[best], kind="near", similarity=round(best_sim, 4)), probe
        return DupResult(duplicate=False), probe

    def add(self, item_id: str, probe: "Probe") -> None:
        """Register a probed text under `item_id` (the first registration of a text wins)."""
        self._exact.setdefault(probe.key, item_id)
        if probe.sig is not None:
            self._lsh.insert(len(self._ids), probe.sig, check_duplication=False)
            self._ids.append(item_id)
            self._sigs.append(probe.sig)

    def check(self, item_id: str, text: str, *, near: bool = True) -> DupResult:
        """Is `text` a duplicate of an earlier one? If not, it is registered under `item_id`."""
        result, probe = self.probe(text, near=near)
        if not result.duplicate:
            self.add(item_id, probe)
        return result


@dataclass
class Probe:
    """What `Deduper.probe` computed for a text, so `add` need not compute it again."""

    key: str
    sig: MinHash | None = None


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


__all__ = ["KIND_ORDER", "DedupStage", "Deduper", "DupResult", "normalise", "shingle_hashes", "text_key"]
