"""Pieces behind the LLM oracles: prices, Retry-After, redaction, schema adaptation, JSON extraction."""

from __future__ import annotations

import email.utils
import json
import logging

import pytest
from pydantic import ValidationError

from crome.builder.oracles.llm import pricing
from crome.builder.oracles.llm.pricing import estimate_cost, price_for
from crome.builder.oracles.llm.retry import parse_retry_after, parse_retry_delay, redact, register_secret
from crome.builder.oracles.llm.structured import (
    extract_json,
    gemini_openapi_schema,
    openai_strict_schema,
    parse_output,
    reask_message,
    with_schema_instruction,
)
from crome.schemas.oracle import OUTPUT_MODELS, Rubrics, Verdict
from fake_llm_server import RETRIED, example_from_schema, expected_requests, scheduled_faults, seeded_faults

# -- pricing ---------------------------------------------------------------------------------


def test_prices_per_million_tokens_and_batch_half(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CROME_PRICES", raising=False)
    assert estimate_cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.15 + 0.60)
    assert estimate_cost("gemini-2.0-flash", 2_000_000, 500_000) == pytest.approx(0.2 + 0.2)
    assert estimate_cost("gpt-4o-mini", 1_000_000, 1_000_000, batch=True) == pytest.approx((0.15 + 0.60) / 2)
    for model in ("gpt-4o", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gemini-2.0-flash-lite", "gemini-2.5-flash", "gemini-2.5-pro"):
        assert price_for(model) is not None, model


def test_snapshot_names_resolve_to_their_family(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CROME_PRICES", raising=False)
    assert price_for("gpt-4o-mini-2024-07-18") == price_for("gpt-4o-mini")
    assert price_for("gemini-2.0-flash-001") == price_for("gemini-2.0-flash")
    assert price_for("models/gemini-2.5-flash-preview-05-20") == price_for("gemini-2.5-flash")
    assert price_for("openai:gpt-4o") == price_for("gpt-4o")


def test_unknown_model_is_none_and_warns_once(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("CROME_PRICES", raising=False)
    caplog.set_level(logging.WARNING, logger="crome.builder.oracles.llm.pricing")
    assert estimate_cost("my-local-llama", 10, 10) is None
    assert estimate_cost("my-local-llama", 10, 10) is None
    assert sum("my-local-llama" in r.message for r in caplog.records) == 1


def test_override_file_replaces_and_adds_models(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('[models."gpt-4o-mini"]\ninput = 1.0\noutput = 2.0\nbatch_input = 0.1\nbatch_output = 0.2\n\n[models."my-local-llama"]\ninput = 0\noutput = 0\n')
    monkeypatch.setenv("CROME_PRICES", str(path))
    assert estimate_cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(3.0)
    assert estimate_cost("gpt-4o-mini", 1_000_000, 1_000_000, batch=True) == pytest.approx(0.3)
    assert estimate_cost("my-local-llama", 5000, 5000) == 0.0
    assert estimate_cost("gemini-2.0-flash", 1_000_000, 0) == pytest.approx(0.10)  # packaged entries stay


@pytest.mark.parametrize(
    "content, message",
    [
        ('[models."x"]\noutput = 1.0\n', "lacks input"),
        ('[models."x"]\ninput = -1\noutput = 1.0\n', "non-negative"),
        ('[models."x"]\ninput = 1\noutput = 1\ncurrency = "EUR"\n', "unknown keys"),
        ("models = 3\n", "expected a"),
        ("[models\n", "not valid TOML"),
    ],
)
def test_bad_override_file_names_the_problem(tmp_path, monkeypatch: pytest.MonkeyPatch, content: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    monkeypatch.setenv("CROME_PRICES", str(path))
    with pytest.raises(ValueError, match=message):
        pricing.price_table()


# -- Retry-After ---------------------------------------------------------------------------


def test_retry_after_forms() -> None:
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=1_000_000) == pytest.approx(30)
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None and parse_retry_after(None) is None


def test_google_retry_info() -> None:
    body = {"error": {"code": 429, "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]}}
    assert parse_retry_delay(body) == 1.5
    assert parse_retry_delay({"error": {"details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo"}]}}) is None
    assert parse_retry_delay("not a dict") is None


# -- secrets ---------------------------------------------------------------------------------


def test_redact_removes_registered_keys_and_key_shapes() -> None:
    register_secret("registered-secret-value-123")
    text = (
        "key registered-secret-value-123 in text; Authorization: Bearer abc.def-ghi; "
        "GET /v1/models?key=AIzaSyA1234567890abcdefghijklmnopqrstuv&alt=json; "
        '{"x-goog-api-key": "zzz-111"}; sk-proj-ABCDEFGHIJKLMNOPqrstuv'
    )
    out = redact(text, secrets=["zzz-111"])
    for leaked in ("registered-secret-value-123", "abc.def-ghi", "AIzaSy", "zzz-111", "ABCDEFGHIJKLMNOP"):
        assert leaked not in out
    assert "alt=json" in out and "[REDACTED]" in out
    assert redact("nothing secret here") == "nothing secret here"
    # Model output keeps text that merely looks like a credential; only real secrets go.
    answer = "Send `Authorization: Bearer <token>` and registered-secret-value-123"
    assert redact(answer, patterns=False) == "Send `Authorization: Bearer <token>` and [REDACTED]"


# -- structured output ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OUTPUT_MODELS))
def test_openai_strict_schema_closes_every_object(name: str) -> None:
    schema = openai_strict_schema(OUTPUT_MODELS[name])
    assert "$defs" not in schema and "$ref" not in json.dumps(schema)

    def objects(node):
        if isinstance(node, dict):
            if node.get("type") == "object":
                yield node
            for value in node.values():
                yield from objects(value)
        elif isinstance(node, list):
            for value in node:
                yield from objects(value)

    for obj in objects(schema):
        assert obj["additionalProperties"] is False
        assert obj["required"] == list(obj["properties"])
    # What pydantic enforces anyway and strict mode accepts stays: the rubric-name pattern, item counts.
    rubrics = openai_strict_schema(Rubrics)["properties"]["rubrics"]
    assert rubrics["minItems"] == 3 and rubrics["maxItems"] == 6 and "pattern" in rubrics["items"]["properties"]["name"]


def test_gemini_openapi_schema_is_inlined_and_plain() -> None:
    schema = gemini_openapi_schema(Verdict)
    text = json.dumps(schema)
    assert "$ref" not in text and "additionalProperties" not in text and '"title"' not in text
    assert schema["properties"]["others"]["items"]["properties"]["change"]["enum"] == ["better", "same", "worse"]


def test_schema_instruction_joins_the_system_message() -> None:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    out = with_schema_instruction(msgs, Verdict)
    assert len(out) == 2 and out[0]["content"].startswith("be brief") and "JSON Schema" in out[0]["content"]
    assert msgs[0]["content"] == "be brief"  # the caller's list is untouched
    assert with_schema_instruction([{"role": "user", "content": "hi"}], Verdict)[0]["role"] == "system"


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1}',
        '  {"a": 1}\n',
        'Sure!\n```json\n{"a": 1}\n```\nAnything else?',
        '```\n{"a": 1}\n```',
        'Here it is: {"a": 1} hope it helps',
    ],
)
def test_extract_json_finds_the_object(text: str) -> None:
    assert extract_json(text) == {"a": 1}


def test_extract_json_does_not_mistake_an_inner_object_for_the_answer() -> None:
    with pytest.raises(json.JSONDecodeError):
        extract_json('{"rubrics": [{"name": "factuality", "definition": "x"}, {"name": ')


def test_parse_output_validates_and_reask_names_the_fields() -> None:
    with pytest.raises(ValidationError) as info:
        parse_output('{"target": "better", "others": [], "explanation": 3}', Verdict)
    message = reask_message(info.value)
    assert "explanation" in message and "validation error" in message and "https://" not in message


# -- the fake server's own arithmetic --------------------------------------------------------


def test_fake_examples_validate_against_every_output_model() -> None:
    for model in OUTPUT_MODELS.values():
        model.model_validate(example_from_schema(model.model_json_schema()))
        model.model_validate(example_from_schema(openai_strict_schema(model)))
        model.model_validate(example_from_schema(gemini_openapi_schema(model)))


def test_expected_requests_counts_one_final_per_item_plus_retried_faults() -> None:
    plan = scheduled_faults(["rate_limit", None, "refusal", "schema_invalid", "drop", None])
    assert expected_requests(plan, 3) == 6
    seeded = seeded_faults(0.2, seed=1)
    n = expected_requests(seeded, 100)
    assert n == 100 + sum(seeded(i) in RETRIED for i in range(n))
    assert seeded(5) == seeded_faults(0.2, seed=1)(5)  # deterministic by request order
