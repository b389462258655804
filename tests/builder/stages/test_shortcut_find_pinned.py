"""The shortcut finder's whole output on a small varied source, pinned against the finder before issue 16's speed-up.

`tests/data/shortcut_find/pinned.json.gz` is every candidate (`others` unbounded) that the finder at
commit 93c31fa (string cue keys, regex word splits) returned on `source()` below; make_fixture.py
there wrote it. The faster finder (integer cue keys, sentence cuts by string replacement, lower-casing
once per distinct text) must return the same candidates with the same counts, strengths, p-values,
significance, examples and folds, in the same order (candidates of equal rank in different groups came
in an arbitrary order before and now come by group); and the same again when the 64-bit cue keys collide.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from crome.builder.hub.audit import resolve, session
from crome.builder.stages import shortcut_find
from crome.builder.stages.shortcut_find import Shortcut, find_shortcuts, rank_key
from crome.schemas import DatasetRow, Provenance, to_table
from crome.schemas.messages import user

PINNED = Path(__file__).resolve().parents[2] / "data" / "shortcut_find" / "pinned.json.gz"
PROV = Provenance(oracle="source", builder_version="0", seed=0)
WORDS = "river stone cloud quick brown lazy dog model data tree light sound water fire earth plan garden window".split()
# Openings, closings and sentences in every shape the normalisation has to agree on: case, tabs, carriage
# returns, form feeds, runs of spaces, runs of . ! ?, a line that starts with "...", non-ASCII letters, emoji.
OPENINGS = ["Sure! Here's what you asked for.", "GREAT question,\tI'm   glad you asked!", "Hmm... let me think.",
            "Ésta es la RESPUESTA corta.", "Well,\r\nfirst things first"]
CLOSINGS = ["Hope this helps!", "Let me know if you need more?!", "...and that is all\f folks.", "Cheers 🎉"]
EXTRAS = ["\n\n# Heading\n\n- one item\n- two items", "**bold move** and [a link](http://x.y)", "\n| a | b |\n|---|---|",
          "\n```\ncode block\n```", "\n...\nDots alone.  Two  spaces   here.", "\nA control\x01 byte. Cut by the regex instead.", " " + "w" * 230 + " tail words here."]


def _answer(rng: random.Random) -> str:
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))).capitalize() + rng.choice([".", "!", "?", "..."])
                 for _ in range(rng.randint(1, 5))]
    return rng.choice([" ", "\n", "  "]).join(sentences)


def source(path: Path, n: int = 360) -> Path:
    """Original, causal (three attributes, both directions) and tie pairs, with cues planted unevenly on each side."""
    rng = random.Random(16)
    rows = []
    for i in range(n):
        c, r = _answer(rng), _answer(rng)
        if rng.random() < 0.5:
            c = f"{rng.choice(OPENINGS[:3])} {c}"
        if rng.random() < 0.3:
            r = f"{rng.choice(OPENINGS[2:])} {r}"
        if rng.random() < 0.4:
            r = f"{r}\n\n{rng.choice(CLOSINGS)}"
        if rng.random() < 0.25:
            c = f"{c} {rng.choice(CLOSINGS[1:])}"
        if rng.random() < 0.3:
            c += rng.choice(EXTRAS)
        if rng.random() < 0.1:
            r += rng.choice(EXTRAS)
        kind = rng.choice(["original", "original", "causal", "neutral"])
        kw = {"preference": 1.0, "kind": kind, "augmentation": "original"}
        if kind == "causal":
            kw.update(attribute=rng.choice(["clarity", "completeness", "tone"]), augmentation=rng.choice(["degrade", "upgrade"]))
        elif kind == "neutral":
            kw.update(preference=0.5, augmentation="irrelevant_query")  # a tie: the finder reads none
        rows.append(DatasetRow.make(prompt=[user(f"question {i}?")], chosen=c, rejected=r, source_id=f"s{i}", provenance=PROV, **kw))
    pq.write_table(to_table(rows, DatasetRow), path)
    return path


def found(path: Path, **kw) -> list[dict]:
    with session(resolve(path)) as con:
        return [s.model_dump() for s in find_shortcuts(con, others=10**6, **kw)]


@pytest.fixture(scope="module")
def pinned() -> dict:
    """The pinned lists in the finder's order, its ties (same rank, different groups) now broken by group as rank_key does."""
    lists = json.loads(gzip.decompress(PINNED.read_bytes()))
    return {k: sorted(v, key=lambda s: rank_key(Shortcut.model_validate(s))) for k, v in lists.items()}


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    return source(tmp_path_factory.mktemp("pinned") / "rows.parquet")


def test_the_finder_returns_exactly_the_pinned_candidates(src, pinned):
    got = found(src)
    assert len(got) == len(pinned["all"]) > 150
    assert sum(s["significant"] for s in got) == sum(s["significant"] for s in pinned["all"]) > 10
    assert {s["feature"] for s in got} == {"opening", "closing", "phrase", "format", "length"}
    assert got == pinned["all"]


def test_a_strict_filter_returns_exactly_the_pinned_candidates(src, pinned):
    assert found(src, strict_filter="kind = 'original'") == pinned["original"]


def test_colliding_cue_keys_are_renumbered_and_change_nothing(src, pinned, monkeypatch):
    monkeypatch.setattr(shortcut_find, "CUE_KEY", "hash({}) % 7")  # seven keys for hundreds of texts: every key shared
    assert found(src) == pinned["all"]


def test_the_order_is_the_ranking_and_repeats(src):
    first, again = found(src), found(src)
    assert first == again
    with session(resolve(src)) as con:
        default = find_shortcuts(con)
    assert [rank_key(s) for s in default] == sorted(rank_key(s) for s in default)
