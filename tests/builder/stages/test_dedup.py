"""Exact and near-duplicate detection (MinHash + LSH) and the pair dedup key."""

from __future__ import annotations

import random

import numpy as np
import pytest

from crome.builder.stages.dedup import Deduper, normalise, shingle_hashes, text_key
from crome.schemas.messages import user

WORDS = (
    "the oven steak salt pepper heat minutes rare medium skillet butter olive oil rest slice serve temperature "
    "thermometer crust brown side flip tongs foil juicy degrees preheat season room cook bake transfer remove"
).split()


def paragraph(seed: int, n: int = 200) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n)) + "."


def test_exact_duplicates_ignore_case_spacing_and_edge_punctuation():
    d = Deduper()
    assert not d.check("a", "Paris is the capital of France.").duplicate
    dup = d.check("b", "  paris   is the CAPITAL of france!! ")
    assert (dup.duplicate, dup.of, dup.kind, dup.similarity) == (True, "a", "exact", 1.0)
    assert not d.check("c", "Paris is the capital of Spain.").duplicate
    assert normalise("  Hello,   World!\n") == "hello, world"


def test_near_duplicates_of_a_long_text():
    d = Deduper()
    base = paragraph(1)
    assert not d.check("orig", base).duplicate
    words = base.split()
    words[100] = "zucchini"  # one word changed in 200
    near = d.check("copy", " ".join(words))
    assert near.duplicate and near.kind == "near" and near.of == "orig" and 0.85 <= near.similarity < 1.0
    assert not d.check("other", paragraph(2)).duplicate  # same vocabulary, different text
    assert len(d) == 2  # duplicates are not registered


def test_near_duplicates_of_short_texts_use_character_shingles():
    assert len(shingle_hashes("the capital is paris")) > 1  # 4 words: character windows, not one word window
    d = Deduper()
    d.check("a", "The capital of France is Paris")
    near = d.check("b", "The capital of France is Pariss")  # 6 words: no 5-word window would match
    assert near.duplicate and near.kind == "near" and near.of == "a"
    assert not d.check("c", "Madrid is the capital of Spain").duplicate


def test_the_closest_earlier_text_is_reported():
    d = Deduper(threshold=0.7)
    base = paragraph(3).split()
    d.check("far", " ".join(base[:150] + ["zucchini"] * 50))
    d.check("close", " ".join(base[:190] + ["zucchini"] * 10))
    hit = d.check("new", " ".join(base))
    assert hit.duplicate and hit.of == "close"


def test_exact_only_mode_registers_no_signature():
    d = Deduper()
    base = paragraph(4)
    assert not d.check("a", base, near=False).duplicate
    assert d.check("b", base + " ", near=False).kind == "exact"
    words = base.split()
    words[50] = "zucchini"
    assert not d.check("c", " ".join(words), near=False).duplicate
    assert not d.check("d", " ".join(words[:120]) + " extra words here").duplicate  # nothing near to find


def test_deterministic_across_instances_and_same_id_twice():
    texts = [paragraph(s) for s in range(20)] + [paragraph(5) + " again"]
    runs = []
    for _ in range(2):
        d = Deduper()
        runs.append([d.check(f"id{k}", t) for k, t in enumerate(texts)])
    assert runs[0] == runs[1] and runs[0][-1].duplicate and runs[0][-1].of == "id5"
    assert np.array_equal(Deduper().minhash(texts[0]).hashvalues, Deduper().minhash(texts[0]).hashvalues)
    d = Deduper()
    d.check("same", paragraph(30))
    assert not d.check("same", paragraph(31)).duplicate  # an id registered twice does not break the index


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError):
        Deduper(threshold=0)
    with pytest.raises(ValueError):
        Deduper(shingle=0)


def test_text_key_order_and_prompt_forms():
    assert text_key("P", "a", "b") != text_key("P", "b", "a")
    assert text_key("P", "a", "b", ordered=False) == text_key("P", "b", "a", ordered=False)
    msgs = [user("What is 2+2?")]
    assert text_key(msgs, "4", "5") == text_key([{"role": "user", "content": "What is 2+2?"}], "4", "5")
    assert "What is 2+2?" in text_key(msgs, "4", "5")
    d = Deduper()
    d.check("tie", text_key("P", "first answer", "second answer", ordered=False))
    assert d.check("swapped", text_key("P", "second answer", "first answer", ordered=False)).kind == "exact"


def test_distinct_long_texts_are_not_duplicates():
    """Many unrelated 400-word texts: no false positive (the speed is in benchmarks/bench_stages.py)."""
    texts = [paragraph(s, 400) for s in range(300)]
    d = Deduper()
    assert sum(d.check(str(k), t).duplicate for k, t in enumerate(texts)) == 0


def test_probe_registers_nothing_until_added():
    d = Deduper()
    text = " ".join(f"Sentence {i} says the quick brown fox jumps over the lazy dog." for i in range(8)) + " Done today."
    result, probe = d.probe(text)
    assert not result.duplicate and len(d) == 0
    again, _ = d.probe(text)
    assert not again.duplicate  # a probe that was never added leaves no trace
    d.add("first", probe)
    dup, _ = d.probe(text + " ")
    assert dup.duplicate and dup.of == "first" and dup.kind == "exact"
    near, _ = d.probe(text.replace("today", "tonight"))
    assert near.duplicate and near.of == "first" and near.kind == "near"
