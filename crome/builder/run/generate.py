"""The `generate(request)` the stages call: run-store cache, single flight, billing and budget around an oracle.

Exact money, in four rules:
- a call is filed under what its provider sees (`crome.builder.oracles.base.cache_key`), so a
  request already answered is replayed, whatever donor, seed or --limit asked for it again;
- single flight: identical requests in flight at once share one provider call (the first sends,
  the others await its answer); the entry goes when the answer is stored;
- every request sent is recorded as an attempt with the usage it reported (retries, re-asks,
  refusals, cut-offs), and the run's spend is their sum;
- a run that stops (budget, Ctrl-C, a sibling call's error) `halt`s the oracle, so nothing
  unsent goes out, and `drain`s the calls already sent: they finish and are recorded.

Lookups and writes are micro-batched: every call that reaches the store in the same event-loop
tick shares one DuckDB query, and every finished call is committed in the very next tick by a
single writer, so a SIGKILL loses at most the calls of one tick. A write that fails is tried
once more; if it fails again the run stops sending and ends with `StoreWriteError`, which names
every answered call that is not in the store.

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

from crome.builder.oracles.base import CallHalted, Oracle, SystematicOracleError, cache_key, halt
from crome.builder.store import CallRecord, RunStore
from crome.schemas.calls import Attempt, OracleRequest, OracleResponse

log = logging.getLogger(__name__)

FAILED = ("error", "invalid")
# A failed batch item is sent again by the next pass, up to this many batch attempts in all; after
# that its failure stands for the build (as an online failure does), so a build always completes.
BATCH_ATTEMPTS = 3


class BuildStopped(RuntimeError):
    """The run stopped cleanly (budget reached, too many failures, interrupted): what is done is kept and resumable."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class BatchPending(Exception):
    """This call's request waits on a provider batch job: its pair stops here for this pass."""

    def __init__(self, key: str):
        super().__init__(f"oracle call {key} waits on a batch job")
        self.key = key


class StoreWriteError(RuntimeError):
    """The run store failed to record answered calls twice in a row: the run stopped; the message names what is not stored."""

    def __init__(self, cause: BaseException, unsaved: list[CallRecord]):
        super().__init__(cause)
        self.cause = cause
        self.unsaved = unsaved  # grows while the calls in flight finish

    def __str__(self) -> str:
        named = "; ".join(f"{r.task} {r.key}" for r in self.unsaved)
        return (
            f"the run store could not record oracle calls ({type(self.cause).__name__}: {self.cause}), even on a retry; "
            f"the run stopped sending. {len(self.unsaved)} answered call(s) are not in the store and will be sent "
            f"(and billed) again by a re-run: {named or 'none'}"
        )


@dataclass
class BatchQueue:
    """What a batch-mode pass does with cache misses: queue them for the next job instead of calling."""

    in_flight: set[str] = field(default_factory=set)  # keys a submitted job will answer
    requests: dict[str, OracleRequest] = field(default_factory=dict)  # the next job's requests
    waiting: int = 0  # calls that found their request already in a job in flight


@dataclass
class CallStats:
    total: int = 0
    cached: int = 0  # answered without a call of their own: replayed from the store, or shared in flight
    shared: int = 0  # of those, identical requests that awaited the one call in flight
    new: int = 0
    failed: int = 0  # failed in this run (error / invalid), retried on the next run
    internal: int = 0  # pairs that hit an internal error (a bug): they count toward --max-failures too
    by_task: Counter = field(default_factory=Counter)
    by_status: Counter = field(default_factory=Counter)
    requests: int = 0  # requests this run sent to the provider (every attempt)
    input_tokens: int = 0  # billed in this run: every attempt's usage
    output_tokens: int = 0
    cached_input_tokens: int = 0  # what replayed calls had cost when they were made
    cached_output_tokens: int = 0
    cost_usd: float = 0.0  # billed in this run (estimated from the price table)
    cost_known: bool = True

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "cached": self.cached,
            "shared": self.shared,
            "new": self.new,
            "failed": self.failed,
            "requests": self.requests,
            "by_task": dict(sorted(self.by_task.items())),
            "by_status": dict(sorted(self.by_status.items())),
        }


def _settle(waiting: asyncio.Future, exc: BaseException) -> None:
    """Hand a call's exception to the identical requests waiting on it."""
    if waiting.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        waiting.cancel()
        return
    waiting.set_exception(exc)
    waiting.exception()  # retrieved: nobody may be waiting, and the caller has it anyway


# When answers are committed to the run store. A priced oracle's answer is committed in the event
# loop turn it arrives in (with the others of that turn), so a crash loses no call that came back:
# a re-run never pays for it again. An unpriced oracle's answers (rules; a local server whose
# calls cost nothing) wait for up to WRITE_BATCH of them or WRITE_DELAY_S seconds: a DuckDB
# transaction costs ~17 ms however little it holds, and committing the few dozen answers of each
# turn was most of a rules build's time. A crash then costs at most that second's free calls,
# which the re-run makes again; the build's files are the same either way. The flow commits the
# buffer before it writes a batch of finished pairs, so every written pair's calls are stored.
WRITE_BATCH = 2048
WRITE_DELAY_S = 1.0


class CachedGenerate:
    """Callable `await generate(request) -> OracleResponse` carrying cache, single flight, accounting, budget and stop rules."""

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
        self._write_timer: asyncio.TimerHandle | None = None
        self._flights: dict[str, asyncio.Future] = {}  # key -> the answer of the one call in flight for it
        self._inflight_cost = 0.0
        self.sending = 0  # calls inside the oracle now (sent, or waiting for a slot)
        # Spent or committed before this run's calls (batch mode: earlier jobs and jobs in flight),
        # so --max-cost caps the whole batch build, not one pass.
        self.committed_cost = 0.0
        self.batch: BatchQueue | None = None  # set by crome.builder.run.batch for a batch-mode pass
        self.stopped: BuildStopped | None = None
        self.fatal: BaseException | None = None
        self.unsaved: list[CallRecord] = []  # answered calls a failing store could not record

    def key(self, request: OracleRequest) -> str:
        return cache_key(self.oracle, request)

    # -- stopping ------------------------------------------------------------------------
    def stop(self, exc: BuildStopped) -> BuildStopped:
        """Stop the run: no new call starts, the oracle sends nothing more; calls on the wire finish and are recorded."""
        if self.stopped is None:
            self.stopped = exc
        halt(self.oracle, exc.reason)
        return self.stopped

    def _fail(self, exc: BaseException) -> BaseException:
        if self.fatal is None:
            self.fatal = exc
        halt(self.oracle, "the run failed")
        return self.fatal

    def count_failure(self, internal: bool = False, detail: str | None = None) -> None:
        """A failed call or an internal error: past --max-failures (both kinds together) the run stops."""
        if internal:
            self.stats.internal += 1
        failures = self.stats.failed + self.stats.internal
        if self.max_failures is not None and failures > self.max_failures and self.stopped is None:
            reason = "internal_errors" if internal else "max_failures"
            self.stop(BuildStopped(reason, (
                f"stopped: {failures} failures in this run ({self.stats.failed} oracle calls failed, {self.stats.internal} pairs "
                f"hit an internal error; --max-failures {self.max_failures}); last error: {detail}")))

    async def drain(self, timeout: float | None = None) -> int:
        """Wait for the calls in flight to finish and be recorded (at most `timeout` s); return how many did not.

        A call whose pair stopped waiting (a sibling call raised) is still running in its own
        gather task: it is waited for here, so its answer is recorded.
        """
        waiting = [f for f in self._flights.values() if not f.done()]
        left: set[asyncio.Future] = set()
        if waiting:
            _, left = await asyncio.wait(waiting, timeout=timeout)
        self.flush()
        return len(left)

    # -- store batching ------------------------------------------------------------------
    def _flush_lookups(self) -> None:
        self._lookup_scheduled = False
        pending, self._lookups = self._lookups, {}
        try:
            found = self.store.get_calls(list(pending), sent=False)
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
        try:
            return await fut
        except Exception as exc:  # noqa: BLE001 - a store that cannot be read stops the run
            raise self._fail(exc) from None

    def _flush_writes(self) -> None:
        self._write_scheduled = False
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        calls, self._writes = self._writes, []
        if not calls:
            return
        error: Exception | None = None
        for _ in range(2):  # a failed write is tried once more before the run stops
            try:
                self.store.record_calls(calls)
                error = None
                break
            except Exception as exc:  # noqa: BLE001
                error = exc
                log.warning("run store write failed (%s: %s)", type(exc).__name__, exc)
        for rec in calls:  # stored (or named as unsaved): identical requests may now look it up
            flight = self._flights.get(rec.key)
            if flight is not None and flight.done():
                del self._flights[rec.key]
        if error is not None:
            self.unsaved.extend(calls)
            if not isinstance(self.fatal, StoreWriteError):
                self.fatal = None
                self._fail(StoreWriteError(error, self.unsaved))

    def _record(self, rec: CallRecord) -> None:
        """Buffer a call record for the store: paid answers are committed in this loop turn, free ones in batches (see WRITE_BATCH)."""
        self._writes.append(rec)
        urgent = self.oracle.capabilities.priced or len(self._writes) >= WRITE_BATCH
        if urgent and self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
            self._write_scheduled = False
        if not self._write_scheduled:
            self._write_scheduled = True
            loop = asyncio.get_running_loop()
            if urgent:
                loop.call_soon(self._flush_writes)
            else:
                self._write_timer = loop.call_later(WRITE_DELAY_S, self._flush_writes)

    def flush(self) -> None:
        """Commit whatever is buffered (called at the end of a run and when it stops)."""
        self._flush_writes()

    # -- accounting ----------------------------------------------------------------------
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

    def bill(self, attempts: list[Attempt]) -> None:
        """Add requests this run paid for to its spend."""
        for a in attempts:
            self.stats.requests += 1
            self.stats.input_tokens += a.input_tokens
            self.stats.output_tokens += a.output_tokens
            self.stats.cost_usd += self._cost(a.input_tokens, a.output_tokens)

    def account(self, resp: OracleResponse) -> None:
        """Count a response this run paid for (a call made, or a batch item ingested); apply the failure rule."""
        self.stats.new += 1
        self.stats.by_status[resp.status] += 1
        self.bill(resp.billed())
        if resp.status in FAILED:
            self.stats.failed += 1
            self.count_failure(detail=resp.error)

    def _replays(self, rec: CallRecord) -> bool:
        # A batch item that failed every batch attempt replays its failure (online runs still retry it).
        return rec.replayable or (self.batch is not None and rec.batch_job_id is not None and rec.attempts >= BATCH_ATTEMPTS)

    # -- the call ------------------------------------------------------------------------
    async def __call__(self, request: OracleRequest) -> OracleResponse:
        if self.fatal is not None:
            raise self.fatal
        if self.stopped is not None:
            raise self.stopped
        key = self.key(request)
        self.stats.total += 1
        self.stats.by_task[request.task] += 1
        flight = self._flights.get(key)
        if flight is not None:  # the same request is being answered: wait for that answer
            resp = await asyncio.shield(flight)
            self.stats.cached += 1
            self.stats.shared += 1
            self.stats.by_status[resp.status] += 1
            return resp
        # Until this request is answered from the store or handed to its own task, identical ones wait here.
        waiting = self._flights[key] = asyncio.get_running_loop().create_future()
        try:
            rec = await self._lookup(key)
            replayed = None
            if rec is not None and self._replays(rec):
                try:
                    replayed = rec.to_response(request.output_model, request.validation)
                except ValidationError as exc:
                    # Stored before today's checks (a verdict that skips a rubric): not an answer, so ask again.
                    log.info("stored %s answer %s fails validation now, sending it again: %s", request.task, key, exc.error_count())
            if replayed is not None:
                self.stats.cached += 1
                self.stats.by_status[rec.status] += 1
                self.stats.cached_input_tokens += rec.input_tokens or 0
                self.stats.cached_output_tokens += rec.output_tokens or 0
                resp = replayed
                del self._flights[key]
                waiting.set_result(resp)
                return resp
            if self.fatal is not None:
                raise self.fatal
            if self.stopped is not None:
                raise self.stopped
            reserved = self._admit(key, request)
        except BaseException as exc:
            self._flights.pop(key, None)
            _settle(waiting, exc)
            raise
        try:
            resp = await self._call(key, request, reserved)
        except BaseException as exc:
            _settle(waiting, exc)
            raise
        waiting.set_result(resp)  # the writer drops the entry once the record is committed
        return resp

    def _admit(self, key: str, request: OracleRequest) -> float:
        """Batch mode queues the request; the budget rule stops the run before a call could pass --max-cost.

        Returns what the call reserves of the budget (its upper-bound cost) until it is answered.
        """
        queue = self.batch
        if queue is not None and (key in queue.in_flight or key in queue.requests):
            queue.waiting += 1
            raise BatchPending(key)
        if self.max_cost is not None:
            projected = self.committed_cost + self.stats.cost_usd + self._inflight_cost + self.estimate_call_cost(request)
            if projected > self.max_cost:
                raise self.stop(BuildStopped(
                    "max_cost",
                    f"stopped before the estimated cost (${projected:.4f}) passes --max-cost ${self.max_cost:.4f}; "
                    "everything done so far is kept: re-run with a higher --max-cost to resume",
                ))
        if queue is not None:
            queue.requests[key] = request
            self._inflight_cost += self.estimate_call_cost(request)  # reserved until the job is submitted (the pass ends)
            raise BatchPending(key)
        reserved = self.estimate_call_cost(request) if self.max_cost is not None else 0.0
        self._inflight_cost += reserved
        return reserved

    async def _call(self, key: str, request: OracleRequest, reserved: float) -> OracleResponse:
        provider, model = self.oracle.provider, self.oracle.model
        self.sending += 1
        started = time.perf_counter()
        try:
            resp = await self.oracle.agenerate(request)
        except CallHalted as exc:
            # Stopped before its next request went out: what it had already sent was billed.
            self._flights.pop(key, None)
            self._unfinished(key, request, exc.sent, f"stopped before its next request was sent ({exc.reason})")
            raise (self.fatal or self.stopped or BuildStopped("halted", str(exc))) from None
        except SystematicOracleError as exc:
            self._flights.pop(key, None)
            self._unfinished(key, request, list(getattr(exc, "sent", [])), str(exc))
            raise self._fail(exc) from None
        except asyncio.CancelledError:  # abandoned after the grace period of a stop
            self._flights.pop(key, None)
            raise
        except Exception as exc:  # noqa: BLE001 - an oracle bug must not kill the run: record it
            log.warning("oracle raised on %s: %s", request.task, type(exc).__name__)
            resp = OracleResponse(status="error", error=f"{type(exc).__name__}: {exc}", latency_s=time.perf_counter() - started)
        finally:
            self._inflight_cost -= reserved
            self.sending -= 1
        self.account(resp)
        self._record(CallRecord.from_response(key, request, resp, provider, model, context_keys=self.oracle.capabilities.context_keys))
        return resp

    def _unfinished(self, key: str, request: OracleRequest, sent: list[Attempt], why: str) -> None:
        """A call cut short after requests went out: recorded as a failure (a re-run makes it) that keeps what it was billed."""
        if not sent:
            return
        self.bill(sent)
        resp = OracleResponse(status="error", error=why, attempts=len(sent), sent=sent,
                              input_tokens=sum(a.input_tokens for a in sent), output_tokens=sum(a.output_tokens for a in sent))
        self._record(CallRecord.from_response(key, request, resp, self.oracle.provider, self.oracle.model,
                                              context_keys=self.oracle.capabilities.context_keys))
