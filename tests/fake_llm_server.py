"""A local fake LLM server that the real `openai` and `google-genai` clients can talk to.

It answers `POST /v1/chat/completions` (OpenAI) and `POST /{v1,v1beta}/models/{model}:generateContent`
(Gemini) on 127.0.0.1 with outputs that conform to the JSON Schema the request carries (in
`response_format`, `responseJsonSchema`/`responseSchema`, or, for servers without schema support,
in a fenced block of the instructions). It counts requests, tracks how many are in flight, and
injects faults from a deterministic plan keyed on the order requests reach it.

Every knob is a plain attribute read per request, so a test can change it on a running server.
"""

from __future__ import annotations

import json
import random
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Sequence

# Every fault the server can inject, in the order a seeded plan draws from.
FAULTS: tuple[str, ...] = (
    "rate_limit",  # 429 with Retry-After (OpenAI) / RetryInfo (Gemini)
    "server_error",  # 500
    "unavailable",  # 503
    "slow",  # answers after `slow_s`, beyond the client's timeout
    "drop",  # closes the connection without a response
    "malformed_body",  # 200 whose HTTP body is not JSON
    "malformed_json",  # 200 whose output text is not JSON
    "schema_invalid",  # 200 whose output is JSON that violates the schema
    "refusal",  # OpenAI message.refusal / Gemini promptFeedback.blockReason
    "blocked",  # OpenAI finish_reason content_filter / Gemini finishReason SAFETY
    "truncated",  # OpenAI finish_reason length / Gemini finishReason MAX_TOKENS
)
# After these the client must send another request for the same item (a retry or a re-ask).
RETRIED: frozenset[str] = frozenset(
    {"rate_limit", "server_error", "unavailable", "slow", "drop", "malformed_body", "malformed_json", "schema_invalid"}
)
# These end the item: the response is recorded as what it is.
FINAL_FAULTS: frozenset[str] = frozenset({"refusal", "blocked", "truncated"})

FaultPlan = Callable[[int], "str | None"]
Responder = Callable[["RequestRecord"], "dict[str, Any] | str | None"]

_GEMINI_PATH = re.compile(r"^/(v1|v1beta|v1alpha)/models/([^/:]+):generateContent$")
# Fallback modes put the schema into the instructions; this finds it there.
_SCHEMA_IN_TEXT = re.compile(r"JSON Schema[^`]*```json\s*(\{.*?\})\s*```", re.DOTALL)


def seeded_faults(rate: float, seed: int = 0, kinds: Sequence[str] = FAULTS) -> FaultPlan:
    """A fault plan that injects one of `kinds` into each request with probability `rate`, by request order."""
    unknown = set(kinds) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown fault kinds {sorted(unknown)}")

    def plan(index: int) -> str | None:
        rng = random.Random(f"{seed}:{index}")
        return rng.choice(list(kinds)) if rng.random() < rate else None

    return plan


def scheduled_faults(schedule: Iterable[str | None]) -> FaultPlan:
    """A fault plan from an explicit list: request i gets schedule[i]; requests past its end succeed."""
    items = list(schedule)
    unknown = {f for f in items if f is not None} - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown fault kinds {sorted(unknown)}")
    return lambda index: items[index] if index < len(items) else None


def expected_requests(plan: FaultPlan, n_items: int) -> int:
    """How many requests n_items need under `plan` when nothing exhausts its retry budget.

    Each item ends with exactly one final request (a success or a final fault) and every retried
    fault costs one more request, whatever the order the items reach the server in.
    """
    finals = index = 0
    while finals < n_items:
        if plan(index) not in RETRIED:
            finals += 1
        index += 1
    return index


@dataclass
class RequestRecord:
    """What the server saw and did for one request."""

    index: int  # arrival order, all requests
    endpoint: str  # "openai" | "gemini"
    path: str
    model: str
    credential: str | None  # the API key the client sent (Bearer token or x-goog-api-key)
    body: dict[str, Any]
    messages: list[tuple[str, str]]  # (role, text), roles normalised to system/user/assistant
    mode: str  # json_schema | response_schema | json_object | text
    schema: dict[str, Any] | None
    plan_index: int | None = None  # position in the fault plan (requests that reached it)
    fault: str | None = None
    outcome: str = "pending"  # ok | a fault kind | auth_error | unknown_model | schema_rejected | bad_request
    started: float = 0.0
    finished: float = 0.0
    usage: tuple[int, int] | None = None  # (input, output) tokens the response reported; None: no usage sent

    @property
    def answered(self) -> bool:
        """The server sent a usable answer (a success, or a final refusal/block/cut-off): a re-send would be paid twice."""
        return self.outcome == "ok" or self.outcome in FINAL_FAULTS

    @property
    def first_user_text(self) -> str:
        return next((text for role, text in self.messages if role == "user"), "")


@dataclass
class _Reply:
    status: int
    body: bytes | None  # None: drop the connection
    headers: dict[str, str] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 makes 128 simultaneous connects wait on SYN retransmits.
    request_queue_size = 1024
    fake: "FakeLLMServer"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real providers do
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms) and every call looks that much slower than the configured latency.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature from the base class
        return

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._send(self.server.fake._handle_get(self.path, dict(self.headers.items())))

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self._send(self.server.fake._handle(self.path, dict(self.headers.items()), raw))

    def _send(self, reply: "_Reply") -> None:
        if reply.body is None:
            # Close without a byte of response: the client sees a dropped connection.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", reply.headers.get("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a slow response past its timeout).
            self.close_connection = True


class FakeLLMServer:
    """Start with `with FakeLLMServer() as server:`; point clients at `server.openai_url` / `server.url`."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        faults: FaultPlan | Sequence[str | None] | None = None,
        slow_s: float = 2.0,
        retry_after: str | None = "0.05",
        retry_after_ms: str | None = None,
        mode: str = "ok",
        schema_support: str = "json_schema",
        responder: Responder | None = None,
    ) -> None:
        self.latency = latency  # seconds added to every request (benchmarks)
        self.faults = faults  # type: ignore[assignment] - normalised by the setter
        self.slow_s = slow_s
        self.retry_after = retry_after  # Retry-After header / RetryInfo seconds on 429
        self.retry_after_ms = retry_after_ms  # retry-after-ms header on 429 (OpenAI only)
        # ok | auth_error (401 / Gemini's 400 API_KEY_INVALID) | unknown_model (404) |
        # insufficient_quota (OpenAI's 429 for an account out of credit)
        self.mode = mode
        # What structured output the server accepts: json_schema (everything) | json_object
        # (OpenAI json_object; Gemini responseSchema and mime type, no responseJsonSchema) |
        # mime_only (Gemini: only responseMimeType) | text (no response_format / JSON config at all)
        self.schema_support = schema_support
        self.responder = responder
        # (status, JSON body): answer every request with this error, e.g. a provider's 400 wording.
        self.fixed_error: tuple[int, dict[str, Any]] | None = None
        self.requests: list[RequestRecord] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._plan_counter = 0
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- fault plan -------------------------------------------------------------------------

    @property
    def faults(self) -> FaultPlan | None:
        return self._faults

    @faults.setter
    def faults(self, value: FaultPlan | Sequence[str | None] | None) -> None:
        self._faults = scheduled_faults(value) if isinstance(value, (list, tuple)) else value

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> "FakeLLMServer":
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FakeLLMServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget recorded requests and restart the fault plan (settings are kept)."""
        with self._lock:
            self.requests = []
            self.max_in_flight = 0
            self._plan_counter = 0

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def openai_url(self) -> str:
        return self.url + "/v1"

    # -- what the server saw -----------------------------------------------------------------

    def count(self, endpoint: str | None = None) -> int:
        return sum(1 for r in self.requests if endpoint is None or r.endpoint == endpoint)

    def outcomes(self) -> Counter[str]:
        return Counter(r.outcome for r in self.requests)

    def credentials(self) -> set[str]:
        return {r.credential for r in self.requests if r.credential}

    # -- request handling (runs in the server's threads) -------------------------------------

    def _handle_get(self, path: str, headers: dict[str, str]) -> _Reply:
        """GET routes: none here (tests/fake_batch_server.py adds the batch endpoints)."""
        return _Reply(404, json.dumps({"error": {"message": f"no route GET {path}"}}).encode())

    def _handle(self, path: str, headers: dict[str, str], raw: bytes) -> _Reply:
        path_only, _, query = path.partition("?")
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return _Reply(400, json.dumps({"error": {"message": "request body is not JSON"}}).encode())
        lower = {k.lower(): v for k, v in headers.items()}
        if path_only == "/v1/chat/completions":
            record = self._openai_record(path_only, lower, body)
        elif (m := _GEMINI_PATH.match(path_only)) is not None:
            record = self._gemini_record(path_only, m.group(2), lower, query, body)
        else:
            return _Reply(404, json.dumps({"error": {"message": f"no route {path_only}"}}).encode())
        with self._lock:
            record.index = len(self.requests)
            self.requests.append(record)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        record.started = time.monotonic()
        try:
            if self.latency:
                time.sleep(self.latency)
            return self._respond(record)
        finally:
            record.finished = time.monotonic()
            with self._lock:
                self.in_flight -= 1

    def _openai_record(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> RequestRecord:
        auth = headers.get("authorization", "")
        messages = []
        for m in body.get("messages", []):
            content = m.get("content")
            if isinstance(content, list):  # content parts
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            messages.append((m.get("role", "user"), content or ""))
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            mode, schema = "json_schema", (fmt.get("json_schema") or {}).get("schema")
        elif fmt.get("type") == "json_object":
            mode, schema = "json_object", _schema_from_text(messages)
        else:
            mode, schema = "text", _schema_from_text(messages)
        return RequestRecord(
            index=-1,
            endpoint="openai",
            path=path,
            model=str(body.get("model", "")),
            credential=auth[7:] if auth.lower().startswith("bearer ") else None,
            body=body,
            messages=messages,
            mode=mode,
            schema=schema,
        )

    def _gemini_record(self, path: str, model: str, headers: dict[str, str], query: str, body: dict[str, Any]) -> RequestRecord:
        credential = headers.get("x-goog-api-key")
        if credential is None and "key=" in query:
            credential = query.split("key=", 1)[1].split("&", 1)[0]
        messages = []
        system = body.get("systemInstruction") or body.get("system_instruction")
        if system:
            messages.append(("system", "".join(p.get("text", "") for p in system.get("parts", []))))
        for content in body.get("contents", []):
            role = {"model": "assistant"}.get(content.get("role", "user"), "user")
            messages.append((role, "".join(p.get("text", "") for p in content.get("parts", []))))
        config = body.get("generationConfig") or {}
        if config.get("responseJsonSchema") is not None:
            mode, schema = "json_schema", config["responseJsonSchema"]
        elif config.get("responseSchema") is not None:
            mode, schema = "response_schema", config["responseSchema"]
        elif config.get("responseMimeType") == "application/json":
            mode, schema = "json_object", _schema_from_text(messages)
        else:
            mode, schema = "text", _schema_from_text(messages)
        return RequestRecord(
            index=-1, endpoint="gemini", path=path, model=model, credential=credential, body=body, messages=messages, mode=mode, schema=schema
        )

    def _respond(self, record: RequestRecord) -> _Reply:
        gemini = record.endpoint == "gemini"
        if self.fixed_error is not None:
            record.outcome = "fixed_error"
            return _Reply(self.fixed_error[0], json.dumps(self.fixed_error[1]).encode())
        if self.mode == "auth_error":
            record.outcome = "auth_error"
            if gemini:  # what the Gemini API really answers to a bad key
                return _gemini_error(
                    400,
                    "INVALID_ARGUMENT",
                    f"API key not valid. Please pass a valid API key. (got {record.credential})",
                    [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}],
                )
            # Echo the key back, worse than the real API's masked echo, so tests prove it is scrubbed.
            return _openai_error(401, f"Incorrect API key provided: {record.credential}.", "invalid_request_error", "invalid_api_key")
        if self.mode == "insufficient_quota" and not gemini:
            record.outcome = "insufficient_quota"
            return _openai_error(429, "You exceeded your current quota, please check your plan and billing details.", "insufficient_quota", "insufficient_quota")
        if self.mode == "unknown_model":
            record.outcome = "unknown_model"
            if gemini:
                return _gemini_error(404, "NOT_FOUND", f"models/{record.model} is not found for API version v1, or is not supported for generateContent.")
            return _openai_error(404, f"The model `{record.model}` does not exist or you do not have access to it.", "invalid_request_error", "model_not_found")
        rejection = self._schema_rejection(record)
        if rejection is not None:
            record.outcome = "schema_rejected"
            return rejection

        with self._lock:
            record.plan_index = self._plan_counter
            self._plan_counter += 1
        fault = self._faults(record.plan_index) if self._faults is not None else None
        record.fault = fault
        record.outcome = fault or "ok"

        if fault == "rate_limit":
            if gemini:
                details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{self.retry_after or 1}s"}]
                return _gemini_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", details)
            headers = {}
            if self.retry_after is not None:
                headers["Retry-After"] = self.retry_after
            if self.retry_after_ms is not None:
                headers["retry-after-ms"] = self.retry_after_ms
            return _openai_error(429, "Rate limit reached for requests", "requests", "rate_limit_exceeded", headers)
        if fault in ("server_error", "unavailable"):
            code = 500 if fault == "server_error" else 503
            if gemini:
                return _gemini_error(code, "INTERNAL" if code == 500 else "UNAVAILABLE", "The service is currently unavailable.")
            return _openai_error(code, "The server had an error while processing your request.", "server_error", None)
        if fault == "drop":
            return _Reply(0, None)
        if fault == "malformed_body":
            return _Reply(200, b'{"id": "broken", "choices": [{"index": 0, "message": {"role": "assi')
        if fault == "slow":
            time.sleep(self.slow_s)

        output = self._output(record)
        text = json.dumps(output) if not isinstance(output, str) else output
        if record.mode == "text" and not isinstance(output, str):
            text = f"Sure, here is the answer.\n\n```json\n{text}\n```\n"
        if fault == "malformed_json":
            text = text[: max(1, len(text) // 2)].replace("```", "") + ' "oops'
        elif fault == "schema_invalid":
            text = json.dumps({"unexpected": "field"})
        elif fault == "truncated":
            text = text[: max(1, len(text) // 2)]
        prompt_tokens = 1 + sum(len(t) for _, t in record.messages) // 4
        output_tokens = 1 + len(text) // 4
        if gemini:
            return self._gemini_reply(record, fault, text, prompt_tokens, output_tokens)
        return self._openai_reply(record, fault, text, prompt_tokens, output_tokens)

    def _schema_rejection(self, record: RequestRecord) -> _Reply | None:
        support = self.schema_support
        if record.endpoint == "openai":
            fmt = (record.body.get("response_format") or {}).get("type")
            if fmt == "json_schema" and support in ("json_object", "mime_only", "text"):
                return _openai_error(400, "response_format type 'json_schema' is not supported by this server", "invalid_request_error", None, param="response_format")
            if fmt == "json_object" and support == "text":
                return _openai_error(400, "response_format is not supported by this server", "invalid_request_error", None, param="response_format")
            return None
        config = record.body.get("generationConfig") or {}
        if "responseJsonSchema" in config and support in ("json_object", "mime_only", "text"):
            return _gemini_error(400, "INVALID_ARGUMENT", 'Invalid JSON payload received. Unknown name "responseJsonSchema" at \'generation_config\': Cannot find field.')
        if "responseSchema" in config and support in ("mime_only", "text"):
            return _gemini_error(400, "INVALID_ARGUMENT", "responseSchema is not supported for this model.")
        if "responseMimeType" in config and support == "text":
            return _gemini_error(400, "INVALID_ARGUMENT", "responseMimeType application/json is not supported for this model.")
        return None

    def _output(self, record: RequestRecord) -> dict[str, Any] | str:
        if self.responder is not None:
            out = self.responder(record)
            if out is not None:
                return out
        if record.schema is None:
            return "plain text answer"
        return example_from_schema(record.schema)

    def _openai_reply(self, record: RequestRecord, fault: str | None, text: str, prompt_tokens: int, output_tokens: int) -> _Reply:
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        finish = "stop"
        if fault == "refusal":
            message = {"role": "assistant", "content": None, "refusal": "I'm sorry, I can't help with that."}
            output_tokens = 9
        elif fault == "blocked":
            message = {"role": "assistant", "content": "", "refusal": None}
            finish = "content_filter"
            output_tokens = 0
        elif fault == "truncated":
            finish = "length"
        record.usage = (prompt_tokens, output_tokens)
        body = {
            "id": f"chatcmpl-fake-{record.index}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": record.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": output_tokens, "total_tokens": prompt_tokens + output_tokens},
        }
        return _Reply(200, json.dumps(body).encode())

    def _gemini_reply(self, record: RequestRecord, fault: str | None, text: str, prompt_tokens: int, output_tokens: int) -> _Reply:
        usage = {"promptTokenCount": prompt_tokens, "candidatesTokenCount": output_tokens, "totalTokenCount": prompt_tokens + output_tokens}
        if fault == "refusal":
            record.usage = (prompt_tokens, 0)
            body: dict[str, Any] = {
                "promptFeedback": {"blockReason": "SAFETY"},
                "usageMetadata": {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens},
                "modelVersion": record.model,
            }
            return _Reply(200, json.dumps(body).encode())
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP", "index": 0}
        if fault == "blocked":
            candidate = {"finishReason": "SAFETY", "index": 0, "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]}
            usage = {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}
        elif fault == "truncated":
            candidate["finishReason"] = "MAX_TOKENS"
        record.usage = (usage["promptTokenCount"], usage.get("candidatesTokenCount", 0))
        body = {"candidates": [candidate], "usageMetadata": usage, "modelVersion": record.model, "responseId": f"fake-{record.index}"}
        return _Reply(200, json.dumps(body).encode())


def _openai_error(status: int, message: str, type_: str, code: str | None, headers: dict[str, str] | None = None, param: str | None = None) -> _Reply:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return _Reply(status, json.dumps(body).encode(), dict(headers or {}))


def _gemini_error(status: int, state: str, message: str, details: list[dict[str, Any]] | None = None) -> _Reply:
    error: dict[str, Any] = {"code": status, "message": message, "status": state}
    if details:
        error["details"] = details
    return _Reply(status, json.dumps({"error": error}).encode())


def _schema_from_text(messages: list[tuple[str, str]]) -> dict[str, Any] | None:
    for role, text in messages:
        if role in ("system", "user") and (m := _SCHEMA_IN_TEXT.search(text)):
            try:
                return json.loads(m.group(1))
            except json.JSONDecodeError:
                return None
    return None


# Strings that satisfy the rubric-name pattern (and are plausible rubric names).
_WORDS = ("factuality", "relevance", "completeness", "safety", "clarity", "helpfulness")


def example_from_schema(schema: dict[str, Any], root: dict[str, Any] | None = None, name: str = "value", index: int = 0) -> Any:
    """A deterministic value that conforms to `schema` (JSON Schema or Gemini's OpenAPI subset)."""
    root = root if root is not None else schema
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return example_from_schema({**target, **{k: v for k, v in schema.items() if k != "$ref"}}, root, name, index)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if str(s.get("type", "")).lower() != "null"] or schema[key]
            return example_from_schema(options[0], root, name, index)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][index % len(schema["enum"])]
    kind = str(schema.get("type", "object" if "properties" in schema else "string")).lower()
    if kind == "object":
        props = schema.get("properties") or {}
        return {key: example_from_schema(sub, root, key, index) for key, sub in props.items()}
    if kind == "array":
        low = int(schema.get("minItems", schema.get("min_items", 1)) or 1)
        high = schema.get("maxItems", schema.get("max_items"))
        n = min(max(low, 1), int(high)) if high is not None else max(low, 1)
        return [example_from_schema(schema.get("items") or {}, root, name, i) for i in range(n)]
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "number":
        return float(schema.get("minimum", 0.0))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    pattern = schema.get("pattern")
    if pattern:
        for word in _WORDS[index % len(_WORDS) :] + _WORDS:
            if re.fullmatch(pattern, word):
                return word
    text = f"{name} {index + 1}: a plausible answer."
    return text.ljust(int(schema.get("minLength", 0)), ".")
