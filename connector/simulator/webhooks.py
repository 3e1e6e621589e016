"""Webhook delivery of terminal run events, signed per the contract (section 9).

For a run created while webhook URLs are configured, one timer fires when the run reaches
its terminal state. The event `{"id", "type", "created_at", "data"}` is then POSTed with
`Semarize-Event-Id` (stable), `Semarize-Delivery-Id` (new per attempt) and
`Semarize-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.
Any 2xx within 10 s acknowledges; otherwise the attempt is retried after 1 s, 2 s, 4 s, ...
up to `webhook_max_attempts`. URLs are used round-robin, one per attempt. Faults (drop,
duplicate, delay, thin) are drawn from the seed and the run id.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
import orjson

from connector.simulator.faults import Dice
from connector.simulator.options import SimConfig
from connector.simulator.runs import Run, rfc3339

ATTEMPT_TIMEOUT_S = 10.0


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `Semarize-Signature` header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


@dataclass(slots=True)
class WebhookCounts:
    events: int = 0  # terminal events produced
    attempts: int = 0  # HTTP deliveries tried
    acknowledged: int = 0  # deliveries answered 2xx
    failed_attempts: int = 0  # non-2xx, timeout or connection error
    gave_up: int = 0  # deliveries that used every attempt
    dropped: int = 0  # events never delivered (drop fault)
    duplicated: int = 0  # events delivered twice (duplicate fault)
    thin: int = 0  # events sent without output


class Webhooks:
    """Schedules and delivers events; `config()` is read at each step, so faults apply now."""

    def __init__(self, dice: Dice, config: Callable[[], SimConfig]) -> None:
        self._dice = dice
        self._config = config
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._next_url = 0
        self.counts = WebhookCounts()

    def schedule(self, run: Run, now: float) -> None:
        """Arrange the run's terminal event (call once, when the run is created)."""
        loop = asyncio.get_running_loop()
        self._timers[run.run_id] = loop.call_later(max(0.0, run.ends - now), self._fire, run)

    def _fire(self, run: Run) -> None:
        self._timers.pop(run.run_id, None)
        config = self._config()
        if not config.webhook_url:
            return
        dice, rid = self._dice, run.run_id
        self.counts.events += 1
        if (
            config.webhook_drop_rate
            and dice.uniform(rid, 0, "webhook_drop") < config.webhook_drop_rate
        ):
            self.counts.dropped += 1
            return
        data = run.final()
        if (
            config.webhook_thin_rate
            and dice.uniform(rid, 0, "webhook_thin") < config.webhook_thin_rate
        ):
            data = {k: v for k, v in data.items() if k != "output"}
            self.counts.thin += 1
        event_id = "evt_" + dice.hex(rid, "event_id", 24)
        body = orjson.dumps(
            {
                "id": event_id,
                "type": f"run.{run.outcome}",
                "created_at": rfc3339(run.created_wall + run.duration_ms / 1000.0),
                "data": data,
            }
        )
        copies = 1
        if (
            config.webhook_duplicate_rate
            and dice.uniform(rid, 0, "webhook_duplicate") < config.webhook_duplicate_rate
        ):
            copies = 2
            self.counts.duplicated += 1
        for copy in range(copies):
            delay_ms = dice.pick(rid, copy, "webhook_delay_ms", *config.webhook_delay_ms)
            task = asyncio.get_running_loop().create_task(
                self._deliver(event_id, body, delay_ms / 1000.0)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, event_id: str, body: bytes, delay_s: float) -> None:
        if delay_s:
            await asyncio.sleep(delay_s)
        attempt = 0
        while True:
            config = self._config()
            if not config.webhook_url or not config.webhook_secret:
                return
            attempt += 1
            if await self._attempt(config, event_id, body):
                self.counts.acknowledged += 1
                return
            self.counts.failed_attempts += 1
            if attempt >= config.webhook_max_attempts:
                self.counts.gave_up += 1
                return
            await asyncio.sleep(config.webhook_backoff_ms / 1000.0 * 2 ** (attempt - 1))

    async def _attempt(self, config: SimConfig, event_id: str, body: bytes) -> bool:
        assert config.webhook_secret is not None
        urls = config.webhook_url
        url = urls[self._next_url % len(urls)]
        self._next_url += 1
        headers = {
            "Content-Type": "application/json",
            "Semarize-Event-Id": event_id,
            "Semarize-Delivery-Id": "dlv_" + uuid.uuid4().hex,
            "Semarize-Signature": sign(config.webhook_secret, int(time.time()), body),
        }
        self.counts.attempts += 1
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT_S)
            )
        try:
            async with self._session.post(url, data=body, headers=headers) as response:
                return 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = asdict(self.counts)
        out["pending"] = len(self._timers) + len(self._tasks)
        return out

    def clear(self) -> None:
        """Forget every scheduled event and delivery, and zero the counters."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        self.counts = WebhookCounts()

    async def close(self) -> None:
        tasks = list(self._tasks)
        self.clear()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
