"""The one small interface every oracle (rules, openai, gemini) implements, and what each declares it can do.

The generation logic never talks to a provider: it hands an `OracleRequest` to a `generate`
callable that already carries the cache (the run store), the limiter and the retries, and gets
an `OracleResponse` back. Tests swap in a fake. What an oracle can do is declared in its
`capabilities`, never discovered by failing; a provider batch API is a second protocol,
`BatchOracle`, that the batch runner checks for.

An oracle that queues requests (the LLM oracles: limiter, retries) may also have `halt(reason)`:
after it, no further request goes out (a queued call or a retry raises `CallHalted`), while the
requests already on the wire finish. A run that stops (Ctrl-C, budget, failure cap, a store
that cannot write) halts its oracle, so what is already paid for is answered and recorded and
nothing new is paid for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, ClassVar, Protocol, Sequence, runtime_checkable

from crome.schemas.calls import Attempt, OracleRequest, OracleResponse


class SystematicOracleError(RuntimeError):
    """An error that will hit every call (bad key, unknown model): stop the run at once."""


class CallHalted(Exception):
    """The oracle was halted before this call's next request went out; `sent` lists those already sent (billed)."""

    def __init__(self, reason: str, sent: Sequence[Attempt] = ()) -> None:
        super().__init__(f"not sent: {reason}")
        self.reason = reason
        self.sent = list(sent)


@dataclass(frozen=True)
class Capabilities:
    """What an oracle can do. The stages read these instead of asking the oracle and watching it fail."""

    upgrade: bool = True  # writes upgrades (a rewrite better on one rubric)
    safety: bool = True  # intervenes on safety rubrics
    verify: bool = True  # judges a rewrite against its original (the verify stage is on by default)
    priced: bool = True  # calls cost money: the price table applies, --max-cost means something
    batch: bool = False  # has a provider batch API (`--batch`); the oracle is then a `BatchOracle`
    # Fields of `OracleRequest.context` the oracle reads that the rendered messages do not carry:
    # the only context a cache key holds. An LLM reads the messages alone (none); see the rules oracle.
    context_keys: frozenset[str] = field(default_factory=frozenset)


@runtime_checkable
class Oracle(Protocol):
    provider: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    model: str

    @property
    def name(self) -> str: ...

    async def agenerate(self, request: OracleRequest) -> OracleResponse: ...

    async def aclose(self) -> None: ...


@dataclass
class JobStatus:
    state: str  # running | completed | failed | expired | cancelled
    provider_state: str  # the provider's own word for it
    counts: dict[str, int] = field(default_factory=dict)  # as the provider reports them (may be empty)
    error: str | None = None  # why a job failed as a whole

    @property
    def finished(self) -> bool:
        return self.state != "running"


@runtime_checkable
class BatchJobs(Protocol):
    """One provider's batch job API as the batch runner uses it: submit, find again, poll, read answers."""

    provider: str
    model: str
    # Per-job limits of the provider; a pass with more requests is split into several jobs.
    max_items: int
    max_bytes: int

    def item_size(self, request: OracleRequest) -> int: ...

    def submit(self, items: list[tuple[str, OracleRequest]], intent: str) -> str: ...

    def find(self, intent: str) -> str | None: ...

    def poll(self, job_id: str) -> JobStatus: ...

    def results(self, job_id: str, keys: list[str], requests: dict[str, OracleRequest], attempts: dict[str, int]) -> dict[str, OracleResponse]: ...

    def classify(self, exc: Exception) -> Exception:
        """The provider's exception as crome sees it: `SystematicOracleError` stops the build."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class BatchOracle(Oracle, Protocol):
    """An oracle whose provider has a batch API (`capabilities.batch`)."""

    def batch_jobs(self) -> BatchJobs: ...


Generate = Callable[[OracleRequest], Awaitable[OracleResponse]]


def cache_key(oracle: Oracle, request: OracleRequest) -> str:
    """The key the run store files `request` under for `oracle`: what its provider sees, and the context it reads."""
    return request.cache_key(oracle.provider, oracle.model, oracle.capabilities.context_keys)


def halt(oracle: Oracle, reason: str) -> None:
    """Stop `oracle` sending further requests, if it queues any (see the module docstring)."""
    stop = getattr(oracle, "halt", None)
    if stop is not None:
        stop(reason)

__all__ = [
    "BatchJobs", "BatchOracle", "CallHalted", "Capabilities", "Generate", "cache_key", "halt", "JobStatus", "Oracle", "OracleRequest", "OracleResponse",
    "SystematicOracleError",
]
