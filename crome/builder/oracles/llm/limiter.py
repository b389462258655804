"""Client-side limits: requests in flight, requests per minute and tokens per minute.

A run should stay inside a provider's quota rather than storm into 429s. The buckets work by
reservation: a caller takes its tokens at once (the level may go negative) and sleeps until the
debt would have refilled, so waiters are served in arrival order without a lock, and a request
bigger than the bucket still goes through (it just waits longer). Token use is estimated before a
call (characters / 4 plus the output allowance, which is also how OpenAI counts a request against
its limit) and reconciled with the real usage afterwards.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from contextlib import asynccontextmanager
from typing import AsyncIterator, Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

class TokenBucket:
    """`per_minute` units a minute, refilled continuously, holding at most `burst_s` seconds' worth (>= 1)."""

    def __init__(self, per_minute: float, *, burst_s: float = 1.0, clock: Clock = time.monotonic) -> None:
        if per_minute <= 0:
            raise ValueError(f"rate must be positive, got {per_minute}")
        self.rate = per_minute / 60.0  # units per second
        # One second of burst: a provider that enforces "60,000 a minute" as "1,000 a second"
        # is still respected, and a slow rate still lets one request through at once.
        self.capacity = max(1.0, self.rate * burst_s)
        self.clock = clock
        self.level = self.capacity
        self.updated = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def reserve(self, amount: float) -> float:
        """Take `amount` now; return how many seconds the caller must wait before using it."""
        self._refill()
        self.level -= amount
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def adjust(self, delta: float) -> None:
        """Give back (delta > 0) or take more (delta < 0) once the real usage is known."""
        self._refill()
        self.level = min(self.capacity, self.level + delta)


class Slot:
    """One admitted request; `settle` reports what it really used."""

    def __init__(self, limiter: "RateLimiter", input_estimate: int, output_allowance: int) -> None:
        self._limiter = limiter
        self.input_estimate = input_estimate
        self.output_allowance = output_allowance
        self.settled = False

    def settle(self, tokens_used: int) -> None:
        if not self.settled and self._limiter.tpm is not None:
            self._limiter.tpm.adjust((self.input_estimate + self.output_allowance) - tokens_used)
        self.settled = True


class RateLimiter:
    """A semaphore for concurrency plus optional rpm and tpm buckets, shared by all calls of one oracle."""

    def __init__(
        self,
        *,
        concurrency: int = 16,
        rpm: float | None = None,
        tpm: float | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.concurrency = concurrency
        self.rpm = TokenBucket(rpm, clock=clock) if rpm else None
        self.tpm = TokenBucket(tpm, clock=clock) if tpm else None
        self.clock = clock
        self.sleep = sleep
        self.paused_until = 0.0
        self.waited_s = 0.0  # total time requests spent waiting on rpm/tpm/pause (not on the semaphore)
        # asyncio primitives belong to one event loop; keep one semaphore per loop so an oracle
        # can be used from successive asyncio.run() calls.
        self._semaphores: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = weakref.WeakKeyDictionary()

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._semaphores.get(loop)
        if sem is None:
            sem = self._semaphores[loop] = asyncio.Semaphore(self.concurrency)
        return sem

    def pause(self, seconds: float) -> None:
        """Hold every request back for `seconds` (a 429 with Retry-After speaks for the whole quota)."""
        self.paused_until = max(self.paused_until, self.clock() + seconds)

    @asynccontextmanager
    async def slot(self, input_estimate: int = 0, output_allowance: int = 0) -> AsyncIterator[Slot]:
        # The concurrency slot comes first: reserving rate before it would let requests that
        # queued on the semaphore leave in a burst when slots free up.
        async with self._semaphore():
            wait = max(self.paused_until - self.clock(), 0.0)
            if self.rpm is not None:
                wait = max(wait, self.rpm.reserve(1))
            if self.tpm is not None:
                wait = max(wait, self.tpm.reserve(input_estimate + output_allowance))
            if wait > 0:
                self.waited_s += wait
                await self.sleep(wait)
            slot = Slot(self, input_estimate, output_allowance)
            try:
                yield slot
            finally:
                if not slot.settled:
                    # No usage came back (the call failed): assume the prompt counted and no output.
                    slot.settle(input_estimate)
