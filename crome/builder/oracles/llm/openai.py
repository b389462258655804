"""`openai:MODEL`: OpenAI and any OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp) via `base_url`."""

from __future__ import annotations

import functools
import json
import logging
import re
from typing import Any, ClassVar

from pydantic import BaseModel

from crome.builder.oracles.base import Capabilities, JobStatus, SystematicOracleError
from crome.schemas.calls import OracleRequest, OracleResponse
from crome.builder.oracles.llm.batch import MAX_LISTED, BatchBackend, tag
from crome.builder.oracles.llm.client import Completion, LLMOracle
from crome.builder.oracles.llm.retry import ItemError, SchemaUnsupported, TransientError, parse_retry_after, redact
from crome.builder.oracles.llm.structured import openai_strict_schema

log = logging.getLogger("crome.batch")

# A 400 about these is the server refusing the structured-output mode, not the request.
_SCHEMA_REJECTION = re.compile(r"response_format|json_schema|json_object|structured output|guided_json|invalid schema", re.IGNORECASE)
_TOO_LONG = re.compile(r"context.length|maximum context|too long|too many tokens|reduce the length", re.IGNORECASE)
# A 400 naming one of these settings will fail for every request of the run.
_SETTINGS_PARAMS = frozenset({"model", "temperature", "max_tokens", "max_completion_tokens", "top_p", "seed", "n"})
_SYSTEMATIC_CODES = frozenset({"model_not_found", "invalid_model", "unsupported_parameter", "unsupported_value", "insufficient_quota", "invalid_api_key"})


@functools.lru_cache(maxsize=32)
def _response_format(model: type[BaseModel]) -> dict[str, Any]:
    name = re.sub(r"[^A-Za-z0-9_-]", "_", model.__name__)[:64]
    return {"type": "json_schema", "json_schema": {"name": name, "schema": openai_strict_schema(model), "strict": True}}


class OpenAIOracle(LLMOracle):
    provider: ClassVar[str] = "openai"
    capabilities: ClassVar[Capabilities] = Capabilities(batch=True)  # half-price batch API
    modes: ClassVar[tuple[str, ...]] = ("json_schema", "json_object", "text")
    schema_param_modes: ClassVar[frozenset[str]] = frozenset({"json_schema"})
    key_envs: ClassVar[tuple[str, ...]] = ("OPENAI_API_KEY",)

    def batch_jobs(self) -> "OpenAIBatch":
        return OpenAIBatch(self)

    def _new_client(self) -> Any:
        import httpx2
        import openai

        # One keep-alive connection per concurrent request, so a full pipeline never reconnects.
        concurrency = self.limiter.concurrency
        http_client = openai.DefaultAsyncHttpxClient(
            limits=httpx2.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency),
            timeout=self.timeout,
        )
        # max_retries=0: tenacity owns the retry budgets, so every request is one counted attempt.
        return openai.AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, max_retries=0, timeout=self.timeout, http_client=http_client)

    async def _close_client(self, client: Any) -> None:
        await client.close()

    def _chat_kwargs(self, messages: list[dict[str, str]], request: OracleRequest, mode: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": request.temperature}
        # OpenAI's newer models only take max_completion_tokens; compatible servers know max_tokens.
        kwargs["max_completion_tokens" if self.base_url is None else "max_tokens"] = request.max_output_tokens
        if mode == "json_schema":
            # Through extra_body, the JSON the API documents, sent as is: as a typed parameter the
            # SDK walks the whole schema against its TypedDicts on every call, a large share of the
            # client's CPU per call in the throughput benchmark.
            kwargs["extra_body"] = {"response_format": _response_format(request.output_model)}
        elif mode == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        return kwargs

    async def _complete(self, client: Any, messages: list[dict[str, str]], request: OracleRequest, mode: str) -> Completion:
        completion = await client.chat.completions.create(**self._chat_kwargs(messages, request, mode))
        if isinstance(completion, str):  # the SDK hands back the body as text when it is not JSON
            raise TransientError("malformed response body (not a chat completion)")
        return self._completion(completion)

    def _completion(self, completion: Any) -> Completion:
        """A chat completion (online, or a batch output line's body) as a `Completion`."""
        usage = getattr(completion, "usage", None)
        input_tokens = getattr(usage, "prompt_tokens", None)
        output_tokens = getattr(usage, "completion_tokens", None)
        if not completion.choices:
            return Completion(None, "error", "the response has no choices", input_tokens, output_tokens)
        choice = completion.choices[0]
        message = choice.message
        text = message.content if message is not None else None
        refusal = getattr(message, "refusal", None)
        if refusal:
            return Completion(text, "refused", refusal, input_tokens, output_tokens)
        if choice.finish_reason == "content_filter":
            return Completion(text, "blocked", "content filter", input_tokens, output_tokens)
        if choice.finish_reason == "length":
            return Completion(text, "length", None, input_tokens, output_tokens)
        return Completion(text, "stop", None, input_tokens, output_tokens)

    # -- batch mode (crome.builder.oracles.llm.batch drives the Files and Batches endpoints) ----------

    def batch_body(self, request: OracleRequest) -> dict[str, Any]:
        """The `/v1/chat/completions` body of a batch line: what the online call would send."""
        messages, mode = self.batch_messages(request)
        kwargs = self._chat_kwargs(messages, request, mode)
        return {**{k: v for k, v in kwargs.items() if k != "extra_body"}, **kwargs.get("extra_body", {})}

    def batch_completion(self, body: dict[str, Any]) -> Completion:
        """A batch output line's response body (a chat completion) as a `Completion`."""
        from openai.types.chat import ChatCompletion

        return self._completion(ChatCompletion.model_validate(body))

    def _classify_provider(self, exc: Exception) -> Exception | None:
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return TransientError(f"timed out after {self.timeout:g}s")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__
            return TransientError(f"connection error{': ' + type(cause).__name__ if cause else ''}")
        if not isinstance(exc, openai.APIStatusError):
            return None
        status = exc.status_code
        code = str(exc.code) if exc.code else None
        message = redact(str(getattr(exc, "message", "") or exc))
        param = getattr(exc, "param", None)
        where = f" at {redact(self.base_url)}" if self.base_url else ""
        if status == 429:
            if code == "insufficient_quota":
                return SystematicOracleError(f"{self.name}: the account is out of quota (429 insufficient_quota): {message}")
            return TransientError(f"429 rate limited: {message}", retry_after=parse_retry_after(exc.response.headers))
        if status in (401, 403):
            env = " or ".join(self._key_envs)
            return SystematicOracleError(f"{self.name}: the server{where} rejected the API key from {env} ({status}): {message}")
        if status == 404:
            return SystematicOracleError(
                f"{self.name}: 404{where}: {message} (an unknown model, or a base URL that should end in /v1)"
            )
        if status in (408, 409) or status >= 500:
            return TransientError(f"{status} server error: {message}", retry_after=parse_retry_after(exc.response.headers))
        if status in (400, 422):
            if param == "response_format" or _SCHEMA_REJECTION.search(message):
                return SchemaUnsupported(f"{status}: {message}")
            if code == "context_length_exceeded" or _TOO_LONG.search(message):
                return ItemError(f"{status} prompt too long: {message}")
            if code in _SYSTEMATIC_CODES or param in _SETTINGS_PARAMS:
                return SystematicOracleError(f"{self.name}: the server{where} rejects a setting every request uses ({status}, {param or code}): {message}")
        return ItemError(f"{status}: {message}")


class OpenAIBatch(BatchBackend):
    """Files API upload (JSONL, purpose `batch`) and the Batches API, `custom_id` = the call's cache key."""

    provider: ClassVar[str] = "openai"
    max_items: ClassVar[int] = 50_000
    max_bytes: ClassVar[int] = 190_000_000  # the API takes input files up to 200 MB
    endpoint: ClassVar[str] = "/v1/chat/completions"
    _STATES: ClassVar[dict[str, str]] = {"completed": "completed", "failed": "failed", "expired": "expired", "cancelled": "cancelled"}

    def __init__(self, oracle: "OpenAIOracle") -> None:
        import openai

        super().__init__(oracle)
        # Uploads of 100+ MB take longer than one chat call: at least ten minutes.
        self.client = openai.OpenAI(api_key=oracle._api_key, base_url=oracle.base_url, max_retries=0, timeout=max(oracle.timeout, 600.0))
        self._jobs: dict[str, Any] = {}

    def _line(self, key: str, request: OracleRequest) -> bytes:
        body = self.oracle.batch_body(request)
        return json.dumps({"custom_id": key, "method": "POST", "url": self.endpoint, "body": body}, ensure_ascii=False).encode() + b"\n"

    def submit(self, items: list[tuple[str, OracleRequest]], intent: str) -> str:
        data = b"".join(self._line(key, request) for key, request in items)
        uploaded = self.client.files.create(file=(f"{tag(intent)}.jsonl", data, "application/jsonl"), purpose="batch")
        job = self.client.batches.create(
            input_file_id=uploaded.id,
            endpoint=self.endpoint,
            completion_window="24h",
            metadata={"crome_intent": intent, "crome_items": str(len(items))},
        )
        return job.id

    def find(self, intent: str) -> str | None:
        for i, job in enumerate(self.client.batches.list(limit=100)):
            if (job.metadata or {}).get("crome_intent") == intent:
                return job.id
            if i >= MAX_LISTED:
                break
        return None

    def poll(self, job_id: str) -> JobStatus:
        job = self.client.batches.retrieve(job_id)
        self._jobs[job_id] = job
        counts = job.request_counts.model_dump() if job.request_counts is not None else {}
        error = None
        if job.errors is not None and job.errors.data:
            error = "; ".join(f"{e.code}: {e.message}" + (f" (line {e.line})" if e.line else "") for e in job.errors.data[:5])
        return JobStatus(self._STATES.get(job.status, "running"), job.status, counts, redact(error) if error else None)

    def results(self, job_id: str, keys: list[str], requests: dict[str, OracleRequest], attempts: dict[str, int]) -> dict[str, OracleResponse]:
        job = self._jobs.get(job_id) or self.client.batches.retrieve(job_id)
        out: dict[str, OracleResponse] = {}
        # Expired and failed items are in the error file, answers in the output file (in any order).
        for file_id in (job.output_file_id, job.error_file_id):
            if not file_id:
                continue
            text = self.client.files.content(file_id).text
            for line in text.splitlines():
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    log.warning("batch %s: a result line is not JSON; skipped", job_id)
                    continue
                key = item.get("custom_id")
                if key in requests and key not in out:
                    out[key] = self._item(requests[key], item, attempts.get(key, 1))
        return out

    def _item(self, request: OracleRequest, item: dict[str, Any], attempts: int) -> OracleResponse:
        error = item.get("error")
        if error:
            return self.oracle.batch_error(f"batch item failed: {error.get('code')}: {error.get('message')}", attempts=attempts)
        response = item.get("response") or {}
        body = response.get("body") or {}
        status = response.get("status_code")
        if status != 200:
            message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
            return self.oracle.batch_error(f"batch item failed ({status}): {message or 'no message'}", attempts=attempts)
        try:
            completion = self.oracle.batch_completion(body)
        except Exception as exc:  # noqa: BLE001 - a body that is not a chat completion is this item's failure
            return self.oracle.batch_error(f"batch item body is not a chat completion: {type(exc).__name__}", attempts=attempts)
        return self.oracle.batch_response(request, completion, attempts=attempts)

    def close(self) -> None:
        self.client.close()
