"""The client-side token bucket and the adaptive in-flight limit (on a fake clock)."""

from __future__ import annotations

import asyncio

import pytest

from connector.semarize.retry import AdaptiveLimit, RateLimitSignal, TokenBucket


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


def feed(signal: RateLimitSignal, clock: Clock, answers: int, limited: int, over: float) -> None:
    """`answers` API answers spread over `over` seconds, the first `limited` of them 429s."""
    for i in range(answers):
        signal.record(i < limited)
        clock.now += over / answers


def test_sparse_429s_are_noise_and_change_nothing() -> None:
    clock = Clock()
    signal = RateLimitSignal(clock=clock)
    bucket = TokenBucket(0, signal=signal, clock=clock)
    seen: list[int] = []
    limit = AdaptiveLimit(100, seen.append, signal=signal, clock=clock)
    feed(signal, clock, 200, 10, 2.0)  # 5 % 429s
    bucket.rate_limited()
    limit.rate_limited()
    assert bucket.rate == 0 and limit.limit == 100 and seen == []


def test_dominant_429s_cut_the_rate_below_what_was_accepted_with_a_floor() -> None:
    clock = Clock()
    signal = RateLimitSignal(clock=clock)
    bucket = TokenBucket(0, signal=signal, clock=clock)
    feed(signal, clock, 500, 0, 5.0)  # 100 accepted/s: the peak
    assert signal.accepted_rate() == pytest.approx(100, abs=1)
    feed(signal, clock, 500, 250, 5.0)  # half of them 429s: 50 accepted/s
    bucket.rate_limited()
    assert bucket.rate == pytest.approx(45, abs=0.5)
    first = bucket.rate
    bucket.rate_limited()  # the same second: once
    assert bucket.rate == first
    for _ in range(20):  # the 429s never stop (random faults): the floor holds
        feed(signal, clock, 100, 100, 1.0)
        bucket.rate_limited()
    assert bucket.rate == pytest.approx(25, abs=0.5)  # a quarter of the peak
    bucket.set_ceiling(10)
    assert bucket.rate == 10


def test_quiet_seconds_raise_the_rate_up_to_the_ceiling() -> None:
    clock = Clock()
    signal = RateLimitSignal(clock=clock)
    bucket = TokenBucket(50, signal=signal, clock=clock)
    feed(signal, clock, 100, 50, 1.0)
    bucket.rate_limited()
    low = bucket.rate
    assert low < 50

    async def quiet_seconds() -> None:
        for _ in range(40):
            clock.now += 1.0
            bucket._tokens = 1.0
            await bucket.acquire()

    asyncio.run(quiet_seconds())
    assert bucket.rate == 50


def test_adaptive_limit_decreases_while_429s_dominate_and_recovers() -> None:
    clock = Clock()
    signal = RateLimitSignal(clock=clock)
    seen: list[int] = []
    limit = AdaptiveLimit(100, seen.append, signal=signal, clock=clock)
    feed(signal, clock, 100, 50, 1.0)
    limit.rate_limited()
    assert limit.limit == 80 and seen == [80]
    limit.rate_limited()  # within two seconds: once
    assert limit.limit == 80
    clock.now += 2
    feed(signal, clock, 100, 50, 1.0)
    limit.rate_limited()
    assert limit.limit == 64
    for _ in range(5000):  # about one step per `limit` successes
        limit.succeeded()
    assert limit.limit == 100
    for _ in range(60):
        clock.now += 2
        feed(signal, clock, 20, 20, 0.1)
        limit.rate_limited()
    assert limit.limit == 1


def test_a_long_retry_after_cuts_the_limit_harder() -> None:
    clock = Clock()
    signal = RateLimitSignal(clock=clock)
    limit = AdaptiveLimit(100, lambda _: None, signal=signal, clock=clock)
    feed(signal, clock, 100, 50, 1.0)
    limit.rate_limited(retry_after=1.0)
    assert limit.limit == 80
    clock.now += 2
    feed(signal, clock, 100, 50, 1.0)
    limit.rate_limited(retry_after=30.0)  # the API asks for half a minute: it is not coping
    assert limit.limit == 40


def test_climbing_create_latency_lowers_the_limit_and_recovery_raises_it() -> None:
    clock = Clock()
    seen: list[int] = []
    limit = AdaptiveLimit(100, seen.append, signal=RateLimitSignal(clock=clock), clock=clock)
    for _ in range(50):
        limit.succeeded(latency=0.02)
    assert limit.limit == 100 and seen == []
    for _ in range(20):  # the API starts queueing: creates take 3 s
        clock.now += 0.5
        limit.succeeded(latency=3.0)
    lowered = limit.limit
    assert lowered < 100
    assert lowered >= 100 * 0.9**6 - 1  # x0.9 at most once every two seconds
    for _ in range(200):
        clock.now += 0.05
        limit.succeeded(latency=0.02)
    assert limit.limit > lowered  # latency back to normal: additive increase again


def test_latency_noise_of_a_busy_process_changes_nothing() -> None:
    clock = Clock()
    seen: list[int] = []
    limit = AdaptiveLimit(100, seen.append, signal=RateLimitSignal(clock=clock), clock=clock)
    for i in range(500):
        clock.now += 0.01
        limit.succeeded(latency=0.005 if i % 2 else 0.4)  # event-loop lag, not the API
    assert seen == [] and limit.limit == 100
