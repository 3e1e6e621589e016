"""Retry policy, in one place: backoff, Retry-After, the circuit breaker and the halt.

- `Backoff`: capped exponential backoff with full jitter, never sooner than the delay the
  API asked for.
- `parse_retry_after`: integer seconds or an HTTP date (semarize-api.md section 9).
- `ApiGate`: whether the pipeline may call the API now. It owns the circuit breaker (opens
  when retryable failures dominate a sliding window, half-open probes, closes on success)
  and the halt (bad credentials or configuration: create nothing until a probe succeeds).
  It also keeps the "healthy clock": time that passes while the API is down or the
  connector is halted does not count against record budgets and deadlines.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import logging
import random
import time
from collections import deque
from collections.abc import Callable

from connector import metrics
from connector.semarize.errors import HaltError

log = logging.getLogger("connector.semarize.retry")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        current = time.time() if now is None else now
        return max(0.0, when.timestamp() - current)
    return float(seconds) if seconds >= 0 else None


class Backoff:
    """Capped exponential backoff with full jitter; `retry_after` is a floor."""

    def __init__(
        self, *, initial: float, maximum: float, rng: Callable[[], float] = random.random
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self._rng = rng

    def spread(self, value: float, fraction: float = 0.1) -> float:
        """`value` within +/- `fraction`: polls of runs created together drift apart."""
        return value * (1.0 - fraction + 2.0 * fraction * self._rng())

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Delay before retry number `attempt` (1 = the first retry)."""
        cap = min(self.maximum, self.initial * 2.0 ** min(attempt - 1, 30))
        delay = self._rng() * cap
        if retry_after is not None:
            delay = max(delay, min(retry_after, 3600.0))
        return delay


class CircuitState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class ApiGate:
    """The API's health as the pipeline sees it: circuit breaker + halt + healthy clock."""

    def __init__(
        self,
        *,
        window_seconds: float = 30.0,
        min_requests: int = 20,
        failure_ratio: float = 0.5,
        open_seconds: float = 5.0,
        max_open_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window_seconds = window_seconds
        self._min_requests = min_requests
        self._failure_ratio = failure_ratio
        self._base_open = open_seconds
        self._max_open = max_open_seconds
        self._open_for = open_seconds
        self._clock = clock
        self._outcomes: deque[tuple[float, bool]] = deque()
        self._failures = 0
        self.state = CircuitState.CLOSED
        self._opened_at = 0.0
        self._probe_in_flight = False
        self.halt_error: HaltError | None = None
        # The halt probe sees only credentials and the Kit; a halt about something else (the
        # mode, a 403 on runs alone) shows only on a create. So a passed probe lets one
        # create through as a trial, and only its answer lifts the halt: no flood of
        # refused creates, no new "halted" line every probe.
        self._trial_open = False
        self._trial_taken = False
        self._create_waiters = 0
        self._changed = asyncio.Event()
        self._unhealthy_since: float | None = None
        self._unhealthy_total = 0.0
        self.listeners: list[Callable[[], None]] = []
        metrics.CIRCUIT_STATE.set(0)

    # --- the healthy clock ---------------------------------------------------------------
    def healthy_clock(self) -> float:
        """Monotonic seconds, not counting time spent open or halted."""
        now = self._clock()
        paused = self._unhealthy_total
        if self._unhealthy_since is not None:
            paused += now - self._unhealthy_since
        return now - paused

    @property
    def healthy(self) -> bool:
        return self.state is CircuitState.CLOSED and self.halt_error is None

    @property
    def blocks_consumption(self) -> bool:
        return not self.healthy

    def _update_health_clock(self) -> None:
        now = self._clock()
        if self.healthy and self._unhealthy_since is not None:
            self._unhealthy_total += now - self._unhealthy_since
            self._unhealthy_since = None
        elif not self.healthy and self._unhealthy_since is None:
            self._unhealthy_since = now

    def _wake(self) -> None:
        """Wake every waiter of `wait_until_usable` to look again."""
        self._changed.set()
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        self._update_health_clock()
        metrics.CIRCUIT_STATE.set(int(self.state))
        self._wake()
        for listener in self.listeners:
            listener()

    # --- outcomes ----------------------------------------------------------------------
    def record_success(self) -> None:
        self._record(ok=True)
        # While open, a success is the late answer to a request sent before the circuit
        # opened: only the half-open probe may close it.
        if self.state is CircuitState.HALF_OPEN:
            log.info("API answering again: circuit closed")
            self.state = CircuitState.CLOSED
            self._open_for = self._base_open
            self._probe_in_flight = False
            self._outcomes.clear()
            self._failures = 0
            self._notify()

    def record_failure(self) -> None:
        """A retryable failure (429, 5xx, timeout, connection)."""
        self._record(ok=False)
        now = self._clock()
        if self.state is CircuitState.HALF_OPEN:
            self._open(now, longer=True)
        elif (
            self.state is CircuitState.CLOSED
            and len(self._outcomes) >= self._min_requests
            and self._failures >= self._failure_ratio * len(self._outcomes)
        ):
            self._open(now, longer=False)

    def _record(self, *, ok: bool) -> None:
        now = self._clock()
        outcomes = self._outcomes
        outcomes.append((now, ok))
        if not ok:
            self._failures += 1
        horizon = now - self._window_seconds
        while outcomes and outcomes[0][0] < horizon:
            _, was_ok = outcomes.popleft()
            if not was_ok:
                self._failures -= 1

    def _open(self, now: float, *, longer: bool) -> None:
        if longer:
            self._open_for = min(self._max_open, self._open_for * 2)
        if self.state is not CircuitState.OPEN:
            log.warning(
                "API failing: circuit open, consumption paused",
                extra={"open_seconds": round(self._open_for, 1)},
            )
        self.state = CircuitState.OPEN
        self._opened_at = now
        self._probe_in_flight = False
        self._notify()

    # --- halt --------------------------------------------------------------------------
    def halt(self, error: HaltError) -> None:
        if self._trial_taken:
            # The trial create was refused again: stay halted, quietly (one line per halt).
            log.info(
                "still halted: the trial create was refused (%s)",
                error.error_code or f"HTTP {error.status}",
            )
            self._trial_open = self._trial_taken = False
            return
        if self.halt_error is None:
            log.error(
                "halted: the API refused the connector's %s (%s); creating nothing until it "
                "is fixed",
                "credentials" if error.status in (401, 403) else "configuration",
                error.error_code or f"HTTP {error.status}",
                extra={"error_code": error.error_code, "http_status": error.status},
            )
            self.halt_error = error
            self._notify()

    def resume(self) -> None:
        """The halt probe passed. With creates waiting, one of them goes first as a trial
        (`create_answered` lifts the halt); with none waiting, the halt is lifted now."""
        if self.halt_error is None:
            return
        if self._create_waiters == 0 and not self._trial_taken:
            self._lift()
            return
        # A trial taken a whole probe interval ago with no verdict (its record revoked):
        # let another create try.
        self._trial_open, self._trial_taken = True, False
        self._wake()

    def create_answered(self) -> None:
        """A create got an answer other than a halt (a run, a rejection, a retryable
        error): whatever the halt was about is fixed."""
        if self._trial_taken:
            self._lift()

    def _lift(self) -> None:
        log.info("halt lifted: the API accepts the connector's requests again")
        self.halt_error = None
        self._trial_open = self._trial_taken = False
        self._notify()

    # --- waiting -----------------------------------------------------------------------
    async def wait_until_usable(self, *, create: bool = False) -> None:
        """Return when a request may be sent: not halted, circuit closed or probing. A
        create may also go as the trial of a halt the probe found fixed."""
        if create:
            self._create_waiters += 1
        try:
            await self._wait_until_usable(create)
        finally:
            if create:
                self._create_waiters -= 1

    async def _wait_until_usable(self, create: bool) -> None:
        while True:
            trial_free = self._trial_open and not self._trial_taken
            if self.halt_error is not None and create and trial_free:
                self._trial_taken = True
                return
            if self.halt_error is None:
                if self.state is CircuitState.CLOSED:
                    return
                now = self._clock()
                if self.state is CircuitState.OPEN and now - self._opened_at >= self._open_for:
                    self.state = CircuitState.HALF_OPEN
                    self._notify()
                if self.state is CircuitState.HALF_OPEN and not self._probe_in_flight:
                    self._probe_in_flight = True
                    return
            changed = self._changed
            timeout = None
            if self.halt_error is None and self.state is CircuitState.OPEN:
                timeout = max(0.01, self._opened_at + self._open_for - self._clock())
            elif self.state is CircuitState.HALF_OPEN:
                timeout = self._open_for
            try:
                await asyncio.wait_for(changed.wait(), timeout)
            except TimeoutError:
                if self.state is CircuitState.HALF_OPEN:
                    self._probe_in_flight = False  # the probe never reported: allow another

    def take_idle_probe(self) -> bool:
        """The half-open probe, for a request from outside the pipeline (`Connector`): the
        circuit is open, its time is up, and no create waits to be the probe. While open,
        consumption is paused, so once the records in flight have finished nothing else
        would ever probe, and the circuit would stay open for good."""
        if self.halt_error is not None or self.state is CircuitState.CLOSED:
            return False
        if self._create_waiters:
            return False  # a create will probe, with a real record
        if self.state is CircuitState.OPEN and self._clock() - self._opened_at >= self._open_for:
            self.state = CircuitState.HALF_OPEN
            self._notify()
        if self.state is CircuitState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def probe_finished(self) -> None:
        """A half-open probe ended without a verdict (e.g. the record was rejected)."""
        self._probe_in_flight = False


class RateLimitSignal:
    """How many recent API answers were 429s: the signal both adaptive limits act on.

    A 429 now and then (a noisy neighbour, a provider hiccup) is noise; the limits move only
    while 429s are more than `threshold` of the answers of the last `window` seconds.
    """

    def __init__(
        self,
        *,
        window: float = 5.0,
        threshold: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window = window
        self._threshold = threshold
        self._clock = clock
        self._answers: deque[tuple[float, bool]] = deque()
        self._limited = 0
        self.peak_accepted_rate = 0.0

    def record(self, limited: bool) -> None:
        now = self._clock()
        self._answers.append((now, limited))
        self._limited += limited
        self._expire(now)

    def _expire(self, now: float) -> None:
        answers = self._answers
        while answers and answers[0][0] < now - self._window:
            _, limited = answers.popleft()
            self._limited -= limited

    def overloaded(self) -> bool:
        self._expire(self._clock())
        total = len(self._answers)
        return total >= 10 and self._limited > self._threshold * total

    def accepted_rate(self) -> float:
        """Answers other than 429 per second over the window."""
        self._expire(self._clock())
        rate = (len(self._answers) - self._limited) / self._window
        self.peak_accepted_rate = max(self.peak_accepted_rate, rate)
        return rate


class TokenBucket:
    """Client-side request rate limit (creates and polls alike), adaptive.

    `rate_limit.requests_per_second` is the ceiling (0: none). While 429s dominate (see
    `RateLimitSignal`), each second the rate drops to 90 % of what the API accepted, never
    below a quarter of the best accepted rate seen (random 429s must not starve the
    pipeline); each second without 429s raises it by 5 %, up to the ceiling. With no ceiling
    and no sustained 429s, requests are not limited at all.
    """

    def __init__(
        self,
        ceiling: float,
        *,
        signal: RateLimitSignal | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._signal = signal or RateLimitSignal(clock=clock)
        self._tokens = 0.0
        self._updated = clock()
        self._last_cut = -1e9
        self._last_raise = clock()
        self.ceiling = 0.0
        self.rate = 0.0
        self.set_ceiling(ceiling)

    def set_ceiling(self, ceiling: float) -> None:
        """A new ceiling (a bigger or smaller group share). A rate at the old ceiling moves
        with it; a rate cut by 429s stays cut, capped by the new ceiling."""
        at_ceiling = self.rate >= self.ceiling - 1e-9
        self.ceiling = max(0.0, ceiling)
        if self.ceiling and (not self.rate or self.rate > self.ceiling or at_ceiling):
            self._set_rate(self.ceiling)

    def _set_rate(self, rate: float) -> None:
        self._refill()
        self.rate = rate
        # A burst of one second's worth at most, so the rate holds over any second.
        self._capacity = max(1.0, rate)
        self._tokens = min(self._tokens, self._capacity)
        metrics.RATE_LIMIT.set(rate)

    def _refill(self) -> None:
        now = self._clock()
        if self.rate:
            self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def rate_limited(self) -> None:
        """The API answered 429: slow down to below what it accepts, if 429s dominate."""
        now = self._clock()
        if now - self._last_cut < 1.0 or not self._signal.overloaded():
            return
        self._last_cut = self._last_raise = now
        accepted = self._signal.accepted_rate()
        floor = max(1.0, self._signal.peak_accepted_rate / 4)
        target = max(floor, accepted * 0.9)
        self._set_rate(min(self.rate, target) if self.rate else target)

    async def acquire(self) -> None:
        while self.rate:
            now = self._clock()
            if now - self._last_raise >= 1.0 and now - self._last_cut >= 1.0:
                self._last_raise = now
                raised = self.rate * 1.05
                self._set_rate(min(raised, self.ceiling) if self.ceiling else raised)
            self._refill()
            if self._tokens >= 1 - 1e-9:  # float sums of fractions land just below 1
                self._tokens = max(0.0, self._tokens - 1)
                return
            await asyncio.sleep(max(0.001, (1 - self._tokens) / self.rate))


class AdaptiveLimit:
    """AIMD limit on records in flight, between 1 and the configured maximum.

    Decreases (multiplicative, at most once every two seconds):
    - while 429s dominate (see `RateLimitSignal`): x0.8, or x0.5 when the API asks for a
      `Retry-After` of `long_retry_after` seconds or more (it is not coping at all);
    - while create latency climbs: the recent average (EWMA) above both 4x the best seen
      and the best + 1 s means the API is queueing our work: x0.9. The margins keep the
      connector's own scheduling noise (milliseconds) out of it.
    Otherwise an additive increase of about one per `limit` successful creates.
    """

    def __init__(
        self,
        maximum: int,
        on_change: Callable[[int], None],
        *,
        signal: RateLimitSignal | None = None,
        clock: Callable[[], float] = time.monotonic,
        long_retry_after: float = 10.0,
    ) -> None:
        self.maximum = maximum
        self._value = float(maximum)
        self._on_change = on_change
        self._signal = signal or RateLimitSignal(clock=clock)
        self._clock = clock
        self._last_decrease = -1e9
        self._long_retry_after = long_retry_after
        self._latency_ewma: float | None = None
        self._latency_best: float | None = None

    @property
    def limit(self) -> int:
        return max(1, int(self._value))

    def rate_limited(self, retry_after: float | None = None) -> None:
        if not self._signal.overloaded():
            return
        long_wait = retry_after is not None and retry_after >= self._long_retry_after
        self._decrease(0.5 if long_wait else 0.8)

    def succeeded(self, latency: float | None = None) -> None:
        if latency is not None and self._latency_climbing(latency):
            self._decrease(0.9)
        elif self._value < self.maximum:
            self._set(min(float(self.maximum), self._value + 1.0 / self._value))

    def _latency_climbing(self, latency: float) -> bool:
        best = latency if self._latency_best is None else min(self._latency_best, latency)
        ewma = latency if self._latency_ewma is None else self._latency_ewma * 0.9 + latency * 0.1
        self._latency_best, self._latency_ewma = best, ewma
        return ewma > max(4.0 * best, best + 1.0)

    def _decrease(self, factor: float) -> None:
        now = self._clock()
        if now - self._last_decrease < 2.0:
            return
        self._last_decrease = now
        self._set(max(1.0, self._value * factor))

    def _set(self, value: float) -> None:
        before = self.limit
        self._value = value
        if self.limit != before:
            metrics.CONCURRENCY_LIMIT.set(self.limit)
            self._on_change(self.limit)
