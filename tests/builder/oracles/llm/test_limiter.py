"""The client-side limiter: concurrency, requests per minute, tokens per minute, 429 pauses."""

from __future__ import annotations

import asyncio
import time

import pytest

from crome.builder.oracles.llm.limiter import RateLimiter, TokenBucket
from crome.schemas.calls import estimate_input_tokens, estimate_tokens
from crome.builder.oracles.llm.openai import OpenAIOracle
from fake_llm_server import FakeLLMServer
from oracle_contract import make_request


class FakeClock:
    """A clock that only moves when the limiter sleeps, so timing is exact and instant."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_bucket_serves_its_burst_then_waits_in_arrival_order() -> None:
    clock = FakeClock()
    bucket = TokenBucket(600, clock=clock)  # 10 a second, one second of burst
    assert bucket.capacity == 10
    assert [bucket.reserve(1) for _ in range(10)] == [0.0] * 10
    waits = [bucket.reserve(1) for _ in range(3)]
    assert waits == pytest.approx([0.1, 0.2, 0.3])
    clock.now = 1.0  # the debt of 3 is repaid after 0.3 s; 0.7 s more refills 7
    assert bucket.reserve(7) == 0.0
    assert bucket.reserve(1) == pytest.approx(0.1)


def test_bucket_slow_rate_still_admits_one_request_and_large_requests_wait_longer() -> None:
    clock = FakeClock()
    slow = TokenBucket(6, clock=clock)  # one request every 10 s
    assert slow.capacity == 1
    assert slow.reserve(1) == 0.0 and slow.reserve(1) == pytest.approx(10.0)
    tokens = TokenBucket(6000, clock=clock)  # 100 tokens a second, capacity 100
    assert tokens.reserve(350) == pytest.approx(2.5)  # bigger than the bucket: goes through after the debt


def test_bucket_adjust_refunds_up_to_capacity_and_charges_overruns() -> None:
    clock = FakeClock()
    bucket = TokenBucket(6000, clock=clock)
    bucket.reserve(100)
    bucket.adjust(+500)
    assert bucket.level == 100  # capped
    bucket.adjust(-150)
    assert bucket.reserve(1) == pytest.approx(0.51)


def test_limiter_rpm_spaces_requests() -> None:
    clock = FakeClock()
    limiter = RateLimiter(concurrency=8, rpm=60, clock=clock, sleep=clock.sleep)

    async def go() -> list[float]:
        starts = []
        for _ in range(5):
            async with limiter.slot():
                starts.append(clock.now)
        return starts

    assert asyncio.run(go()) == pytest.approx([0, 1, 2, 3, 4])


def test_limiter_tpm_charges_the_estimate_and_reconciles_with_usage() -> None:
    clock = FakeClock()
    limiter = RateLimiter(concurrency=8, tpm=6000, clock=clock, sleep=clock.sleep)  # 100 tokens/s

    async def go() -> None:
        async with limiter.slot(40, 60) as slot:  # 100 reserved: the whole bucket
            assert clock.now == 0
            slot.settle(30)  # the call used 30: 70 come back
        async with limiter.slot(40, 30) as slot:  # fits in the 70 refunded
            assert clock.now == 0
            slot.settle(70)  # used all it reserved: the bucket is empty
        async with limiter.slot(40, 60):  # nothing left: waits for 100 tokens
            assert clock.now == pytest.approx(1.0)

    asyncio.run(go())
    assert limiter.waited_s == pytest.approx(1.0)


def test_failed_call_refunds_the_output_allowance() -> None:
    clock = FakeClock()
    limiter = RateLimiter(concurrency=8, tpm=6000, clock=clock, sleep=clock.sleep)

    async def go() -> None:
        with pytest.raises(RuntimeError):
            async with limiter.slot(20, 80):
                raise RuntimeError("server error")
        assert limiter.tpm.level == pytest.approx(80)  # only the prompt estimate stays spent

    asyncio.run(go())


def test_pause_holds_every_request_back() -> None:
    clock = FakeClock()
    limiter = RateLimiter(concurrency=8, clock=clock, sleep=clock.sleep)

    async def go() -> None:
        async with limiter.slot():
            assert clock.now == 0
        limiter.pause(2.5)
        async with limiter.slot():
            assert clock.now == pytest.approx(2.5)
        async with limiter.slot():
            assert clock.now == pytest.approx(2.5)  # the pause is over

    asyncio.run(go())


def test_concurrency_is_bounded_and_works_across_event_loops() -> None:
    limiter = RateLimiter(concurrency=3)
    state = {"now": 0, "max": 0}

    async def job() -> None:
        async with limiter.slot():
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
            await asyncio.sleep(0.01)
            state["now"] -= 1

    async def go() -> None:
        await asyncio.gather(*(job() for _ in range(12)))

    asyncio.run(go())
    asyncio.run(go())  # a second loop gets its own semaphore
    assert state["max"] == 3


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        RateLimiter(concurrency=0)
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(-5)


def test_token_estimates() -> None:
    assert estimate_tokens("") == 0 and estimate_tokens("abcd") == 1 and estimate_tokens("abcde") == 2
    assert estimate_input_tokens([{"role": "user", "content": "x" * 40}]) == 10 + 4


def test_oracle_rpm_keeps_the_server_side_rate(fake_llm_server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    # 300 a minute: a burst of 5, then one every 0.2 s, whatever the concurrency allows.
    oracle = OpenAIOracle("gpt-4o-mini", base_url=fake_llm_server.openai_url, concurrency=16, rpm=300, timeout=5)

    async def go() -> None:
        await asyncio.gather(*(oracle.agenerate(make_request(i)) for i in range(10)))
        await oracle.aclose()

    started = time.monotonic()
    asyncio.run(go())
    arrivals = sorted(r.started for r in fake_llm_server.requests)
    assert len(arrivals) == 10
    for k in range(5, 10):  # the k-th request cannot leave before (k - 4) * 0.2 s
        assert arrivals[k] - started >= (k - 4) * 0.2
