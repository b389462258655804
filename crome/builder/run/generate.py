"""The `generate(request)` the stages call: run-store cache, failure and budget accounting around an oracle.

Lookups and writes are micro-batched: every call that reaches the store in the same event-loop
tick shares one DuckDB query, and every finished call is committed in the very next tick by a
single writer, so a SIGKILL loses at most the calls of one tick and nothing is paid for twice
after a commit.

In batch mode (`batch` set to a `BatchQueue`) a cache miss calls nothing: the request joins the
pass's queue for the next provider batch job and the call raises `BatchPending`, which stops its
pair for this pass (crome.builder.run.batch submits the queue and later ingests the answers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from pydantic import ValidationError

from crome.builder.oracles.base import Oracle, SystematicOracleError
from crome.schemas.calls import OracleRequest, OracleResponse
from crome.builder.store import CallRecord, RunStore

log = logging.getLogger(__name__)

FAILED = ("error", "invalid")
# A failed batch item is sent again by the next pass, up to this many batch attempts in all; after
# that its failure stands for the build (as an online failure does), so a build always completes.
BATCH_ATTEMPTS = 3


class BuildStopped(RuntimeError):
    """The run stopped cleanly (budget reached, too many failures): what is done is kept and resumable."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class BatchPending(Exception):
    """This call's request waits on a provider batch job: its pair stops here for this pass."""

    def __init__(self, key: str):
        super().__init__(f"oracle call {key} waits on a batch job")
        self.key = key


@dataclass
class BatchQueue:
    """What a batch-mode pass does with cache misses: queue them for the next job instead of calling."""

    in_flight: set[str] = field(default_factory=set)  # keys a submitted job will answer
    requests: dict[str, OracleRequest] = field(default_factory=dict)  # the next job's requests
    waiting: int = 0  # calls that found their request already in a job in flight


@dataclass
class CallStats:
    total: int = 0
    cached: int = 0
    new: int = 0
    failed: int = 0  # failed in this run (error / invalid), retried on the next run
    by_task: Counter = field(default_factory=Counter)
    by_status: Counter = field(default_factory=Counter)
    input_tokens: int = 0  # spent in this run
    output_tokens: int = 0
    cached_input_tokens: int = 0  # what replayed calls had cost when they were made
    cached_output_tokens: int = 0
    cost_usd: float = 0.0  # spent in this run (estimated from the price table)
    cost_known: bool = True

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "cached": self.cached,
            "new": self.new,
            "failed": self.failed,
            "by_task": dict(sorted(self.by_task.items())),
            "by_status": dict(sorted(self.by_status.items())),
        }


class CachedGenerate:
    """Callable `await generate(request) -> OracleResponse` carrying cache, accounting, budget and stop rules."""

    def __init__(
        self,
        store: RunStore,
        oracle: Oracle,
        *,
        max_cost: float | None = None,
        max_failures: int | None = None,
        price=None,  # callable (input_tokens, output_tokens) -> USD or None
    ):
        self.store = store
        self.oracle = oracle
        self.stats = CallStats()
        self.max_cost = max_cost
        self.max_failures = max_failures
        self._price = price
        self._lookups: dict[str, list[asyncio.Future]] = {}
        self._writes: list[CallRecord] = []
        self._lookup_scheduled = False
        self._write_scheduled = False
        self._inflight_cost = 0.0
        # Spent or committed before this run's calls (batch mode: earlier jobs and jobs in flight),
        # so --max-cost caps the whole batch build, not one pass.
        self.committed_cost = 0.0
        self.batch: BatchQueue | None = None  # set by crome.builder.run.batch for a batch-mode pass
        self.stopped: BuildStopped | None = None
        self.fatal: BaseException | None = None

    # -- store batching ------------------------------------------------------------------
    def _flush_lookups(self) -> None:
        self._lookup_scheduled = False
        pending, self._lookups = self._lookups, {}
        try:
            found = self.store.get_calls(list(pending))
        except BaseException as exc:  # noqa: BLE001 - hand the error to every waiter
            for futs in pending.values():
                for f in futs:
                    if not f.done():
                        f.set_exception(exc)
            return
        for key, futs in pending.items():
            for f in futs:
                if not f.done():
                    f.set_result(found.get(key))

    async def _lookup(self, key: str) -> CallRecord | None:
        fut = asyncio.get_running_loop().create_future()
        self._lookups.setdefault(key, []).append(fut)
        if not self._lookup_scheduled:
            self._lookup_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_lookups)
        return await fut

    def _flush_writes(self) -> None:
        self._write_scheduled = False
        batch, self._writes = self._writes, []
        if batch:
            self.store.record_calls(batch)

    def _record(self, rec: CallRecord) -> None:
        self._writes.append(rec)
        if not self._write_scheduled:
            self._write_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_writes)

    def flush(self) -> None:
        """Commit whatever is buffered (called at the end of a run and when it stops)."""
        self._flush_writes()

    # -- the call ------------------------------------------------------------------------
    def _cost(self, input_tokens: int, output_tokens: int) -> float:
        if self._price is None:
            return 0.0
        c = self._price(input_tokens, output_tokens)
        if c is None:
            self.stats.cost_known = False
            return 0.0
        return c

    def estimate_call_cost(self, request: OracleRequest) -> float:
        """An upper bound: the estimated input tokens, every allowed token out."""
        return self._cost(request.estimated_input_tokens, request.max_output_tokens)

    def account(self, resp: OracleResponse) -> None:
        """Count a response this run paid for (a call made, or a batch item ingested); apply the failure rule."""
        self.stats.new += 1
        self.stats.by_status[resp.status] += 1
        self.stats.input_tokens += resp.input_tokens
        self.stats.output_tokens += resp.output_tokens
        self.stats.cost_usd += self._cost(resp.input_tokens, resp.output_tokens)
        if resp.status in FAILED:
            self.stats.failed += 1
            if self.max_failures is not None and self.stats.failed > self.max_failures:
                self.stopped = BuildStopped(
                    "max_failures",
                    f"stopped: {self.stats.failed} oracle calls failed in this run (--max-failures {self.max_failures}); "
                    f"last error: {resp.error}",
                )

    def _replays(self, rec: CallRecord) -> bool:
        # A batch item that failed every batch attempt replays its failure (online runs still retry it).
        return rec.replayable or (self.batch is not None and rec.batch_job_id is not None and rec.attempts >= BATCH_ATTEMPTS)

    async def __call__(self, request: OracleRequest) -> OracleResponse:
        if self.fatal is not None:
            raise self.fatal
        if self.stopped is not None:
            raise self.stopped
        key = request.cache_key(self.oracle.provider, self.oracle.model)
        self.stats.total += 1
        self.stats.by_task[request.task] += 1
        rec = await self._lookup(key)
        if rec is not None and self._replays(rec):
            try:
                replayed = rec.to_response(request.output_model, request.validation)
            except ValidationError as exc:
                # Stored before today's checks (a verdict that skips a rubric): not an answer, so ask again.
                log.info("stored %s answer %s fails validation now, sending it again: %s", request.task, key, exc.error_count())
            else:
                self.stats.cached += 1
                self.stats.by_status[rec.status] += 1
                self.stats.cached_input_tokens += rec.input_tokens or 0
                self.stats.cached_output_tokens += rec.output_tokens or 0
                return replayed

        queue = self.batch
        if queue is not None and (key in queue.in_flight or key in queue.requests):
            queue.waiting += 1
            raise BatchPending(key)
        if self.max_cost is not None:
            projected = self.committed_cost + self.stats.cost_usd + self._inflight_cost + self.estimate_call_cost(request)
            if projected > self.max_cost:
                self.stopped = BuildStopped(
                    "max_cost",
                    f"stopped before the estimated cost (${projected:.4f}) passes --max-cost ${self.max_cost:.4f}; "
                    "everything done so far is kept: re-run with a higher --max-cost to resume",
                )
                raise self.stopped
        if queue is not None:
            estimate = self.estimate_call_cost(request)
            queue.requests[key] = request
            self._inflight_cost += estimate  # reserved until the job is submitted (the pass ends)
            raise BatchPending(key)
        reserved = self.estimate_call_cost(request) if self.max_cost is not None else 0.0
        self._inflight_cost += reserved
        started = time.perf_counter()
        try:
            resp = await self.oracle.agenerate(request)
        except SystematicOracleError as exc:
            self.fatal = exc
            raise
        except Exception as exc:  # noqa: BLE001 - an oracle bug must not kill the run: record it
            log.warning("oracle raised on %s: %s", request.task, type(exc).__name__)
            resp = OracleResponse(status="error", error=f"{type(exc).__name__}: {exc}", latency_s=time.perf_counter() - started)
        finally:
            self._inflight_cost -= reserved
        self.account(resp)
        self._record(CallRecord.from_response(key, request, resp, self.oracle.provider, self.oracle.model))
        return resp
