"""Relevance degrades: part of the middle becomes donor text, markers, labels and language kept."""

from __future__ import annotations

import re

import pytest
from rules_helpers import DONOR, ESSAY, degrade, rewrite_of

from crome.builder.stages.checks import validate_rewrite
from crome.text import closing, opening


def test_relevance_swaps_part_of_the_middle_for_donor_text():
    cf = rewrite_of(ESSAY, "relevance", donor=DONOR)
    out = cf.rewrite
    borrowed = [s for s in re.split(r"(?<=\.)\s+", DONOR) if s in out]
    assert borrowed, out
    assert opening(out) == opening(ESSAY) and closing(out) == closing(ESSAY)
    assert 0.6 < len(out) / len(ESSAY) < 1.6
    assert "unrelated answer" in cf.change
    assert validate_rewrite(ESSAY, out).passed


def test_relevance_keeps_list_markers_and_item_labels():
    answer = (
        "Here are three tips for better sleep:\n\n"
        "- **Routine:** Go to bed and wake up at the same time every day, even on weekends.\n"
        "- **Light:** Avoid bright screens for an hour before bed because blue light delays sleep.\n"
        "- **Caffeine:** Skip coffee after lunch since caffeine stays in the body for many hours.\n"
        "- **Exercise:** Move during the day, but finish hard workouts a few hours before bedtime.\n\n"
        "Sleep well!"
    )
    out = rewrite_of(answer, "relevance", donor=DONOR).rewrite
    assert [line[:4] for line in out.splitlines()] == [line[:4] for line in answer.splitlines()]
    assert sum(label in out for label in ("**Routine:**", "**Light:**", "**Caffeine:**", "**Exercise:**")) == 4
    assert any(s in out for s in re.split(r"(?<=\.)\s+", DONOR))


@pytest.mark.parametrize(
    "donor, why",
    [
        ("", "no donor"),
        ("13", "no prose sentence"),
        ("```python\nprint('hi')\n```", "no prose sentence"),
        ("物体は収縮を続け無限に小さい物体になるのです。これは日本語の文章であり、英語ではありません。さらに長い説明がここに続きます。", "another language"),
    ],
)
def test_relevance_unsupported_without_a_usable_donor(donor, why):
    resp = degrade(ESSAY, "relevance", donor=donor)
    assert resp.status == "unsupported" and why in resp.error
