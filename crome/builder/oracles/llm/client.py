"""What the OpenAI and Gemini oracles share: budgets, limiter, structured-output fallback, validation.

A provider subclass only turns messages into one API call (`_complete`) and names its own
exceptions (`classify`); everything else (the two retry budgets, the re-ask, the downgrade
from schema-constrained output to JSON mode to text, token accounting, secret scrubbing) lives
here once, so the two backends cannot drift apart.

Every request that goes out is an `Attempt` on the response (`sent`), with the usage the server
reported for it: a re-ask, a refusal and a retried garbled answer are billed like any answer,
and the run's spend is their sum. `halt` stops further requests (queued calls, retries, re-asks)
while those on the wire finish.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import os
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel

from crome.builder.oracles.base import CallHalted, Capabilities, SystematicOracleError
from crome.schemas.calls import Attempt, OracleRequest, OracleResponse, Status, estimate_input_tokens, estimate_tokens
from crome.builder.oracles.llm.limiter import RateLimiter
from crome.builder.oracles.llm.pricing import estimate_cost
from crome.builder.oracles.llm.retry import (
    InvalidOutput,
    ItemError,
    RetryPolicy,
    SchemaUnsupported,
    TransientError,
    reask_retrying,
    redact,
    register_secret,
    transport_retrying,
)
from crome.builder.oracles.llm.structured import describe_error, parse_output, reask_message, with_schema_instruction

log = logging.getLogger("crome.oracles")

# How one API call ended, before validation. "stop": an answer to validate.
Finish = Literal["stop", "length", "refused", "blocked", "error"]
SchemaMode = Literal["auto", "json_schema", "response_schema", "json_object", "text"]


@dataclass
class Completion:
    text: str | None
    finish: Finish
    detail: str | None = None  # refusal text, block reason, odd finish reason
    input_tokens: int | None = None  # None: the server sent no usage
    output_tokens: int | None = None


@dataclass
class _Call:
    """The running state of one request: the conversation (grows with re-asks) and what it cost."""

    messages: list[dict[str, str]]
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    started: float = field(default_factory=time.perf_counter)
    sent: list[Attempt] = field(default_factory=list)  # every request that went out, with its usage

    def settle(self, outcome: str) -> None:
        """Name how the last request sent ended, once it is known (an answer may turn out invalid)."""
        if self.sent:
            last = self.sent[-1]
            self.sent[-1] = last._replace(outcome=outcome)


# How a completion's finish reads as an attempt outcome.
_OUTCOME = {"stop": "ok", "length": "truncated", "refused": "refused", "blocked": "blocked", "error": "error"}


class LLMOracle(abc.ABC):
    provider: ClassVar[str]
    # A judge that reads only the rendered messages: every capability but batch, which a provider adds.
    capabilities: ClassVar[Capabilities] = Capabilities()
    # Structured-output modes from most to least constrained; "auto" starts at the first and
    # moves down, for the rest of the run, when the server rejects one.
    modes: ClassVar[tuple[str, ...]]
    # Modes that pass the schema as a request parameter; the others spell it out in the prompt.
    schema_param_modes: ClassVar[frozenset[str]]
    key_envs: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str | None = None,
        concurrency: int | None = 16,
        rpm: float | None = None,
        tpm: float | None = None,
        timeout: float | None = 60.0,
        max_transport_retries: int = 6,
        max_reasks: int = 2,
        schema_mode: SchemaMode = "auto",
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        max_retry_after: float = 120.0,
        **ignored: Any,
    ) -> None:
        if not model:
            raise ValueError(f"{self.provider} oracle needs a model name")
        # None means "the default" so a CLI can pass its unset options straight through.
        timeout = 60.0 if timeout is None else timeout
        concurrency = 16 if concurrency is None else concurrency
        if float(timeout) <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.model = model
        self.base_url = base_url or None
        self.timeout = float(timeout)
        self._fatal: SystematicOracleError | None = None
        self._halted: str | None = None  # why no further request may go out (see `halt`)
        self.policy = RetryPolicy(
            max_transport_retries=int(max_transport_retries),
            max_reasks=int(max_reasks),
            backoff_base=float(backoff_base),
            backoff_max=float(backoff_max),
            max_retry_after=float(max_retry_after),
        )
        # Its waits (rpm, tpm, a Retry-After pause) end early on `halt`, as do retry backoffs.
        self.limiter = RateLimiter(concurrency=int(concurrency), rpm=rpm, tpm=tpm, sleep=self._sleep)
        if schema_mode == "auto":
            self._auto, self._mode_index = True, 0
        elif schema_mode in self.modes:
            self._auto, self._mode_index = False, self.modes.index(schema_mode)
        else:
            raise ValueError(f"schema_mode {schema_mode!r} is not one of auto, {', '.join(self.modes)} for {self.provider}")
        self._key_envs = (api_key_env,) if api_key_env else self.key_envs
        self._api_key = self._read_key()
        register_secret(self._api_key)
        self._clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]" = weakref.WeakKeyDictionary()
        if ignored:
            log.debug("%s: options not used by this oracle: %s", self.name, ", ".join(sorted(ignored)))

    # -- identity -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.model}"

    @property
    def schema_mode(self) -> str:
        """The structured-output mode calls use now (after any downgrade)."""
        return self.modes[self._mode_index]

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}({self.model!r}, base_url={self.base_url!r}, mode={self.schema_mode!r})"

    def halt(self, reason: str) -> None:
        """Send nothing more: a call still queued, or due a retry or re-ask, raises `CallHalted`; requests on the wire finish."""
        if self._halted is None:
            self._halted = reason

    async def _sleep(self, seconds: float) -> None:
        """asyncio.sleep that returns as soon as the oracle is halted: nothing waits to send what will not be sent."""
        end = time.monotonic() + seconds
        while self._halted is None:
            left = end - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.1))

    def cost(self, input_tokens: int, output_tokens: int, batch: bool = False) -> float | None:
        """USD for this usage from the price table, or None when the model is not in it."""
        return estimate_cost(self.model, input_tokens, output_tokens, batch=batch)

    def _read_key(self) -> str:
        for env in self._key_envs:
            value = os.environ.get(env, "").strip()
            if value:
                return value
        if self.base_url:
            # Local OpenAI-compatible servers (vLLM, SGLang, Ollama, llama.cpp) accept any key.
            return "EMPTY"
        raise SystematicOracleError(
            f"{self.name} needs an API key: set {' or '.join(self._key_envs)} in the environment "
            "(keys are only read from there, never from options or files)"
        )

    # -- the provider's part ------------------------------------------------------------------

    @abc.abstractmethod
    def _new_client(self) -> Any:
        """The provider's async SDK client, with its own retries off (tenacity owns the budgets)."""

    async def _close_client(self, client: Any) -> None:
        return None

    @abc.abstractmethod
    async def _complete(self, client: Any, messages: list[dict[str, str]], request: OracleRequest, mode: str) -> Completion:
        """Exactly one API call; SDK exceptions propagate and `classify` maps them."""

    def _classify_provider(self, exc: Exception) -> Exception | None:
        """The provider's own exceptions mapped to ours; None leaves `exc` to the generic rules."""
        return None

    # -- the shared part ---------------------------------------------------------------------

    def _client(self) -> Any:
        # SDK clients hold connection pools tied to one event loop: one client per loop.
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = self._new_client()
        return client

    async def aclose(self) -> None:
        """Close the SDK client of the running event loop."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await self._close_client(client)

    def classify(self, exc: Exception) -> Exception:
        """Map an SDK or transport exception to Transient / Schema / Item / Systematic errors."""
        if isinstance(exc, (TransientError, ItemError, SchemaUnsupported, SystematicOracleError, InvalidOutput)):
            return exc
        mapped = self._classify_provider(exc)
        if mapped is not None:
            return mapped
        if isinstance(exc, json.JSONDecodeError):
            return TransientError(f"malformed response body (not JSON: {exc.msg})")
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
            return TransientError(f"timed out after {self.timeout:g}s")
        try:
            import httpx2

            if isinstance(exc, httpx2.TimeoutException):
                return TransientError(f"timed out after {self.timeout:g}s ({type(exc).__name__})")
            if isinstance(exc, httpx2.TransportError):
                return TransientError(f"connection error: {type(exc).__name__}: {redact(str(exc))}")
        except ImportError:  # pragma: no cover - httpx2 comes with the SDKs
            pass
        if isinstance(exc, ConnectionError):
            return TransientError(f"connection error: {type(exc).__name__}: {redact(str(exc))}")
        log.warning("%s: unexpected %s: %s", self.name, type(exc).__name__, redact(str(exc)))
        return ItemError(f"unexpected {type(exc).__name__}: {redact(str(exc))}")

    def _downgrade(self, failed_index: int, exc: Exception) -> None:
        failed = self.modes[failed_index]
        if not self._auto or failed_index + 1 >= len(self.modes):
            tried = "in every structured-output mode" if self._auto else f"in schema mode {failed!r}"
            raise SystematicOracleError(f"{self.name}: the server rejected the request {tried}: {redact(str(exc))}")
        if self._mode_index == failed_index:  # concurrent calls may all notice; move down once
            self._mode_index = failed_index + 1
            log.warning(
                "%s: server does not accept %s structured output (%s); using %s for the rest of the run",
                self.name,
                failed,
                redact(str(exc))[:200],
                self.modes[self._mode_index],
            )

    def _messages_for(self, mode: str, call: _Call, request: OracleRequest) -> list[dict[str, str]]:
        if mode in self.schema_param_modes:
            return call.messages
        return with_schema_instruction(call.messages, request.output_model)

    async def _send_once(self, call: _Call, request: OracleRequest) -> Completion:
        """One request, moving down a structured-output mode when the server rejects one."""
        client = self._client()
        while True:
            # The estimate uses the mode of now; the mode itself is read once a slot is held, so a
            # request that queued behind the one that found the server's limits already uses the
            # downgraded mode.
            input_estimate = estimate_input_tokens(self._messages_for(self.schema_mode, call, request))
            try:
                async with self.limiter.slot(input_estimate, request.max_output_tokens) as slot:
                    if self._fatal is not None:  # a bad key or model fails every call: send no more
                        raise self._fatal
                    if self._halted is not None:
                        raise CallHalted(self._halted, call.sent)
                    index = self._mode_index
                    mode = self.modes[index]
                    messages = self._messages_for(mode, call, request)
                    call.attempts += 1
                    try:
                        completion = await self._complete(client, messages, request, mode)
                    except Exception as exc:  # noqa: BLE001 - every SDK error is classified here
                        # No answer, no usage: providers do not bill these, but the request went out.
                        call.sent.append(Attempt("error", 0, 0, reported=False))
                        mapped = self.classify(exc)
                        if isinstance(mapped, SystematicOracleError):
                            self._fatal = mapped
                        if mapped is exc:
                            raise
                        # `from None`: the SDK exception (and any request it carries) stays out of tracebacks.
                        raise mapped from None
                    reported = completion.input_tokens is not None and completion.output_tokens is not None
                    if completion.input_tokens is None:
                        completion.input_tokens = estimate_input_tokens(messages)
                    if completion.output_tokens is None:
                        completion.output_tokens = estimate_tokens(completion.text or "")
                    call.sent.append(Attempt(_OUTCOME.get(completion.finish, "error"), completion.input_tokens, completion.output_tokens, reported))
                    slot.settle(completion.input_tokens + completion.output_tokens)
            except SchemaUnsupported as exc:
                self._downgrade(index, exc)
                continue
            except TransientError as exc:
                if exc.retry_after:
                    self.limiter.pause(min(exc.retry_after, self.policy.max_retry_after))
                raise
            call.input_tokens += completion.input_tokens
            call.output_tokens += completion.output_tokens
            return completion

    async def _send(self, call: _Call, request: OracleRequest) -> Completion:
        async for attempt in transport_retrying(self.policy, self.name, sleep=self._sleep):
            with attempt:
                return await self._send_once(call, request)
        raise AssertionError("tenacity ends with a result or the last exception")  # pragma: no cover

    def _accept(self, call: _Call, request: OracleRequest, completion: Completion) -> BaseModel | None:
        """The validated output, None for a final non-answer, or InvalidOutput with the correction appended."""
        if completion.finish != "stop":
            return None
        text = completion.text or ""
        if not text.strip():
            problem: Exception = ValueError("the answer was empty")
        else:
            try:
                return parse_output(text, request.output_model, request.validation)
            except ValueError as exc:  # JSONDecodeError and pydantic's ValidationError
                problem = exc
        call.settle("invalid")
        # instructor style: the bad answer and the error become part of the conversation.
        call.messages.append({"role": "assistant", "content": text if text.strip() else "(empty answer)"})
        call.messages.append({"role": "user", "content": reask_message(problem)})
        raise InvalidOutput(describe_error(problem), text)

    def _response(self, call: _Call, status: Status, *, parsed: BaseModel | None = None, raw: str = "", error: str | None = None) -> OracleResponse:
        return OracleResponse(
            status=status,
            parsed=parsed,
            raw=redact(raw, patterns=False),
            input_tokens=call.input_tokens,
            output_tokens=call.output_tokens,
            latency_s=time.perf_counter() - call.started,
            attempts=call.attempts,
            error=redact(error) if error else None,
            sent=list(call.sent),
        )

    async def agenerate(self, request: OracleRequest) -> OracleResponse:
        """One structured answer. Per-item failures come back as statuses; systematic ones raise."""
        call = _Call(messages=[{"role": m["role"], "content": m["content"]} for m in request.messages])
        try:
            async for attempt in reask_retrying(self.policy, self.name):
                with attempt:
                    completion = await self._send(call, request)
                    parsed = self._accept(call, request, completion)
        except InvalidOutput as exc:
            return self._response(call, "invalid", raw=exc.raw, error=f"output failed validation after {self.policy.max_reasks} re-ask(s): {exc}")
        except TransientError as exc:
            return self._response(call, "error", error=f"gave up after {self.policy.max_transport_retries + 1} tries: {exc}")
        except ItemError as exc:
            return self._response(call, "error", error=str(exc))
        except SystematicOracleError as exc:
            # Raised for every call once the key or model is found bad: a fresh instance per call
            # carries what this one had already sent (a re-ask's first answer was billed).
            fatal = SystematicOracleError(str(exc))
            fatal.sent = list(call.sent)  # type: ignore[attr-defined]
            raise fatal from None
        return self._finished(call, request, completion, parsed)

    def _finished(self, call: _Call, request: OracleRequest, completion: Completion, parsed: BaseModel | None) -> OracleResponse:
        """How a completion that needs no re-ask ends: ok with its output, or a final status."""
        raw = completion.text or ""
        if completion.finish == "stop":
            return self._response(call, "ok", parsed=parsed, raw=raw)
        if completion.finish == "length":
            return self._response(call, "truncated", raw=raw, error=f"output cut off at max_output_tokens={request.max_output_tokens}")
        if completion.finish == "refused":
            return self._response(call, "refused", raw=raw, error=f"refused: {completion.detail or 'no reason given'}")
        if completion.finish == "blocked":
            return self._response(call, "blocked", raw=raw, error=f"blocked: {completion.detail or 'no reason given'}")
        return self._response(call, "error", raw=raw, error=completion.detail or "the server ended the answer abnormally")

    # -- batch mode: the same request bodies and the same parsing, no retries or re-asks ----------

    def batch_messages(self, request: OracleRequest) -> tuple[list[dict[str, str]], str]:
        """The messages and structured-output mode a batch item is sent with: the current mode, no fallback."""
        mode = self.schema_mode
        call = _Call(messages=[{"role": m["role"], "content": m["content"]} for m in request.messages])
        return self._messages_for(mode, call, request), mode

    def batch_response(self, request: OracleRequest, completion: Completion, *, attempts: int = 1) -> OracleResponse:
        """A batch item's completion as a response, validated exactly as online; invalid output is final for this pass.

        A batch cannot re-ask inside the job: an invalid answer is recorded as `invalid`, a failure
        that the next pass sends again.
        """
        reported = completion.input_tokens is not None and completion.output_tokens is not None
        input_tokens = completion.input_tokens if completion.input_tokens is not None else estimate_input_tokens(list(request.messages))
        output_tokens = completion.output_tokens if completion.output_tokens is not None else estimate_tokens(completion.text or "")
        call = _Call(messages=[], attempts=attempts, input_tokens=input_tokens, output_tokens=output_tokens)
        # This batch item is one billed request (earlier batch attempts were recorded when they were collected).
        call.sent.append(Attempt(_OUTCOME.get(completion.finish, "error"), input_tokens, output_tokens, reported))
        parsed = None
        if completion.finish == "stop":
            text = completion.text or ""
            try:
                if not text.strip():
                    raise ValueError("the answer was empty")
                parsed = parse_output(text, request.output_model, request.validation)
            except ValueError as exc:  # JSONDecodeError and pydantic's ValidationError
                call.settle("invalid")
                return self._response(call, "invalid", raw=text, error=f"batch output failed validation (no re-ask in a batch): {describe_error(exc)}")
        response = self._finished(call, request, completion, parsed)
        response.latency_s = 0.0  # a batch item has no latency of its own
        return response

    def batch_error(self, message: str, *, attempts: int = 1) -> OracleResponse:
        """A batch item that produced no answer (failed, expired, or lost with its job)."""
        return OracleResponse(status="error", error=redact(message), attempts=attempts, sent=[Attempt("error", 0, 0, reported=False)])
