"""`gemini:MODEL` through google-genai (the Gemini Developer API; `base_url` points it elsewhere, e.g. a test server)."""

from __future__ import annotations

import functools
import re
from typing import Any, ClassVar

from pydantic import BaseModel

from crome.builder.oracles.base import Capabilities, JobStatus, SystematicOracleError
from crome.schemas.calls import OracleRequest, OracleResponse
from crome.builder.oracles.llm.batch import MAX_LISTED, BatchBackend, tag
from crome.builder.oracles.llm.client import Completion, LLMOracle
from crome.builder.oracles.llm.retry import ItemError, SchemaUnsupported, TransientError, parse_retry_after, parse_retry_delay, redact
from crome.builder.oracles.llm.structured import gemini_json_schema, gemini_openapi_schema

_SCHEMA_REJECTION = re.compile(r"response_?json_?schema|response_?schema|response_?mime_?type|json schema|invalid schema", re.IGNORECASE)
_TOO_LONG = re.compile(r"token count|exceeds the maximum|too long|context", re.IGNORECASE)
_BAD_KEY = re.compile(r"API_KEY_INVALID|API key not valid|API key expired|PERMISSION_DENIED", re.IGNORECASE)
# Finish reasons that mean a safety system stopped the answer (prompt or output).
_BLOCKED = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "MODEL_ARMOR"}
)
_STOPPED = frozenset({"STOP", "FINISH_REASON_UNSPECIFIED", ""})


@functools.lru_cache(maxsize=32)
def _json_schema(model: type[BaseModel]) -> dict[str, Any]:
    return gemini_json_schema(model)


@functools.lru_cache(maxsize=32)
def _openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    return gemini_openapi_schema(model)


def _enum_name(value: Any) -> str:
    if value is None:
        return ""
    return str(getattr(value, "name", None) or getattr(value, "value", None) or value).upper()


class GeminiOracle(LLMOracle):
    provider: ClassVar[str] = "gemini"
    capabilities: ClassVar[Capabilities] = Capabilities(batch=True)  # half-price batch API
    # response_json_schema takes pydantic's JSON Schema as is; response_schema is the older
    # OpenAPI subset some models still need; then JSON mode; then text.
    modes: ClassVar[tuple[str, ...]] = ("json_schema", "response_schema", "json_object", "text")
    schema_param_modes: ClassVar[frozenset[str]] = frozenset({"json_schema", "response_schema"})
    key_envs: ClassVar[tuple[str, ...]] = ("GEMINI_API_KEY", "GOOGLE_API_KEY")

    def batch_jobs(self) -> "GeminiBatch":
        return GeminiBatch(self)

    def _new_client(self) -> Any:
        import httpx2
        from google import genai
        from google.genai import types

        concurrency = self.limiter.concurrency
        http_options = types.HttpOptions(
            base_url=self.base_url,
            timeout=max(1, int(self.timeout * 1000)),  # milliseconds
            # One attempt: tenacity owns the retry budgets, so every request is one counted attempt.
            retry_options=types.HttpRetryOptions(attempts=1),
            # httpx keeps only 20 idle connections by default: one per concurrent request instead. Given as a
            # transport, which also keeps google-genai on httpx where aiohttp is installed (it would switch to
            # aiohttp, whose connection errors the retry policy does not know: a dropped connection was final).
            async_client_args={"transport": httpx2.AsyncHTTPTransport(
                limits=httpx2.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency))},
        )
        return genai.Client(api_key=self._api_key, vertexai=False, http_options=http_options)

    async def _close_client(self, client: Any) -> None:
        await client.aio.aclose()

    def _generate_args(self, messages: list[dict[str, str]], request: OracleRequest, mode: str) -> tuple[list[Any], dict[str, Any]]:
        """The contents and generation config of one request (online or a batch item)."""
        from google.genai import types

        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        contents = [
            types.Content(role="model" if m["role"] == "assistant" else "user", parts=[types.Part(text=m["content"])])
            for m in messages
            if m["role"] != "system"
        ]
        config: dict[str, Any] = {
            "system_instruction": system or None,
            "temperature": request.temperature,
            "max_output_tokens": request.max_output_tokens,
            "candidate_count": 1,
        }
        if mode != "text":
            config["response_mime_type"] = "application/json"
        if mode == "json_schema":
            config["response_json_schema"] = _json_schema(request.output_model)
        elif mode == "response_schema":
            config["response_schema"] = _openapi_schema(request.output_model)
        return contents, config

    async def _complete(self, client: Any, messages: list[dict[str, str]], request: OracleRequest, mode: str) -> Completion:
        from google.genai import types

        contents, config = self._generate_args(messages, request, mode)
        # No tools are ever sent; turning function calling off also silences its per-call log line.
        config["automatic_function_calling"] = types.AutomaticFunctionCallingConfig(disable=True)
        response = await client.aio.models.generate_content(model=self.model, contents=contents, config=types.GenerateContentConfig(**config))
        return self._completion(response)

    def _completion(self, response: Any) -> Completion:
        """A GenerateContentResponse (online, or a batch job's inlined response) as a `Completion`."""
        usage = response.usage_metadata
        input_tokens = getattr(usage, "prompt_token_count", None)
        output_tokens = None
        if usage is not None and (usage.candidates_token_count is not None or usage.thoughts_token_count is not None):
            # Thinking tokens are billed as output.
            output_tokens = (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason:
            reason = _enum_name(feedback.block_reason)
            detail = f"prompt blocked ({reason})" + (f": {feedback.block_reason_message}" if feedback.block_reason_message else "")
            return Completion(None, "blocked", detail, input_tokens, output_tokens or 0)
        if not response.candidates:
            return Completion(None, "blocked", "empty response: no candidates", input_tokens, output_tokens or 0)
        candidate = response.candidates[0]
        parts = candidate.content.parts if candidate.content and candidate.content.parts else []
        text = "".join(p.text for p in parts if p.text and not p.thought)
        finish = _enum_name(candidate.finish_reason)
        if finish in _BLOCKED:
            return Completion(text or None, "blocked", f"finish_reason {finish}", input_tokens, output_tokens)
        if finish == "MAX_TOKENS":
            return Completion(text, "length", None, input_tokens, output_tokens)
        if finish not in _STOPPED:
            return Completion(text or None, "error", f"the model stopped with finish_reason {finish}", input_tokens, output_tokens)
        return Completion(text, "stop", None, input_tokens, output_tokens)

    # -- batch mode (crome.builder.oracles.llm.batch drives the batch endpoints) -----------------------

    def batch_request(self, key: str, request: OracleRequest) -> Any:
        """The inlined request of a batch item; its metadata carries the cache key back with the answer."""
        from google.genai import types

        messages, mode = self.batch_messages(request)
        contents, config = self._generate_args(messages, request, mode)
        return types.InlinedRequest(contents=contents, config=types.GenerateContentConfig(**config), metadata={"crome_key": key})

    def batch_completion(self, response: Any) -> Completion:
        return self._completion(response)

    def _classify_provider(self, exc: Exception) -> Exception | None:
        from google.genai import errors

        if not isinstance(exc, errors.APIError):
            return None
        code = int(exc.code or 0)
        message = redact(str(exc.message or exc.status or exc))
        details = redact(str(exc.details))
        where = f" at {redact(self.base_url)}" if self.base_url else ""
        headers = getattr(getattr(exc, "response", None), "headers", None)
        if code == 429:
            retry_after = parse_retry_delay(exc.details)
            if retry_after is None and headers is not None:
                retry_after = parse_retry_after(dict(headers.items()))
            return TransientError(f"429 {exc.status or 'RESOURCE_EXHAUSTED'}: {message}", retry_after=retry_after)
        if code in (401, 403) or (code == 400 and (_BAD_KEY.search(message) or "API_KEY_INVALID" in details)):
            env = " or ".join(self._key_envs)
            return SystematicOracleError(f"{self.name}: the server{where} rejected the API key from {env} ({code}): {message}")
        if code == 404:
            return SystematicOracleError(f"{self.name}: 404{where}: {message} (an unknown model name?)")
        if code in (408, 409) or code >= 500:
            retry_after = parse_retry_after(dict(headers.items())) if headers is not None else None
            return TransientError(f"{code} {exc.status or 'server error'}: {message}", retry_after=retry_after)
        if code == 400:
            if _SCHEMA_REJECTION.search(message):
                return SchemaUnsupported(f"400: {message}")
            if exc.status == "FAILED_PRECONDITION":  # region or billing: every request will fail
                return SystematicOracleError(f"{self.name}: {code} FAILED_PRECONDITION{where}: {message}")
            if _TOO_LONG.search(message):
                return ItemError(f"400 prompt too long: {message}")
        return ItemError(f"{code} {exc.status or ''}: {message}".strip())


class GeminiBatch(BatchBackend):
    """google-genai `batches` with inlined requests; each item's metadata carries its cache key."""

    provider: ClassVar[str] = "gemini"
    max_items: ClassVar[int] = 50_000
    max_bytes: ClassVar[int] = 18_000_000  # a create request with inlined items may be up to 20 MB
    _STATES: ClassVar[dict[str, str]] = {
        "JOB_STATE_SUCCEEDED": "completed", "JOB_STATE_FAILED": "failed", "JOB_STATE_EXPIRED": "expired",
        "JOB_STATE_CANCELLED": "cancelled", "JOB_STATE_PARTIALLY_SUCCEEDED": "completed",
    }

    def __init__(self, oracle: "GeminiOracle") -> None:
        from google import genai
        from google.genai import types

        super().__init__(oracle)
        http_options = types.HttpOptions(
            base_url=oracle.base_url,
            timeout=int(max(oracle.timeout, 600.0) * 1000),  # milliseconds
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        self.client = genai.Client(api_key=oracle._api_key, vertexai=False, http_options=http_options)
        self._jobs: dict[str, Any] = {}

    def submit(self, items: list[tuple[str, OracleRequest]], intent: str) -> str:
        src = [self.oracle.batch_request(key, request) for key, request in items]
        job = self.client.batches.create(model=self.oracle.model, src=src, config={"display_name": tag(intent)})
        return job.name

    def find(self, intent: str) -> str | None:
        for i, job in enumerate(self.client.batches.list(config={"page_size": 100})):
            if job.display_name == tag(intent):
                return job.name
            if i >= MAX_LISTED:
                break
        return None

    def poll(self, job_id: str) -> JobStatus:
        job = self.client.batches.get(name=job_id)
        self._jobs[job_id] = job
        state = str(getattr(job.state, "name", None) or job.state or "JOB_STATE_UNSPECIFIED")
        responses = job.dest.inlined_responses if job.dest is not None and job.dest.inlined_responses else []
        counts = {"returned": len(responses)} if responses else {}
        error = f"{job.error.code}: {job.error.message}" if getattr(job, "error", None) else None
        return JobStatus(self._STATES.get(state, "running"), state, counts, redact(error) if error else None)

    def results(self, job_id: str, keys: list[str], requests: dict[str, OracleRequest], attempts: dict[str, int]) -> dict[str, OracleResponse]:
        job = self._jobs.get(job_id) or self.client.batches.get(name=job_id)
        responses = job.dest.inlined_responses if job.dest is not None and job.dest.inlined_responses else []
        out: dict[str, OracleResponse] = {}
        for i, item in enumerate(responses):
            # The key comes back in the item's metadata; responses are also in request order.
            key = (item.metadata or {}).get("crome_key") or (keys[i] if i < len(keys) else None)
            if key not in requests or key in out:
                continue
            n = attempts.get(key, 1)
            if item.error is not None:
                out[key] = self.oracle.batch_error(f"batch item failed ({item.error.code}): {item.error.message}", attempts=n)
            elif item.response is None:
                out[key] = self.oracle.batch_error("batch item has neither a response nor an error", attempts=n)
            else:
                out[key] = self.oracle.batch_response(requests[key], self.oracle.batch_completion(item.response), attempts=n)
        return out

    def close(self) -> None:
        self.client.close()
