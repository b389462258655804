"""Validation of a rewrite: each check passes and fails where it should, with its figure."""

from __future__ import annotations


import pytest
from pydantic import ValidationError

from crome.builder.stages.checks import (
    CHECKS,
    ValidationConfig,
    edit_stats,
    ends_open,
    language_similarity,
    surface_kept,
    validate_rewrite,
)
from crome.schemas import Quality

ORIGINAL = """Here is how to make cold brew coffee at home.

1. Grind 100 grams of coffee coarsely.
2. Stir it into 1 litre of cold water in a large jar.
3. Cover the jar and leave it in the fridge for 16 hours.
4. Strain the coffee through a paper filter.

Dilute the concentrate with water or milk to taste. It keeps for **two weeks** in the fridge.

Enjoy your coffee!"""

# Two facts changed (100 -> 60 grams, 16 -> 8 hours), every line and format kept.
FACT_EDIT = ORIGINAL.replace("100 grams", "60 grams").replace("16 hours", "8 hours")


def check(name: str, original: str, rewrite: str, truncated: bool = False, cfg: ValidationConfig | None = None):
    return CHECKS[name](original, rewrite, truncated, cfg or ValidationConfig())


def test_an_honest_rewrite_passes_every_check_and_fills_quality():
    result = validate_rewrite(ORIGINAL, FACT_EDIT)
    assert result.passed and result.failed is None and result.reason is None and result.failed_check() is None
    assert [c.name for c in result.checks] == list(CHECKS)
    assert all(c.passed for c in result.checks)
    q = result.quality(verification="skipped")
    assert isinstance(q, Quality) and q.checks == list(CHECKS) and q.verification == "skipped"
    assert 0 < q.edit_ratio < 0.1 and q.length_ratio == pytest.approx(len(FACT_EDIT) / len(ORIGINAL), abs=1e-3)
    assert q.surface_kept == 1.0
    assert result.quality_fields() == {"edit_ratio": q.edit_ratio, "length_ratio": q.length_ratio, "surface_kept": 1.0}
    assert result.passed_names() == list(CHECKS)


def test_the_first_failed_check_is_the_rejection_reason():
    rewrite = "Here is the rewritten response:\n\n" + ORIGINAL[:30]
    result = validate_rewrite(ORIGINAL, rewrite)
    assert not result.passed
    failed = [c.name for c in result.checks if not c.passed]
    assert failed == ["length_ratio", "no_meta_commentary", "not_truncated", "surface_kept"]
    assert result.failed == "length_ratio" and result.reason == "length_ratio_too_low"
    assert result.failed_check().name == "length_ratio"
    assert all(name in result.detail for name in failed)
    assert result.quality().checks == ["non_empty", "edit_ratio", "same_language"]


# ------------------------------------------------------------------------------------------
# each check


def test_non_empty():
    assert check("non_empty", ORIGINAL, ORIGINAL).passed
    bad = check("non_empty", ORIGINAL, " \n\t ")
    assert not bad.passed and bad.figure == 0 and bad.reason == "empty_rewrite"


def test_edit_ratio_floor_and_changed_words():
    same = check("edit_ratio", ORIGINAL, ORIGINAL)
    assert not same.passed and same.figure == 0.0 and same.reason == "edit_ratio_too_low"
    # whitespace, case and punctuation are format, not content: still the original
    touched = ORIGINAL.replace("Enjoy your coffee!", "enjoy your coffee.").replace("\n\n", "\n\n\n")
    assert edit_stats(ORIGINAL, touched) == (0.0, 0) and not check("edit_ratio", ORIGINAL, touched).passed
    # one word in a long answer is below both floors; two changed facts pass on the changed-words floor
    one = ORIGINAL.replace("16 hours", "8 hours")
    assert not check("edit_ratio", ORIGINAL, one).passed
    two = check("edit_ratio", ORIGINAL, FACT_EDIT)
    assert two.passed and two.figure < 0.03
    assert not check("edit_ratio", ORIGINAL, FACT_EDIT, cfg=ValidationConfig(min_changed_words=5)).passed
    # a short answer passes on the ratio alone
    assert check("edit_ratio", "No, it is not.", "Yes, it is not.").passed
    ratio, changed = edit_stats("a b c d", "x y z w")
    assert (ratio, changed) == (1.0, 4)


def test_edit_stats_on_long_answers():
    """50 words replaced and 100 dropped in 2,000 (its speed is in benchmarks/bench_stages.py)."""
    words = [f"word{i % 997}" for i in range(2000)]
    a = " ".join(words)
    b = " ".join(words[:700] + ["changed"] * 50 + words[750:1500] + words[1600:])
    ratio, changed = edit_stats(a, b)
    assert changed == 150
    assert 0.03 < ratio < 0.1  # far above the 0.03 floor of a real edit, far below a rewrite


def test_length_ratio_band():
    ok = check("length_ratio", ORIGINAL, ORIGINAL[: len(ORIGINAL) // 2])
    assert ok.passed and ok.figure == pytest.approx(0.5, abs=0.01)
    low = check("length_ratio", ORIGINAL, ORIGINAL[:40])
    assert not low.passed and low.reason == "length_ratio_too_low"
    high = check("length_ratio", ORIGINAL, ORIGINAL * 3)
    assert not high.passed and high.reason == "length_ratio_too_high" and high.figure > 2
    empty = check("length_ratio", "", "something")
    assert not empty.passed and empty.figure is None and empty.reason == "empty_original"


@pytest.mark.parametrize(
    "rewrite",
    [
        "Here is the rewritten response:\n\n{o}",
        "Sure! Here's a revised version of the answer.\n\n{o}",
        "Rewritten answer:\n{o}",
        "{o}\n\n(Note: I changed the grind size to introduce an error.)",
        "As an AI language model, I think:\n{o}",
        "{o}\n\nI have rewritten the answer to remove the last steps.",
        "{o}\n\nChanges made: removed step 4.",
    ],
)
def test_meta_commentary_is_flagged(rewrite):
    result = check("no_meta_commentary", ORIGINAL, rewrite.format(o=ORIGINAL))
    assert not result.passed and result.figure >= 1 and result.reason == "meta_commentary"


def test_meta_phrases_the_original_already_has_are_its_surface():
    original = "As an AI, I cannot taste coffee. Here is a revised version of your essay:\n\nCoffee is great."
    rewrite = original.replace("great", "terrible")
    result = check("no_meta_commentary", original, rewrite)
    assert result.passed and result.figure == 0
    # ...but a second "As an AI" is new
    assert not check("no_meta_commentary", original, rewrite + " As an AI, I agree.").passed
    # ordinary words are not commentary
    assert check("no_meta_commentary", ORIGINAL, ORIGINAL + "\nNote: the coffee was changed by the cold water.").passed


def test_not_truncated():
    assert check("not_truncated", ORIGINAL, FACT_EDIT).passed
    flagged = check("not_truncated", ORIGINAL, FACT_EDIT, truncated=True)
    assert not flagged.passed and flagged.reason == "truncated" and "output limit" in flagged.detail
    mid = check("not_truncated", ORIGINAL, ORIGINAL[:-40] + " and then leave the jar in")
    assert not mid.passed and "mid-sentence" in mid.detail
    code = "Run this:\n\n```python\nprint('hi')\n```\n\nDone."
    open_fence = check("not_truncated", code, "Run this:\n\n```python\nprint('hi')")
    assert not open_fence.passed and "code fence" in open_fence.detail
    # an original that itself stops mid-sentence does not make its rewrite a truncation
    assert check("not_truncated", "The answer is that the jar should be", "The answer is that the pot should be").passed
    assert not ends_open("Confidence: 90%") and not ends_open("- a list item") and ends_open("It depends on the")


def test_same_language():
    en = "The water cycle moves water between the oceans, the air and the land. It is driven by the heat of the sun."
    es = "El ciclo del agua mueve el agua entre los océanos, el aire y la tierra. Está impulsado por el calor del sol."
    zh = "水循环使水在海洋、空气和陆地之间移动。它由太阳的热量驱动，使水蒸发。"
    assert check("same_language", en, en.replace("oceans", "seas")).passed
    for other in (es, zh):
        result = check("same_language", en, other)
        assert not result.passed and result.figure < 0.2 and result.reason == "language_changed"
    assert check("same_language", zh, zh.replace("海洋", "大海")).passed
    short = check("same_language", "13", "16")
    assert short.passed and short.figure is None and "too few letters" in short.detail
    assert language_similarity(en, en + " " + es) > 0.5  # a borrowed foreign sentence is not a new language


def test_surface_kept_floor_and_features():
    assert surface_kept(ORIGINAL, FACT_EDIT) == (1.0, [])
    no_sign_off = ORIGINAL.replace("\n\nEnjoy your coffee!", "")
    share, lost = surface_kept(ORIGINAL, no_sign_off)
    assert lost == ["closing"] and share == pytest.approx(1 - 1 / 4)  # opening, closing, numbered, bold
    flattened = ORIGINAL.replace("**two weeks**", "two weeks")
    for k in range(1, 5):
        flattened = flattened.replace(f"{k}. ", "")
    share, lost = surface_kept(ORIGINAL, flattened)
    assert set(lost) == {"numbered", "bold"} and share == 0.5
    result = check("surface_kept", ORIGINAL, flattened)
    assert not result.passed and result.reason == "surface_changed" and "numbered" in result.detail
    # a plain answer is judged on its opening and closing: losing the sign-off fails at once
    plain = "Cold brew is smooth. It takes a day to make. Enjoy it cold!"
    assert not check("surface_kept", plain, "Cold brew is smooth. It takes a day to make.").passed
    # a changed fact or a flipped yes/no inside the opening still keeps the opening
    assert surface_kept("It takes 16 hours to brew. Strain it.", "It takes 8 hours to brew. Strain it.") == (1.0, [])
    assert surface_kept("No, it is not safe. Ask a doctor.", "Yes, it is not safe. Ask a doctor.") == (1.0, [])


def test_surface_code_blocks_may_shrink_but_not_vanish_or_open():
    two = "Code:\n\n```py\na = 1\n```\n\nMore:\n\n```py\nb = 2\n```\n\nBye."
    one = "Code:\n\n```py\na = 1\n```\n\nBye."
    assert surface_kept(two, one) == (1.0, [])
    assert "code_fences" in surface_kept(two, "Code:\n\na = 1\n\nBye.")[1]
    assert "code_fences" in surface_kept(two, "Code:\n\n```py\na = 1\n\nBye.")[1]
    assert "headers" in surface_kept("# Title\n\nText. More.", "Text. More.")[1]
    assert "bullets" in surface_kept("Intro.\n- a\n- b\nEnd.", "Intro.\na\nb\nEnd.")[1]


def test_config_forbids_unknown_fields_and_bad_values():
    with pytest.raises(ValidationError):
        ValidationConfig(min_edit_ratioo=0.1)
    with pytest.raises(ValidationError):
        ValidationConfig(min_surface_kept=1.5)
    cfg = ValidationConfig(min_surface_kept=0.9)
    no_sign_off = ORIGINAL.replace("\n\nEnjoy your coffee!", "")
    assert validate_rewrite(ORIGINAL, no_sign_off.replace("100", "60").replace("16", "8")).passed  # 0.75 >= 0.6
    assert validate_rewrite(ORIGINAL, no_sign_off.replace("100", "60").replace("16", "8"), cfg=cfg).failed == "surface_kept"
