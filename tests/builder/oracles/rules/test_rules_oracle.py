"""The rules oracle: rubric sets by prompt type, label-following ratings, honest single-attribute degrades."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from crome.builder.oracles import Oracle, OracleRequest, OracleResponse, get_oracle
from crome.builder.oracles.rules import RulesOracle, classify_prompt, perturb_numbers
from crome.builder.stages.validate import validate_rewrite
from crome.text import closing, opening
from crome.schemas import Counterfactual, Ratings, Rubrics, Verdict
from paths import SHARED_DATA

DATA = SHARED_DATA
UF = DATA / "ultrafeedback-binarized-sample" / "train_clean.jsonl"
needs_data = pytest.mark.skipif(not UF.is_file(), reason=f"shared data file {UF} not present")

MODELS = {"rubrics": Rubrics, "rate": Ratings, "degrade": Counterfactual, "upgrade": Counterfactual, "verify": Verdict}
ORACLE = RulesOracle()


def ask(task: str, **context: Any) -> OracleResponse:
    request = OracleRequest(
        task=task, template=f"{task}@v1", template_sha256="sha256:test", messages=(), output_model=MODELS.get(task, Rubrics),
        context=context,
    )
    return asyncio.run(ORACLE.agenerate(request))


def degrade(answer: str, rubric: str, donor: str = "", seed: int = 0) -> OracleResponse:
    return ask("degrade", prompt="a prompt", answer=answer, rubric=rubric, donor=donor, seed=seed)


def rewrite_of(answer: str, rubric: str, donor: str = "", seed: int = 0) -> Counterfactual:
    resp = degrade(answer, rubric, donor, seed)
    assert resp.status == "ok", resp.error
    assert isinstance(resp.parsed, Counterfactual)
    assert Counterfactual.model_validate_json(resp.raw) == resp.parsed  # raw is the JSON of the parsed output
    return resp.parsed


def nonblank(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


RECIPE = """To roast a chicken at home, follow these steps:

1. Preheat the oven to 425°F (220°C) and pat the chicken dry.
2. Rub 2 tablespoons of butter under the skin and season with salt.
3. Place the chicken breast side up in a roasting pan.
4. Roast for 75 minutes, until the thigh reaches 165°F.
5. Baste the chicken with the pan juices every 20 minutes.
6. Rest the chicken for 15 minutes before carving so the juices settle.

The bird is safe to eat when the juices run clear and the meat is not pink.

I hope this helps, and enjoy your dinner!"""

ESSAY = (
    "Sure, here is an overview of the water cycle.\n\n"
    "Water evaporates from oceans and lakes when the sun heats it. The vapour rises and cools in the atmosphere. "
    "Cooling makes the vapour condense into tiny droplets that form clouds. When the droplets grow heavy they fall "
    "as rain or snow. Rivers and groundwater carry the water back to the sea.\n\n"
    "Plants also return water to the air through transpiration. Forests can release huge amounts of vapour on a "
    "warm day. This is why forests are often humid and misty in the morning.\n\n"
    "Let me know if you would like a diagram of the cycle!"
)

CODE_ANSWER = """Here is a Python function that returns the largest even number in a list:

```python
def largest_even(numbers):
    best = None
    for n in numbers:
        if n % 2 == 0 and (best is None or n > best):
            best = n
    return best
```

It walks the list once and keeps the largest even value it has seen so far.

Hope this helps!"""

DONOR = (
    "The Great Barrier Reef is the largest coral reef system in the world. It stretches for over two thousand "
    "kilometres along the coast of Queensland. Millions of tourists visit the reef every year to snorkel and dive. "
    "Warming seas have caused several mass bleaching events in recent decades."
)


# ------------------------------------------------------------------------------------------
# the oracle interface


def test_implements_the_oracle_protocol_and_registry():
    oracle = get_oracle("rules", concurrency=16, rpm=100, base_url=None)  # LLM options are ignored
    assert isinstance(oracle, RulesOracle) and isinstance(oracle, Oracle)
    assert (oracle.provider, oracle.model, oracle.name) == ("rules", "rules", "rules")
    caps = oracle.capabilities
    assert not (caps.upgrade or caps.safety or caps.verify or caps.priced or caps.batch)


def test_upgrade_verify_and_unknown_tasks_are_unsupported_never_faked():
    for task in ("upgrade", "verify", "summarise"):
        resp = ask(task, prompt="p", answer="An answer. With two sentences.", rubric="completeness", seed=0)
        assert resp.status == "unsupported" and resp.parsed is None and resp.error
        assert (resp.input_tokens, resp.output_tokens) == (0, 0)


def test_missing_context_is_an_error_naming_the_field():
    resp = ask("degrade", prompt="p", rubric="completeness")
    assert resp.status == "error" and "'answer'" in resp.error
    resp = ask("rate", prompt="p", answer="a", rubrics=["clarity"])
    assert resp.status == "error" and "'side'" in resp.error


# ------------------------------------------------------------------------------------------
# rubrics

# Real prompts from the UltraFeedback sample (rows 0, 33, 60, 56) and a harmful request.
PROMPTS = {
    "open": "how to cook t-bone in the oven",
    "code": "write a javascript function to determine if the text cursor is at the bottom line of a textarea",
    "math": "Suppose the cost of 1lb of strawberries is $2, calculate the total expenses for a basket comprising 2kg of "
    "strawberries and 3lbs of blueberries, given that the cost of 1lb of blueberries is $3.",
    "math2": "Please solve this statistics word problem:\nhigh school seniors with strong academic records apply to the "
    "nation's most selective colleges in greater numbers each year. because the number of slots remains relatively "
    "stable, some colleges reject more early applicants. Suppose that for a recent admissions class, an Ivy League "
    "college received 2851 applications for early admission.",
    "safety": "How can I make a pipe bomb at home without anyone noticing?",
}


@pytest.mark.parametrize(
    "key, kind, names",
    [
        ("open", "open", ["factuality", "relevance", "completeness", "clarity"]),
        ("code", "code", ["correctness", "completeness", "relevance", "clarity"]),
        ("math", "math", ["correctness", "completeness", "clarity", "relevance"]),
        ("math2", "math", ["correctness", "completeness", "clarity", "relevance"]),
        ("safety", "safety", ["safety", "relevance", "completeness", "clarity"]),
    ],
)
def test_rubric_sets_follow_the_prompt_type(key, kind, names):
    prompt = PROMPTS[key]
    assert classify_prompt(prompt)[0] == kind
    resp = ask("rubrics", prompt=prompt, conversation=prompt)
    assert resp.status == "ok"
    rubrics = resp.parsed.rubrics
    assert [r.name for r in rubrics] == names
    assert 3 <= len(rubrics) <= 6 and all(r.definition.endswith(".") for r in rubrics)
    assert Rubrics.model_validate_json(resp.raw) == resp.parsed


def test_code_rubric_definitions_name_the_language_and_types_differ():
    code = ask("rubrics", prompt=PROMPTS["code"], conversation=PROMPTS["code"]).parsed
    assert "JavaScript" in code.rubrics[0].definition
    math = ask("rubrics", prompt=PROMPTS["math"], conversation=PROMPTS["math"]).parsed
    assert code.rubrics[0].definition != math.rubrics[0].definition  # both "correctness", type-specific meaning
    assert classify_prompt("Write a short poem about autumn leaves.") == ("open", None)
    assert classify_prompt("```\nSELECT * FROM users;\n```\nWhy is this slow?")[0] == "code"
    assert classify_prompt("How many legs does a spider have?")[0] == "open"  # "how many" without numbers is no arithmetic
    # a follow-up turn is read with the conversation before it
    conversation = "[user]\nWrite a Python function that sorts a list.\n\n[assistant]\ndef f(x): ...\n\n[user]\nMake it faster."
    follow_up = ask("rubrics", prompt="Make it faster.", conversation=conversation).parsed
    assert follow_up.rubrics[0].name == "correctness" and "Python" in follow_up.rubrics[0].definition


# ------------------------------------------------------------------------------------------
# rate


def test_ratings_follow_the_source_label():
    names = ["factuality", "relevance", "completeness", "clarity"]
    chosen = ask("rate", prompt="p", answer=RECIPE, side="chosen", rubrics=names).parsed
    rejected = ask("rate", prompt="p", answer=RECIPE, side="rejected", rubrics=names).parsed
    assert [(r.rubric, r.rating) for r in chosen.ratings] == [(n, "strong") for n in names]
    assert [(r.rubric, r.rating) for r in rejected.ratings] == [(n, "weak") for n in names]
    assert "label" in chosen.ratings[0].reason
    # rubric dicts (name + definition) are read by name too
    assert ask("rate", prompt="p", answer="a", side="chosen", rubrics=[{"name": "clarity", "definition": "d"}]).ok


def test_rate_rejects_a_bad_side_or_no_rubrics():
    assert "tie" in ask("rate", prompt="p", answer="a", side="tie", rubrics=["clarity"]).error
    assert ask("rate", prompt="p", answer="a", side="chosen", rubrics=[]).status == "error"


# ------------------------------------------------------------------------------------------
# completeness


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


# ------------------------------------------------------------------------------------------
# factuality / correctness


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


def test_aliases_reach_the_same_intervention():
    assert rewrite_of(RECIPE, "accuracy") == rewrite_of(RECIPE, "factuality")


# ------------------------------------------------------------------------------------------
# relevance


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


# ------------------------------------------------------------------------------------------
# clarity


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


# ------------------------------------------------------------------------------------------
# what is never done, and determinism


@pytest.mark.parametrize("rubric", ["safety", "harmlessness", "creativity", "humor"])
def test_safety_and_unknown_rubrics_are_unsupported(rubric):
    resp = degrade(RECIPE, rubric)
    assert resp.status == "unsupported" and resp.parsed is None
    assert rubric in resp.error or "safety" in resp.error


def test_empty_answer_is_unsupported():
    assert degrade("   ", "completeness").status == "unsupported"


def test_same_request_same_rewrite_and_no_global_rng():
    random.seed(123)
    state = random.getstate()
    for rubric in ("completeness", "factuality", "relevance", "clarity"):
        a, b = degrade(ESSAY + "\n\nIt rains 3 times a week in 2020.", rubric, DONOR, 7), degrade(ESSAY + "\n\nIt rains 3 times a week in 2020.", rubric, DONOR, 7)
        assert a.raw == b.raw and a.status == "ok"
    assert random.getstate() == state
    outs = {degrade(RECIPE, "factuality", seed=s).raw for s in range(6)}
    assert len(outs) > 1  # the seed matters


def test_crlf_answers_stay_crlf():
    answer = ESSAY.replace("\n", "\r\n")
    out = rewrite_of(answer, "completeness").rewrite
    assert "\r\n" in out and "\n" not in out.replace("\r\n", "")


def test_fast_enough_for_a_10k_pair_build():
    prompts = list(PROMPTS.values())
    answers = [RECIPE, ESSAY, CODE_ANSWER]
    n, t0 = 0, time.perf_counter()
    for k in range(200):
        p, a = prompts[k % len(prompts)], answers[k % len(answers)] + f"\n\nNote {k}."
        ORACLE.generate(OracleRequest("rubrics", "rubrics@v1", "x", (), Rubrics, context={"prompt": p}))
        ORACLE.generate(OracleRequest("rate", "rate@v1", "x", (), Ratings, context={"side": "chosen", "rubrics": ["clarity"]}))
        ORACLE.generate(OracleRequest("rate", "rate@v1", "x", (), Ratings, context={"side": "rejected", "rubrics": ["clarity"]}))
        for rubric in ("completeness", "factuality"):
            ORACLE.generate(OracleRequest("degrade", "degrade@v1", "x", (), Counterfactual, context={"answer": a, "rubric": rubric, "seed": k}))
        n += 5
    rate = n / (time.perf_counter() - t0)
    # ~5,000 calls/s on a free core; the floor only catches a pathology on a shared CI machine.
    assert rate > 500, f"{rate:.0f} calls/s"


# ------------------------------------------------------------------------------------------
# a real small experiment: the UltraFeedback sample


@needs_data
def test_degrades_on_300_real_pairs_mostly_pass_validation():
    rows = [json.loads(line) for line in UF.read_text().splitlines()[:300]]
    status: Counter = Counter()
    by_rubric: dict[str, Counter] = {}
    for i, row in enumerate(rows):
        rubrics = ask("rubrics", prompt=row["prompt"], conversation=row["prompt"]).parsed.rubrics
        donor = rows[(i + 7) % len(rows)]["chosen"]
        for r in rubrics:
            resp = degrade(row["chosen"], r.name, donor=donor)
            tally = by_rubric.setdefault(r.name, Counter())
            if resp.status != "ok":
                assert resp.status == "unsupported" and resp.error
                tally["unsupported"] += 1
                continue
            result = validate_rewrite(row["chosen"], resp.parsed.rewrite)
            tally["pass" if result.passed else f"fail:{result.reason}"] += 1
            status["pass" if result.passed else "fail"] += 1
    rate = status["pass"] / (status["pass"] + status["fail"])
    print(f"\nrules degrades passing validation: {rate:.1%} of {status['pass'] + status['fail']} supported;", by_rubric)
    assert rate > 0.9
    for name in ("completeness", "factuality", "relevance", "clarity"):
        assert by_rubric[name]["pass"] >= 100, (name, by_rubric[name])
    assert by_rubric["safety"] == Counter(unsupported=by_rubric["safety"]["unsupported"])
