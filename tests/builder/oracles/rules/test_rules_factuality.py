"""Factuality / correctness degrades: wrong numbers, units, negations and code operators, format kept."""

from __future__ import annotations

import random
import re

from rules_helpers import CODE_ANSWER, RECIPE, degrade, rewrite_of

from crome.builder.oracles.rules import perturb_numbers
from crome.builder.stages.checks import validate_rewrite


def numbers(text: str) -> list[str]:
    return re.findall(r"\d+(?:\.\d+)?", text)


def test_factuality_changes_several_numbers_and_keeps_the_format():
    cf = rewrite_of(RECIPE, "factuality")
    out = cf.rewrite
    assert len(out.splitlines()) == len(RECIPE.splitlines())
    assert [line[:3] for line in out.splitlines()] == [line[:3] for line in RECIPE.splitlines()]  # markers in place
    changed = [i for i, (a, b) in enumerate(zip(RECIPE.splitlines(), out.splitlines())) if a != b]
    assert len(changed) >= 2
    assert numbers(out) != numbers(RECIPE) or "°C" in out.replace("(220°C)", "")
    assert re.findall(r"^\d\. ", out, re.M) == re.findall(r"^\d\. ", RECIPE, re.M)  # list numbers are format, not facts
    assert "statement(s) wrong" in cf.change
    assert validate_rewrite(RECIPE, out).passed


def test_factuality_flips_negations_and_yes_no_without_numbers():
    answer = (
        "No, you cannot charge a phone with a potato alone.\n\n"
        "A potato battery is able to light a small LED. The current it gives is far too weak for a phone. "
        "Phones always need a steady five volt supply.\n\nConfidence: 90%"
    )
    out = rewrite_of(answer, "factuality").rewrite
    flips = [w for w in ("Yes,", "can charge", "is not able", "is far too weak", "never need") if w in out]
    assert len(flips) >= 2, out
    assert out.endswith("Confidence: 90%")  # a confidence line is no fact to perturb


def test_factuality_keeps_number_formats():
    rng = random.Random(1)
    for _ in range(50):
        year = perturb_numbers(["1994"], rng)[0]
        assert len(year) == 4 and year != "1994" and abs(int(year) - 1994) <= 12
        big = perturb_numbers(["1,500"], rng)[0]
        assert big != "1,500" and ("," in big) == (int(big.replace(",", "")) >= 1000)
        dec = perturb_numbers(["2.5"], rng)[0]
        assert re.fullmatch(r"\d+\.\d", dec) and dec != "2.5"
        lo, hi = perturb_numbers(["15", "20"], rng)
        assert int(lo) < int(hi) and (lo, hi) != ("15", "20")  # a range stays a range
        pct = perturb_numbers(["95"], rng, percent=True)[0]
        assert 0 <= float(pct) <= 100 and pct != "95"
        small = perturb_numbers(["3"], rng)[0]
        assert small != "3" and int(small) >= 1


def test_correctness_on_code_flips_an_operator_inside_the_block():
    out = rewrite_of(CODE_ANSWER, "correctness").rewrite
    code_in, code_out = CODE_ANSWER.split("```")[1], out.split("```")[1]
    assert code_in != code_out
    assert out.count("```") == 2 and out.splitlines()[0] == CODE_ANSWER.splitlines()[0]
    assert len(out.splitlines()) == len(CODE_ANSWER.splitlines())


def test_factuality_unsupported_without_facts():
    resp = degrade("Hello there, my friend, and welcome.", "factuality")
    assert resp.status == "unsupported" and "no numbers" in resp.error
