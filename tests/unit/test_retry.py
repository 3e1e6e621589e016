"""Retry policy: Retry-After, backoff, the circuit breaker, the halt and the healthy clock."""

from __future__ import annotations

import asyncio
import email.utils

import pytest

from connector import metrics
from connector.semarize.errors import ConfigurationRejected, CredentialsRejected
from connector.semarize.retry import ApiGate, Backoff, CircuitState, parse_retry_after


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def circuit_metric() -> float | None:
    return metrics.REGISTRY.get_sample_value("semarize_connector_circuit_state")


# --- Retry-After -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("10", 10.0),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-1", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 30, usegmt=True)  # "Tue, 14 Nov 2023 22:13:50 GMT"
    assert header.endswith("GMT")
    assert parse_retry_after(header, now=now) == pytest.approx(30.0)
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now=now) == pytest.approx(30.0)


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0


def test_retry_after_http_date_uses_the_wall_clock_by_default() -> None:
    import time

    header = email.utils.formatdate(time.time() + 120, usegmt=True)
    delay = parse_retry_after(header)
    assert delay is not None
    assert 115 <= delay <= 121


def test_retry_after_unreadable_date() -> None:
    assert parse_retry_after("Tue, 99 Foo 2023 25:61:00 GMT") is None


# --- Backoff ---------------------------------------------------------------------------------


def test_backoff_cap_grows_exponentially_then_stops() -> None:
    top = Backoff(initial=0.5, maximum=10.0, rng=lambda: 1.0)
    assert [top.delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert top.delay(10_000) == 10.0  # no overflow for huge attempt numbers


def test_backoff_has_full_jitter() -> None:
    values = iter([0.0, 0.25, 0.999])
    backoff = Backoff(initial=1.0, maximum=60.0, rng=lambda: next(values))
    assert backoff.delay(4) == 0.0
    assert backoff.delay(4) == 2.0
    assert backoff.delay(4) == pytest.approx(7.992)


def test_backoff_with_the_real_rng_stays_within_the_cap() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0)
    delays = [backoff.delay(3) for _ in range(500)]
    assert all(0 <= d <= 4.0 for d in delays)
    assert len(set(delays)) > 100  # jittered, not constant


def test_retry_after_is_a_floor() -> None:
    backoff = Backoff(initial=1.0, maximum=10.0, rng=lambda: 0.0)
    assert backoff.delay(1, retry_after=7.0) == 7.0
    assert backoff.delay(1, retry_after=30.0) == 30.0  # above the cap: the API decides
    assert backoff.delay(1, retry_after=0.0) == 0.0
    high = Backoff(initial=1.0, maximum=10.0, rng=lambda: 1.0)
    assert high.delay(5, retry_after=2.0) == 10.0  # jitter above the floor is kept


def test_retry_after_floor_is_bounded() -> None:
    backoff = Backoff(initial=1.0, maximum=10.0, rng=lambda: 0.0)
    assert backoff.delay(1, retry_after=1e9) == 3600.0


# --- ApiGate: circuit breaker ----------------------------------------------------------------


def gate(clock: FakeClock, **options: float) -> ApiGate:
    settings: dict[str, float] = {
        "window_seconds": 30.0,
        "min_requests": 20,
        "failure_ratio": 0.5,
        "open_seconds": 5.0,
        "max_open_seconds": 60.0,
    }
    settings.update(options)
    return ApiGate(
        window_seconds=settings["window_seconds"],
        min_requests=int(settings["min_requests"]),
        failure_ratio=settings["failure_ratio"],
        open_seconds=settings["open_seconds"],
        max_open_seconds=settings["max_open_seconds"],
        clock=clock,
    )


def test_circuit_stays_closed_below_min_requests() -> None:
    g = gate(FakeClock())
    for _ in range(19):
        g.record_failure()
    assert g.state is CircuitState.CLOSED
    assert g.healthy
    g.record_failure()
    assert g.state is CircuitState.OPEN
    assert not g.healthy
    assert g.blocks_consumption
    assert circuit_metric() == 2


def test_circuit_opens_when_failures_dominate_the_window() -> None:
    g = gate(FakeClock())
    for _ in range(10):
        g.record_success()
    for _ in range(9):
        g.record_failure()
    assert g.state is CircuitState.CLOSED  # 9 of 19
    g.record_failure()
    assert g.state is CircuitState.OPEN  # 10 of 20: half


def test_circuit_stays_closed_when_successes_dominate() -> None:
    g = gate(FakeClock())
    for _ in range(30):
        g.record_success()
    for _ in range(29):
        g.record_failure()
    assert g.state is CircuitState.CLOSED  # 29 of 59
    assert circuit_metric() == 0


def test_old_failures_leave_the_window() -> None:
    clock = FakeClock()
    g = gate(clock)
    for _ in range(19):
        g.record_failure()
    clock.advance(31)
    g.record_failure()
    assert g.state is CircuitState.CLOSED  # only 1 failure in the window now
    for _ in range(18):
        g.record_failure()
    assert g.state is CircuitState.CLOSED
    g.record_failure()
    assert g.state is CircuitState.OPEN


def open_gate(clock: FakeClock, **options: float) -> ApiGate:
    g = gate(clock, **options)
    for _ in range(20):
        g.record_failure()
    assert g.state is CircuitState.OPEN
    return g


async def returns_within(
    awaitable: asyncio.Future[None] | asyncio.Task[None], seconds: float
) -> bool:
    try:
        await asyncio.wait_for(asyncio.shield(awaitable), seconds)
    except TimeoutError:
        return False
    return True


async def blocked(g: ApiGate) -> bool:
    """True when wait_until_usable() does not return at once (the waiter is cancelled)."""
    waiter = asyncio.ensure_future(g.wait_until_usable())
    done = await returns_within(waiter, 0.05)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    return not done


def test_open_circuit_blocks_then_allows_one_probe() -> None:
    clock = FakeClock()

    async def scenario() -> None:
        g = open_gate(clock)
        assert await blocked(g)  # open: nothing goes through
        clock.advance(4.9)
        assert await blocked(g)
        clock.advance(0.1)
        await asyncio.wait_for(g.wait_until_usable(), 1.0)  # open_seconds passed: one probe
        assert g.state is CircuitState.HALF_OPEN
        assert circuit_metric() == 1
        assert g.blocks_consumption
        second = asyncio.ensure_future(g.wait_until_usable())
        assert not await returns_within(second, 0.05)  # only one probe at a time
        g.record_success()  # the probe worked: closed, everybody goes
        assert await returns_within(second, 1.0)
        assert g.state is CircuitState.CLOSED
        assert circuit_metric() == 0
        await asyncio.wait_for(g.wait_until_usable(), 1.0)

    asyncio.run(scenario())


def test_failed_probe_reopens_for_longer() -> None:
    clock = FakeClock()

    async def scenario() -> None:
        g = open_gate(clock)
        clock.advance(5.0)
        await asyncio.wait_for(g.wait_until_usable(), 1.0)
        assert g.state is CircuitState.HALF_OPEN
        g.record_failure()
        assert g.state is CircuitState.OPEN
        assert circuit_metric() == 2
        clock.advance(9.9)
        assert await blocked(g)  # now open for 10 s
        clock.advance(0.1)
        await asyncio.wait_for(g.wait_until_usable(), 1.0)
        assert g.state is CircuitState.HALF_OPEN

    asyncio.run(scenario())


def test_open_time_is_capped() -> None:
    clock = FakeClock()

    async def scenario() -> None:
        g = open_gate(clock, open_seconds=5.0, max_open_seconds=12.0)
        for wait in (5.0, 10.0, 12.0, 12.0):
            clock.advance(wait)
            await asyncio.wait_for(g.wait_until_usable(), 1.0)
            assert g.state is CircuitState.HALF_OPEN
            g.record_failure()

    asyncio.run(scenario())


def test_closing_resets_the_open_time_and_the_window() -> None:
    clock = FakeClock()

    async def scenario() -> None:
        g = open_gate(clock)
        clock.advance(5.0)
        await asyncio.wait_for(g.wait_until_usable(), 1.0)
        g.record_failure()  # open for 10 s
        clock.advance(10.0)
        await asyncio.wait_for(g.wait_until_usable(), 1.0)
        g.record_success()
        assert g.state is CircuitState.CLOSED
        for _ in range(19):
            g.record_failure()
        assert g.state is CircuitState.CLOSED  # the old failures were forgotten
        g.record_failure()
        assert g.state is CircuitState.OPEN
        clock.advance(5.0)  # back to the base open time
        await asyncio.wait_for(g.wait_until_usable(), 1.0)
        assert g.state is CircuitState.HALF_OPEN

    asyncio.run(scenario())


def test_probe_finished_lets_another_probe_through() -> None:
    clock = FakeClock()

    async def scenario() -> None:
        g = open_gate(clock)
        clock.advance(5.0)
        await asyncio.wait_for(g.wait_until_usable(), 1.0)
        g.probe_finished()
        await asyncio.wait_for(g.wait_until_usable(), 1.0)
        assert g.state is CircuitState.HALF_OPEN

    asyncio.run(scenario())


def test_closed_gate_does_not_wait() -> None:
    async def scenario() -> None:
        g = gate(FakeClock())
        await asyncio.wait_for(g.wait_until_usable(), 0.5)

    asyncio.run(scenario())


# --- ApiGate: halt ---------------------------------------------------------------------------


def test_halt_blocks_until_resume() -> None:
    async def scenario() -> None:
        g = gate(FakeClock())
        g.halt(CredentialsRejected("HTTP 401", status=401, error_code="invalid_api_key"))
        assert not g.healthy
        assert g.halt_error is not None
        waiter = asyncio.ensure_future(g.wait_until_usable())
        assert not await returns_within(waiter, 0.05)
        g.resume()
        assert await returns_within(waiter, 1.0)
        assert g.halt_error is None
        assert g.healthy

    asyncio.run(scenario())


def test_first_halt_error_is_kept() -> None:
    g = gate(FakeClock())
    first = CredentialsRejected("HTTP 401", status=401)
    g.halt(first)
    g.halt(ConfigurationRejected("HTTP 400", status=400))
    assert g.halt_error is first


def test_halt_wins_over_a_closed_circuit() -> None:
    clock = FakeClock()

    async def scenario() -> None:
        g = gate(clock)
        g.halt(ConfigurationRejected("HTTP 404", status=404, error_code="kit_not_found"))
        g.record_success()  # e.g. a poll answered: the halt stays
        waiter = asyncio.ensure_future(g.wait_until_usable())
        assert not await returns_within(waiter, 0.05)
        g.resume()
        assert await returns_within(waiter, 1.0)

    asyncio.run(scenario())


def test_listeners_hear_every_change() -> None:
    calls: list[str] = []
    g = gate(FakeClock())
    g.listeners.append(lambda: calls.append("changed"))
    g.halt(CredentialsRejected("x", status=401))
    g.resume()
    g.resume()  # not halted: no change
    assert calls == ["changed", "changed"]


# --- the healthy clock -----------------------------------------------------------------------


def test_healthy_clock_runs_while_closed() -> None:
    clock = FakeClock(500.0)
    g = gate(clock)
    start = g.healthy_clock()
    clock.advance(12.0)
    assert g.healthy_clock() - start == 12.0


def test_healthy_clock_does_not_advance_while_open() -> None:
    clock = FakeClock()

    async def scenario() -> None:
        g = gate(clock)
        clock.advance(3.0)
        start = g.healthy_clock()
        for _ in range(20):
            g.record_failure()
        assert g.state is CircuitState.OPEN
        clock.advance(4.0)
        assert g.healthy_clock() == start
        clock.advance(1.0)
        await asyncio.wait_for(g.wait_until_usable(), 1.0)  # half-open: still not healthy
        clock.advance(2.0)
        assert g.healthy_clock() == start
        g.record_success()
        clock.advance(6.0)
        assert g.healthy_clock() - start == 6.0

    asyncio.run(scenario())


def test_healthy_clock_does_not_advance_while_halted() -> None:
    clock = FakeClock()
    g = gate(clock)
    start = g.healthy_clock()
    clock.advance(1.0)
    g.halt(CredentialsRejected("x", status=401))
    clock.advance(100.0)
    assert g.healthy_clock() - start == 1.0
    g.resume()
    clock.advance(2.0)
    assert g.healthy_clock() - start == 3.0
    g.halt(CredentialsRejected("x", status=401))  # a second halt: paused time adds up
    clock.advance(50.0)
    g.resume()
    clock.advance(1.0)
    assert g.healthy_clock() - start == 4.0


def test_healthy_clock_pauses_once_for_overlapping_halt_and_open() -> None:
    clock = FakeClock()
    g = gate(clock)
    start = g.healthy_clock()
    g.halt(CredentialsRejected("x", status=401))
    for _ in range(20):
        g.record_failure()
    clock.advance(10.0)
    g.resume()  # still open
    clock.advance(10.0)
    assert g.healthy_clock() == start
    asyncio.run(g.wait_until_usable())  # the open period is over: half-open, one probe
    g.record_success()
    clock.advance(1.0)
    assert g.healthy_clock() - start == 1.0


def test_a_passed_probe_lets_one_create_through_as_a_trial(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        g = gate(FakeClock())
        refused = ConfigurationRejected("HTTP 422", status=422, error_code="invalid_run_mode")
        g.halt(refused)
        creates = [asyncio.ensure_future(g.wait_until_usable(create=True)) for _ in range(3)]
        poll = asyncio.ensure_future(g.wait_until_usable())
        await asyncio.sleep(0.01)
        g.resume()  # the probe (the Kit schema) passed: it cannot see the mode
        await asyncio.sleep(0.01)
        assert sum(c.done() for c in creates) == 1  # one trial, not a flood
        assert not poll.done()
        assert g.halt_error is refused
        g.halt(refused)  # the trial was refused again
        assert g.halt_error is refused
        await asyncio.sleep(0.01)
        assert sum(c.done() for c in creates) == 1  # no trial until the next probe
        g.resume()
        await asyncio.sleep(0.01)
        assert sum(c.done() for c in creates) == 2
        g.create_answered()  # the second trial got a run: the halt is over
        assert await returns_within(asyncio.gather(*creates, poll), 1.0)
        assert g.halt_error is None and g.healthy

    with caplog.at_level("INFO", logger="connector.semarize.retry"):
        asyncio.run(scenario())
    halted_lines = [r for r in caplog.records if r.getMessage().startswith("halted")]
    assert len(halted_lines) == 1  # one clear line for the whole halt


def test_a_trial_with_no_verdict_is_given_to_another_create_at_the_next_probe() -> None:
    async def scenario() -> None:
        g = gate(FakeClock())
        g.halt(CredentialsRejected("HTTP 403", status=403, error_code="forbidden"))
        first = asyncio.ensure_future(g.wait_until_usable(create=True))
        second = asyncio.ensure_future(g.wait_until_usable(create=True))
        await asyncio.sleep(0.01)
        g.resume()
        await asyncio.sleep(0.01)
        taker, other = (first, second) if first.done() else (second, first)
        assert taker.done() and not other.done()
        g.resume()  # a probe interval later, no verdict (its record was revoked)
        assert await returns_within(other, 1.0)
        assert g.halt_error is not None

    asyncio.run(scenario())


def test_a_probe_with_no_create_waiting_lifts_the_halt_at_once() -> None:
    async def scenario() -> None:
        g = gate(FakeClock())
        g.halt(CredentialsRejected("HTTP 401", status=401, error_code="invalid_api_key"))
        g.resume()  # halted at start-up, nothing consumed: nothing could try
        assert g.halt_error is None

    asyncio.run(scenario())


def test_an_open_circuit_with_nothing_waiting_is_probed_from_outside() -> None:
    clock = FakeClock()

    async def scenario() -> None:
        g = gate(clock)
        for _ in range(20):
            g.record_failure()
        assert g.state is CircuitState.OPEN
        assert not g.take_idle_probe()  # the open period is not over yet
        clock.advance(5.0)
        assert g.take_idle_probe()
        assert g.state is CircuitState.HALF_OPEN
        assert not g.take_idle_probe()  # one probe at a time
        g.record_failure()  # still down: open again, for longer
        assert g.state is CircuitState.OPEN
        clock.advance(5.0)
        assert not g.take_idle_probe()
        clock.advance(5.0)
        assert g.take_idle_probe()
        g.record_success()
        assert g.state is CircuitState.CLOSED and g.healthy

    asyncio.run(scenario())


def test_a_waiting_create_is_the_probe_not_the_idle_prober() -> None:
    clock = FakeClock()

    async def scenario() -> None:
        g = gate(clock)
        for _ in range(20):
            g.record_failure()
        waiter = asyncio.ensure_future(g.wait_until_usable(create=True))
        await asyncio.sleep(0.01)
        clock.advance(5.0)
        assert not g.take_idle_probe()
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert g.take_idle_probe()  # the create went away: someone must probe

    asyncio.run(scenario())
