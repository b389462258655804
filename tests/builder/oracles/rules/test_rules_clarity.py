"""Clarity degrades: sentences, list items or paragraphs reordered, every sentence and the edges kept."""

from __future__ import annotations

import re
from collections import Counter

from rules_helpers import ESSAY, RECIPE, degrade, nonblank, rewrite_of

from crome.builder.stages.checks import validate_rewrite


def sentences(text: str) -> Counter:
    return Counter(s.strip().rstrip(".") for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip())


def test_clarity_permutes_sentences_and_keeps_every_sentence_and_the_edges():
    cf = rewrite_of(ESSAY, "clarity")
    out = cf.rewrite
    assert out != ESSAY and sentences(out) == sentences(ESSAY)
    assert nonblank(out)[0] == nonblank(ESSAY)[0] and nonblank(out)[-1] == nonblank(ESSAY)[-1]
    assert out.count("\n\n") == ESSAY.count("\n\n")  # paragraphs stay paragraphs
    assert validate_rewrite(ESSAY, out).passed


def test_clarity_shuffles_list_items_with_markers_in_place():
    out = rewrite_of(RECIPE, "clarity").rewrite
    markers = re.findall(r"^(\d)\. ", out, re.M)
    assert markers == ["1", "2", "3", "4", "5", "6"]
    items_in = re.findall(r"^\d\. (.*)$", RECIPE, re.M)
    items_out = re.findall(r"^\d\. (.*)$", out, re.M)
    assert sorted(items_in) == sorted(items_out) and items_in != items_out


def test_clarity_shuffles_paragraphs_or_strips_structure_as_a_last_resort():
    qa = "Question: Is the sky blue?\n\nAnswer: Yes, on a clear day.\n\nReason: Air scatters blue light.\n\nConfidence: 90%"
    out = rewrite_of(qa, "clarity").rewrite
    assert out != qa and sorted(nonblank(out)) == sorted(nonblank(qa))
    assert nonblank(out)[0] == nonblank(qa)[0] and nonblank(out)[-1] == nonblank(qa)[-1]
    lines = "Shopping list:\n- eggs\n- milk\nThat is all."
    cf = rewrite_of(lines, "clarity")
    assert "structure was stripped" in cf.change and "eggs milk" in cf.rewrite
    resp = degrade("Paris is the capital of France.", "clarity")
    assert resp.status == "unsupported"
