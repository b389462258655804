"""Rubric sets by prompt type: the prompt classifier and the definitions each type gets."""

from __future__ import annotations

import pytest
from rules_helpers import PROMPTS, ask

from crome.builder.oracles.rules import classify_prompt
from crome.schemas import Rubrics


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
