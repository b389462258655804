"""OpenAIOracle through the real `openai` client against the fake server."""

from __future__ import annotations

import asyncio

import pytest

from crome.builder.oracles import SystematicOracleError, get_oracle
from crome.builder.oracles.llm.openai import OpenAIOracle
from crome.schemas.oracle import Rubrics, Verdict
from fake_llm_server import FakeLLMServer
from oracle_contract import FAST, OracleContract, make_request


class TestOpenAIContract(OracleContract):
    provider = "openai"
    model = "gpt-4o-mini"
    key_env = "OPENAI_API_KEY"
    final_status = {"refusal": "refused", "blocked": "blocked", "truncated": "truncated"}
    expected_modes = OpenAIOracle.modes


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for env in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(env, raising=False)


def _run(oracle: OpenAIOracle, *requests) -> list:
    async def go() -> list:
        try:
            return list(await asyncio.gather(*(oracle.agenerate(r) for r in requests)))
        finally:
            await oracle.aclose()

    return asyncio.run(go())


def test_registry_name_and_capabilities(fake_llm_server: FakeLLMServer) -> None:
    oracle = get_oracle("openai:gpt-4o-mini", base_url=fake_llm_server.openai_url, rpm=None, tpm=None, seed=3)
    assert isinstance(oracle, OpenAIOracle)
    assert oracle.name == "openai:gpt-4o-mini" and oracle.provider == "openai"
    assert oracle.capabilities.upgrade and oracle.capabilities.safety and oracle.capabilities.batch


def test_strict_json_schema_is_sent(fake_llm_server: FakeLLMServer) -> None:
    oracle = OpenAIOracle("gpt-4o-mini", base_url=fake_llm_server.openai_url, **FAST)
    (resp,) = _run(oracle, make_request(0, Verdict))
    assert resp.ok
    fmt = fake_llm_server.requests[0].body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True and fmt["json_schema"]["name"] == "Verdict"
    schema = fmt["json_schema"]["schema"]
    assert "$defs" not in schema and "$ref" not in str(schema)
    others = schema["properties"]["others"]["items"]
    assert others["additionalProperties"] is False and others["required"] == ["rubric", "change"]
    assert schema["required"] == ["target", "others", "explanation"]


def test_local_server_without_key_gets_a_dummy_key(fake_llm_server: FakeLLMServer) -> None:
    oracle = OpenAIOracle("qwen2.5-7b-instruct", base_url=fake_llm_server.openai_url, **FAST)
    (resp,) = _run(oracle, make_request())
    assert resp.ok and fake_llm_server.credentials() == {"EMPTY"}
    assert "max_tokens" in fake_llm_server.requests[0].body  # what vLLM/Ollama/llama.cpp understand


def test_official_endpoint_uses_max_completion_tokens(fake_llm_server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # No base_url: the official API path; OPENAI_BASE_URL (read by the SDK) points it at the fake.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-official-path-0000")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_llm_server.openai_url)
    oracle = OpenAIOracle("gpt-4o-mini", **FAST)
    (resp,) = _run(oracle, make_request(max_output_tokens=321))
    assert resp.ok
    body = fake_llm_server.requests[0].body
    assert body["max_completion_tokens"] == 321 and "max_tokens" not in body
    assert body["temperature"] == 0.0


def test_retry_after_seconds_header_is_honoured(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.faults = ["rate_limit"]
    fake_llm_server.retry_after = "1"
    oracle = OpenAIOracle("gpt-4o-mini", base_url=fake_llm_server.openai_url, **FAST)
    (resp,) = _run(oracle, make_request())
    assert resp.ok and resp.attempts == 2
    first, second = fake_llm_server.requests
    assert second.started - first.finished >= 1.0


def test_retry_after_ms_header_wins_over_retry_after(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.faults = ["rate_limit"]
    fake_llm_server.retry_after = "30"
    fake_llm_server.retry_after_ms = "250"
    oracle = OpenAIOracle("gpt-4o-mini", base_url=fake_llm_server.openai_url, **FAST)
    (resp,) = _run(oracle, make_request())
    assert resp.ok
    first, second = fake_llm_server.requests
    assert 0.25 <= second.started - first.finished < 5


def test_retry_after_is_capped(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.faults = ["rate_limit"]
    fake_llm_server.retry_after = "3600"
    oracle = OpenAIOracle("gpt-4o-mini", base_url=fake_llm_server.openai_url, max_retry_after=0.2, **FAST)
    (resp,) = _run(oracle, make_request())
    assert resp.ok
    first, second = fake_llm_server.requests
    assert 0.2 <= second.started - first.finished < 2


def test_out_of_quota_429_is_systematic(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.mode = "insufficient_quota"
    oracle = OpenAIOracle("gpt-4o-mini", base_url=fake_llm_server.openai_url, **FAST)
    with pytest.raises(SystematicOracleError, match="out of quota"):
        _run(oracle, make_request(), make_request(1))
    assert fake_llm_server.count() <= 2  # no retries


def test_json_object_fallback_puts_the_schema_in_the_prompt(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.schema_support = "json_object"
    oracle = OpenAIOracle("gpt-4o-mini", base_url=fake_llm_server.openai_url, concurrency=1, **FAST)
    responses = _run(oracle, *(make_request(i) for i in range(3)))
    assert all(r.ok and isinstance(r.parsed, Rubrics) for r in responses)
    assert oracle.schema_mode == "json_object"
    assert [r.outcome for r in fake_llm_server.requests] == ["schema_rejected", "ok", "ok", "ok"]
    used = fake_llm_server.requests[1]
    assert used.body["response_format"] == {"type": "json_object"}
    assert used.messages[0][0] == "system" and "JSON Schema" in used.messages[0][1]
    assert used.schema == Rubrics.model_json_schema()


@pytest.mark.parametrize(
    "status, error, outcome",
    [
        (400, {"message": "This model's maximum context length is 8192 tokens.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}, "item"),
        (400, {"message": "Unsupported value: 'temperature' does not support 0.0 with this model.", "type": "invalid_request_error", "param": "temperature", "code": "unsupported_value"}, "systematic"),
        (422, {"message": "Something about this one request is off.", "type": "invalid_request_error", "param": None, "code": None}, "item"),
        (403, {"message": "Country, region, or territory not supported", "type": "request_forbidden", "param": None, "code": "unsupported_country_region_territory"}, "systematic"),
    ],
)
def test_client_errors_are_per_item_or_systematic(fake_llm_server: FakeLLMServer, status: int, error: dict, outcome: str) -> None:
    fake_llm_server.fixed_error = (status, {"error": error})
    oracle = OpenAIOracle("gpt-4o-mini", base_url=fake_llm_server.openai_url, **FAST)
    if outcome == "systematic":
        with pytest.raises(SystematicOracleError, match=str(status)):
            _run(oracle, make_request())
    else:
        (resp,) = _run(oracle, make_request())
        assert resp.status == "error" and str(status) in (resp.error or "") and resp.attempts == 1
    assert fake_llm_server.count() == 1  # never retried
