"""GeminiOracle through the real `google-genai` client against the fake server."""

from __future__ import annotations

import asyncio

import pytest

from crome.builder.oracles import get_oracle
from crome.builder.oracles.llm.gemini import GeminiOracle
from crome.schemas.oracle import Rubrics, Verdict
from fake_llm_server import FakeLLMServer
from oracle_contract import FAST, OracleContract, make_request


class TestGeminiContract(OracleContract):
    provider = "gemini"
    model = "gemini-2.0-flash"
    key_env = "GEMINI_API_KEY"
    # Gemini has no refusal field: a blocked prompt (promptFeedback.blockReason) is a block.
    final_status = {"refusal": "blocked", "blocked": "blocked", "truncated": "truncated"}
    expected_modes = GeminiOracle.modes


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for env in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-test-key-0000")


def _run(oracle: GeminiOracle, *requests) -> list:
    async def go() -> list:
        try:
            return list(await asyncio.gather(*(oracle.agenerate(r) for r in requests)))
        finally:
            await oracle.aclose()

    return asyncio.run(go())


def test_registry_name_and_capabilities(fake_llm_server: FakeLLMServer) -> None:
    oracle = get_oracle("gemini:gemini-2.0-flash", base_url=fake_llm_server.url, rpm=None, tpm=None, seed=3)
    assert isinstance(oracle, GeminiOracle)
    assert oracle.name == "gemini:gemini-2.0-flash" and oracle.provider == "gemini"
    assert oracle.capabilities.upgrade and oracle.capabilities.safety and oracle.capabilities.batch


def test_request_shape_key_header_system_instruction_and_json_schema(fake_llm_server: FakeLLMServer) -> None:
    oracle = GeminiOracle("gemini-2.0-flash", base_url=fake_llm_server.url, **FAST)
    (resp,) = _run(oracle, make_request(0, Verdict, max_output_tokens=512, temperature=0.3))
    assert resp.ok and isinstance(resp.parsed, Verdict)
    record = fake_llm_server.requests[0]
    assert record.path.endswith("/models/gemini-2.0-flash:generateContent")
    assert record.credential == "gemini-test-key-0000" and "key=" not in record.path  # a header, never the URL
    body = record.body
    assert body["systemInstruction"]["parts"][0]["text"].startswith("You list the causal rubrics")
    assert [c["role"] for c in body["contents"]] == ["user"]
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == Verdict.model_json_schema()
    assert config["maxOutputTokens"] == 512 and config["temperature"] == 0.3


def test_google_api_key_is_the_fallback_env(fake_llm_server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.setenv("GOOGLE_API_KEY", "google-test-key-1111")
    (resp,) = _run(GeminiOracle("gemini-2.0-flash", base_url=fake_llm_server.url, **FAST), make_request())
    assert resp.ok and fake_llm_server.credentials() == {"google-test-key-1111"}


def test_reask_turns_are_model_and_user_contents(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.faults = ["malformed_json"]
    (resp,) = _run(GeminiOracle("gemini-2.0-flash", base_url=fake_llm_server.url, **FAST), make_request())
    assert resp.ok and resp.attempts == 2
    contents = fake_llm_server.requests[1].body["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert "not valid JSON" in contents[2]["parts"][0]["text"]


def test_retry_delay_from_retry_info_is_honoured(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.faults = ["rate_limit"]
    fake_llm_server.retry_after = "0.6"  # sent as google.rpc.RetryInfo retryDelay "0.6s"
    (resp,) = _run(GeminiOracle("gemini-2.0-flash", base_url=fake_llm_server.url, **FAST), make_request())
    assert resp.ok and resp.attempts == 2
    first, second = fake_llm_server.requests
    assert second.started - first.finished >= 0.6


def test_response_schema_fallback_sends_the_openapi_subset(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.schema_support = "json_object"  # no responseJsonSchema, responseSchema is fine
    oracle = GeminiOracle("gemini-2.0-flash", base_url=fake_llm_server.url, concurrency=1, **FAST)
    responses = _run(oracle, *(make_request(i) for i in range(3)))
    assert all(r.ok and isinstance(r.parsed, Rubrics) for r in responses)
    assert oracle.schema_mode == "response_schema"
    assert [r.outcome for r in fake_llm_server.requests] == ["schema_rejected", "ok", "ok", "ok"]
    schema = fake_llm_server.requests[1].body["generationConfig"]["responseSchema"]
    text = str(schema)
    assert "$ref" not in text and "$defs" not in text and "additionalProperties" not in text
    rubrics = schema["properties"]["rubrics"]
    assert rubrics.get("minItems", rubrics.get("min_items")) == 3  # the SDK writes the proto's field names


def test_mime_only_fallback_puts_the_schema_in_the_prompt(fake_llm_server: FakeLLMServer) -> None:
    fake_llm_server.schema_support = "mime_only"
    oracle = GeminiOracle("gemini-2.0-flash", base_url=fake_llm_server.url, concurrency=1, **FAST)
    responses = _run(oracle, make_request(0, Verdict), make_request(1, Verdict))
    assert all(r.ok and isinstance(r.parsed, Verdict) for r in responses)
    assert oracle.schema_mode == "json_object"
    used = fake_llm_server.requests[-1]
    assert "JSON Schema" in used.body["systemInstruction"]["parts"][0]["text"]
    assert used.body["generationConfig"]["responseMimeType"] == "application/json"
    assert used.schema == Verdict.model_json_schema()


def test_thinking_tokens_count_as_output(fake_llm_server: FakeLLMServer) -> None:
    import json as _json

    from fake_llm_server import _Reply

    original = fake_llm_server._gemini_reply

    def with_thoughts(record, fault, text, prompt_tokens, output_tokens):
        reply = original(record, fault, text, prompt_tokens, output_tokens)
        body = _json.loads(reply.body)
        body["usageMetadata"]["thoughtsTokenCount"] = 100
        body["candidates"][0]["content"]["parts"].insert(0, {"text": "let me think", "thought": True})
        return _Reply(reply.status, _json.dumps(body).encode(), reply.headers)

    fake_llm_server._gemini_reply = with_thoughts
    (resp,) = _run(GeminiOracle("gemini-2.5-flash", base_url=fake_llm_server.url, **FAST), make_request())
    assert resp.ok and "let me think" not in resp.raw  # the thought part is not mistaken for the answer
    assert resp.output_tokens == 100 + 1 + len(resp.raw) // 4  # thoughts + the fake's count for the answer


@pytest.mark.parametrize(
    "status, error, outcome",
    [
        (400, {"code": 400, "status": "INVALID_ARGUMENT", "message": "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."}, "item"),
        (400, {"code": 400, "status": "FAILED_PRECONDITION", "message": "User location is not supported for the API use."}, "systematic"),
        (403, {"code": 403, "status": "PERMISSION_DENIED", "message": "Method doesn't allow unregistered callers."}, "systematic"),
    ],
)
def test_client_errors_are_per_item_or_systematic(fake_llm_server: FakeLLMServer, status: int, error: dict, outcome: str) -> None:
    from crome.builder.oracles import SystematicOracleError

    fake_llm_server.fixed_error = (status, {"error": error})
    oracle = GeminiOracle("gemini-2.0-flash", base_url=fake_llm_server.url, **FAST)
    if outcome == "systematic":
        with pytest.raises(SystematicOracleError, match=str(status)):
            _run(oracle, make_request())
    else:
        (resp,) = _run(oracle, make_request())
        assert resp.status == "error" and "too long" in (resp.error or "") and resp.attempts == 1
    assert fake_llm_server.count() == 1  # never retried


def test_the_client_stays_on_httpx_where_aiohttp_is_installed(fake_llm_server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """google-genai switches to aiohttp when it is importable; crome's retry policy classifies httpx errors, so a
    dropped connection there was a final error. The oracle's client must use httpx (and its connection limits) either way."""
    import google.genai._api_client as api_client

    monkeypatch.setattr(api_client, "has_aiohttp", True)  # as on a machine with aiohttp installed
    oracle = get_oracle("gemini:gemini-2.0-flash", base_url=fake_llm_server.url, concurrency=4, timeout=1.0, backoff_base=0.001)
    client = oracle._new_client()
    assert client._api_client._use_aiohttp() is False
    fake_llm_server.faults = lambda i: "drop" if i < 2 else None  # two dropped connections, then an answer
    responses = _run(oracle, make_request(0))
    assert responses[0].ok and responses[0].attempts == 3 and fake_llm_server.count() == 3
