"""The client-side token bucket and the adaptive in-flight limit (on a fake clock)."""

from __future__ import annotations

import asyncio

from connector.semarize.retry import AdaptiveLimit, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_no_ceiling_and_no_429_means_no_limit() -> None:
    clock = Clock()
    bucket = TokenBucket(0, clock=clock)

    async def burst() -> None:
        for _ in range(10_000):
            await bucket.acquire()

    asyncio.run(asyncio.wait_for(burst(), 1))
    assert bucket.rate == 0


def test_the_ceiling_holds_over_a_second() -> None:
    clock = Clock()
    bucket = TokenBucket(10, clock=clock)
    sent = 0

    async def run() -> None:
        nonlocal sent
        original_sleep = asyncio.sleep

        async def fake_sleep(seconds: float) -> None:
            clock.now += seconds
            await original_sleep(0)

        asyncio.sleep = fake_sleep  # type: ignore[assignment]
        try:
            start = clock.now
            while clock.now - start < 5:
                await bucket.acquire()
                sent += 1
        finally:
            asyncio.sleep = original_sleep

    asyncio.run(run())
    assert 45 <= sent <= 61  # 10/s for 5 s, plus at most one second's burst


def test_a_429_cuts_below_the_sent_rate_and_quiet_seconds_raise_it_to_the_ceiling() -> None:
    clock = Clock()
    bucket = TokenBucket(0, clock=clock)

    async def send(n: int, over: float) -> None:
        for _ in range(n):
            await bucket.acquire()
            clock.now += over / n

    asyncio.run(send(200, 2.0))  # 100 requests/s
    bucket.rate_limited()
    assert 75 <= bucket.rate <= 85
    first = bucket.rate
    bucket.rate_limited()  # the same burst: counts once
    assert bucket.rate == first
    clock.now += 1.5
    bucket.rate_limited()
    assert bucket.rate < first
    bucket.set_ceiling(50)
    assert bucket.rate <= 50


def test_adaptive_limit_decreases_on_429_and_recovers() -> None:
    clock = Clock()
    seen: list[int] = []
    limit = AdaptiveLimit(100, seen.append, clock=clock)
    limit.rate_limited()
    assert limit.limit == 75 and seen == [75]
    limit.rate_limited()  # within a second: once
    assert limit.limit == 75
    clock.now += 2
    limit.rate_limited()
    assert limit.limit == 56
    for _ in range(5000):  # about one step per `limit` successes
        limit.succeeded()
    assert limit.limit == 100
    for _ in range(50):
        clock.now += 2
        limit.rate_limited()
    assert limit.limit == 1
