"""Completeness degrades: the later part of the body goes, opening, closing and format stay."""

from __future__ import annotations

import re

from rules_helpers import CODE_ANSWER, ESSAY, RECIPE, degrade, nonblank, rewrite_of

from crome.builder.stages.checks import validate_rewrite
from crome.text import closing, opening


def test_completeness_drops_the_later_steps_and_keeps_opening_sign_off_and_list():
    cf = rewrite_of(RECIPE, "completeness")
    out = cf.rewrite
    assert nonblank(out)[0] == nonblank(RECIPE)[0]
    assert nonblank(out)[-1] == "I hope this helps, and enjoy your dinner!"  # the sign-off stays
    assert "1. Preheat the oven" in out and "Rest the chicken" not in out  # the later part is gone
    markers = re.findall(r"^\d\. ", out, re.M)
    assert markers == [f"{k}. " for k in range(1, len(markers) + 1)] and 1 <= len(markers) < 6  # a kept prefix
    assert 0.3 < len(out) / len(RECIPE) < 0.8
    assert "Removed the later" in cf.change
    assert validate_rewrite(RECIPE, out).passed


def test_completeness_on_a_paragraph_drops_later_sentences_only():
    out = rewrite_of(ESSAY, "completeness").rewrite
    assert opening(out) == opening(ESSAY) and closing(out) == closing(ESSAY)
    assert "Water evaporates from oceans" in out
    assert "This is why forests are often humid" not in out
    assert validate_rewrite(ESSAY, out).passed


def test_completeness_on_code_cuts_inside_the_block_and_keeps_the_fences():
    out = rewrite_of(CODE_ANSWER, "completeness").rewrite
    assert out.count("```") == 2 and out.startswith("Here is a Python function") and out.endswith("Hope this helps!")
    assert "def largest_even(numbers):" in out
    assert "return best" not in out or "It walks the list" not in out
    assert validate_rewrite(CODE_ANSWER, out).passed


def test_completeness_with_several_code_blocks_drops_whole_blocks():
    blocks = "\n\n".join(f"Step {k}: define helper {k}.\n\n```python\ndef helper_{k}():\n    return {k}\n```" for k in range(1, 6))
    answer = f"Here are five helpers.\n\n{blocks}\n\nThat is all."
    out = rewrite_of(answer, "completeness").rewrite
    assert out.count("```") % 2 == 0 and 2 <= out.count("```") < answer.count("```")
    assert "def helper_1" in out and "def helper_5" not in out
    assert "return" in out.split("```")[1]  # a kept block is whole


def test_completeness_unsupported_when_too_short():
    for answer in ("Paris.", "Paris is the capital. It is in France."):
        resp = degrade(answer, "completeness")
        assert resp.status == "unsupported" and "too short to truncate" in resp.error
