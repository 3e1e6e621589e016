"""Deterministic fault draws, the request-rate limit and the outage switch.

Every random choice of the simulator comes from `Dice`: a keyed hash of (seed, subject,
attempt, name), never from global random state. The subject is the request's
Idempotency-Key (or, without one, a hash of its body) or the run id; the attempt is how many
times that subject was seen. So the same traffic meets the same faults, run after run.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from connector.simulator.options import SimConfig

_TWO_64 = float(2**64)


class Dice:
    """Uniform draws in [0, 1) from a keyed BLAKE2b of (seed, subject, attempt, name)."""

    __slots__ = ("_key",)

    def __init__(self, seed: int) -> None:
        self._key = hashlib.sha256(b"semarize-sim-seed:%d" % seed).digest()

    def uniform(self, subject: str, attempt: int, name: str) -> float:
        data = f"{subject}\x00{attempt}\x00{name}".encode()
        digest = hashlib.blake2b(data, key=self._key, digest_size=8).digest()
        return int.from_bytes(digest, "big") / _TWO_64

    def pick(self, subject: str, attempt: int, name: str, low: int, high: int) -> int:
        """An integer in [low, high]."""
        if high <= low:
            return low
        return low + int(self.uniform(subject, attempt, name) * (high - low + 1))

    def hex(self, subject: str, name: str, length: int) -> str:
        data = f"{subject}\x00{name}".encode()
        return hashlib.blake2b(data, key=self._key, digest_size=(length + 1) // 2).hexdigest()[
            :length
        ]


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """What to do to one request; decided before the request does anything."""

    status: int = 0  # 429 or 5xx to answer instead of handling; 0 = handle the request
    slow_ms: int = 0  # delay before the response is sent
    reset: bool = False  # drop the connection mid-response
    reset_after_create: bool = False  # for POST /v1/runs: drop only after creating the run


NO_FAULT = FaultPlan()
_5XX = (500, 502, 503)


def plan_request(config: SimConfig, dice: Dice, subject: str, attempt: int) -> FaultPlan:
    """The faults a request meets (429 and 5xx exclude each other and a reset)."""
    if not (config.rate_429 or config.rate_5xx or config.reset_rate or config.slow_rate):
        return NO_FAULT
    status = 0
    reset = after = False
    if config.rate_429 and dice.uniform(subject, attempt, "rate_429") < config.rate_429:
        status = 429
    elif config.rate_5xx and dice.uniform(subject, attempt, "rate_5xx") < config.rate_5xx:
        status = _5XX[dice.pick(subject, attempt, "5xx_status", 0, 2)]
    elif config.reset_rate and dice.uniform(subject, attempt, "reset") < config.reset_rate:
        reset = True
        after = dice.uniform(subject, attempt, "reset_after_create") < 0.5
    slow_ms = 0
    if config.slow_rate and dice.uniform(subject, attempt, "slow") < config.slow_rate:
        slow_ms = dice.pick(subject, attempt, "slow_ms", *config.slow_ms)
    return FaultPlan(status=status, slow_ms=slow_ms, reset=reset, reset_after_create=after)


class TokenBucket:
    """A hard request-rate limit: `rate` tokens per second, bursts up to one second's worth."""

    __slots__ = ("_capacity", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, now: float) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._stamp = now

    @property
    def rate(self) -> float:
        return self._rate

    def take(self, now: float) -> int:
        """0 when a token was taken, else whole seconds until one is available (at least 1)."""
        tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return 0
        self._tokens = tokens
        return max(1, math.ceil((1.0 - tokens) / self._rate))


class Outage:
    """The outage switch. `503` is checked lazily per request; `refuse` closes the listener.

    The listener hooks are set by the server (`attach`); without them (tests driving the
    app directly) a refusing outage drops each connection that sends a request instead.
    """

    __slots__ = ("_close", "_loop", "_open", "_task", "_timer", "mode", "until")

    def __init__(self) -> None:
        self.mode: str | None = None
        self.until = 0.0
        self._close: Callable[[], None] | None = None
        self._open: Callable[[], Coroutine[Any, Any, None]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(
        self, close: Callable[[], None], reopen: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        self._close, self._open = close, reopen

    def active(self, now: float) -> str | None:
        if self.mode is not None and now >= self.until and self._timer is None:
            self.mode = None
        return self.mode

    def remaining(self, now: float) -> float:
        return max(0.0, self.until - now) if self.active(now) else 0.0

    def start(self, mode: str | None, seconds: float, now: float) -> None:
        """Begin an outage of `seconds` (replacing any current one); `mode=None` ends it."""
        self._loop = asyncio.get_running_loop()
        was_refusing = self.mode == "refuse" and self._timer is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if mode is None or seconds <= 0:
            self.mode = None
            if was_refusing:
                self._reopen()
            return
        self.mode, self.until = mode, now + seconds
        if mode == "refuse":
            if not was_refusing and self._close is not None:
                self._close()
            self._timer = self._loop.call_later(seconds, self._end_refusal)
        elif was_refusing:
            self._reopen()

    def _end_refusal(self) -> None:
        self._timer = None
        self.mode = None
        self._reopen()

    def _reopen(self) -> None:
        if self._open is not None and self._loop is not None:
            self._task = self._loop.create_task(self._open())

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.mode = None
        if self._task is not None:
            await self._task
