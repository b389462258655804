"""Retry policies (tenacity) with separate budgets, error classes, Retry-After parsing and secret redaction.

Two budgets, as in instructor: transport errors (429, 5xx, timeouts, dropped connections,
garbled bodies) are retried with exponential backoff and jitter, honouring Retry-After; output
that fails validation is re-asked with the error appended. Refusals, safety blocks and length
cut-offs are not errors here at all: the oracle records them as statuses.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Mapping

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter
from tenacity.wait import wait_base

log = logging.getLogger("crome.oracles")


class TransientError(Exception):
    """Worth sending again after a wait: rate limits, server errors, timeouts, dropped connections."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidOutput(Exception):
    """The output did not parse or validate; the conversation already carries the correction."""

    def __init__(self, message: str, raw: str) -> None:
        super().__init__(message)
        self.raw = raw


class SchemaUnsupported(Exception):
    """The server rejected this structured-output mode (not the request): try a simpler one."""


class ItemError(Exception):
    """A failure of this request alone that sending it again will not fix (e.g. prompt too long)."""


__all__ = [
    "InvalidOutput",
    "ItemError",
    "RetryPolicy",
    "SchemaUnsupported",
    "TransientError",
    "parse_retry_after",
    "parse_retry_delay",
    "reask_retrying",
    "redact",
    "register_secret",
    "transport_retrying",
]


@dataclass(frozen=True)
class RetryPolicy:
    max_transport_retries: int = 6  # per request sent; ~1+2+4+8+16+32 s of backoff at the default base
    max_reasks: int = 2  # a model that fails validation three times in a row rarely gets it on the fourth
    backoff_base: float = 1.0  # first backoff in seconds; tests make it tiny
    backoff_max: float = 60.0
    max_retry_after: float = 120.0  # a longer Retry-After (daily quota) is waited only this long per try

    def __post_init__(self) -> None:
        if self.max_transport_retries < 0 or self.max_reasks < 0:
            raise ValueError("retry budgets must be >= 0")
        if self.backoff_base < 0 or self.backoff_max < 0 or self.max_retry_after < 0:
            raise ValueError("backoff times must be >= 0")


class wait_retry_after_or_backoff(wait_base):
    """Wait what the server asked for (Retry-After, capped), else exponential backoff with jitter."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.backoff = wait_exponential_jitter(initial=policy.backoff_base, max=policy.backoff_max, jitter=policy.backoff_base)

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            # A little jitter on top, never below what was asked, so retries told the same
            # Retry-After do not all land in the same instant.
            wait = min(max(retry_after, 0.0), self.policy.max_retry_after)
            return wait + random.uniform(0, min(0.1 * wait, 1.0))
        return float(self.backoff(retry_state))


def transport_retrying(policy: RetryPolicy, label: str = "oracle", sleep: Callable[[float], Awaitable[None]] | None = None) -> AsyncRetrying:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.info("%s: %s; retry %d/%d in %.2fs", label, redact(str(exc)), state.attempt_number, policy.max_transport_retries, wait)

    return AsyncRetrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_attempt(policy.max_transport_retries + 1),
        wait=wait_retry_after_or_backoff(policy),
        before_sleep=before_sleep,
        reraise=True,
        **({"sleep": sleep} if sleep is not None else {}),
    )


def reask_retrying(policy: RetryPolicy, label: str = "oracle") -> AsyncRetrying:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.info("%s: invalid output (%s); re-ask %d/%d", label, redact(str(exc))[:200], state.attempt_number, policy.max_reasks)

    # No wait: the server answered fine, the answer was wrong; the correction is in the messages.
    return AsyncRetrying(
        retry=retry_if_exception_type(InvalidOutput),
        stop=stop_after_attempt(policy.max_reasks + 1),
        before_sleep=before_sleep,
        reraise=True,
    )


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    if not headers:
        return None
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    if (ms := lower.get("retry-after-ms")) is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(email.utils.mktime_tz(parsed) - (time.time() if now is None else now), 0.0)


def parse_retry_delay(error_json: Any) -> float | None:
    """Seconds from a google.rpc.RetryInfo detail ({"retryDelay": "1.5s"}) in a Google API error body."""
    error = error_json.get("error", error_json) if isinstance(error_json, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details or []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = detail.get("retryDelay")
            if isinstance(delay, str) and delay.endswith("s"):
                try:
                    return max(float(delay[:-1]), 0.0)
                except ValueError:
                    return None
            if isinstance(delay, dict):  # {"seconds": 1, "nanos": 5e8}
                return float(delay.get("seconds", 0)) + float(delay.get("nanos", 0)) / 1e9
    return None


# -- secrets ------------------------------------------------------------------------------------

_SECRETS: set[str] = set()
REDACTED = "[REDACTED]"
_PATTERNS = (
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    (re.compile(r"(?i)([?&](?:key|api_key|apikey|access_token|token)=)[^&\s\"'#]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)((?:x-goog-api-key|api-key|x-api-key|authorization)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"), r"\1" + REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{12,}"), "sk-" + REDACTED),  # OpenAI key shapes
    (re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"), REDACTED),  # Google API key shape
)


def register_secret(value: str | None) -> None:
    """Remember a secret so every later `redact` removes it wherever it appears."""
    if value and len(value) >= 6 and value != "EMPTY":
        _SECRETS.add(value)


def redact(text: str, secrets: Iterable[str] = (), patterns: bool = True) -> str:
    """Remove known secrets and (with `patterns`) bearer tokens, key parameters and key-shaped strings.

    Model output is scrubbed of the known secrets only: the patterns could alter an answer that
    merely talks about API keys, and then `raw` would no longer be what `parsed` came from.
    """
    for secret in sorted({*_SECRETS, *(s for s in secrets if s and len(s) >= 6)}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    if patterns:
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
    return text
