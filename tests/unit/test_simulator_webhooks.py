"""Webhook delivery: signing, envelope, retries, round-robin, duplicates, thin, drop, delay."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

from aiohttp import web

from connector.simulator.options import SimConfig
from tests.fixtures_simulator import SimClient, in_process, run_body

SECRET = "whsec_test_1"


@dataclass
class Delivery:
    headers: dict[str, str]
    raw: bytes
    at: float

    @property
    def event(self) -> dict[str, object]:
        parsed: dict[str, object] = json.loads(self.raw)
        return parsed


@dataclass
class Receiver:
    """An HTTP endpoint that records deliveries and answers from a script of statuses."""

    statuses: list[int] = field(default_factory=list)  # answers in order, then 200
    deliveries: list[Delivery] = field(default_factory=list)
    url: str = ""

    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.deliveries.append(
            Delivery(dict(request.headers), await request.read(), time.monotonic())
        )
        self.arrived.set()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)

    async def wait_for(self, count: int) -> list[Delivery]:
        """The deliveries once there are `count` of them (fails after 5 s)."""
        async with asyncio.timeout(5.0):
            while len(self.deliveries) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.deliveries


@asynccontextmanager
async def receiver(*statuses: int) -> AsyncIterator[Receiver]:
    rec = Receiver(list(statuses))
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{site.port}/hook"
    try:
        yield rec
    finally:
        await runner.cleanup()


Scenario = Callable[[SimClient, list[Receiver]], Awaitable[None]]


def run(
    scenario: Scenario, receivers: int = 1, statuses: tuple[int, ...] = (), **kw: object
) -> None:
    async def main() -> None:
        async with receiver(*statuses) as first, receiver() as second:
            recs = [first, second][:receivers]
            config = replace(
                SimConfig(seed=5, webhook_backoff_ms=50),
                webhook_url=tuple(r.url for r in recs),
                webhook_secret=SECRET,
                **kw,  # type: ignore[arg-type]
            )
            async with in_process(config) as client:
                await scenario(client, recs)

    asyncio.run(main())


def fixed(outcome: str = "succeeded", duration_ms: int = 0) -> dict[str, object]:
    return run_body(
        None,
        input={
            "transcript": "Rep: Any budget? Prospect: Yes.",
            "_sim": {"duration_ms": duration_ms, "outcome": outcome},
        },
    )


def verify(delivery: Delivery, secret: str = SECRET) -> None:
    """An independent check of Semarize-Signature (contract section 9)."""
    header = delivery.headers["Semarize-Signature"]
    parts = dict(part.split("=", 1) for part in header.split(","))
    timestamp = int(parts["t"])
    assert abs(time.time() - timestamp) <= 300
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + delivery.raw, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected)


def test_signed_event_with_the_run_detail() -> None:
    async def scenario(c: SimClient, recs: list[Receiver]) -> None:
        created = time.monotonic()
        run_id = (await c.create(fixed(duration_ms=100))).data["run_id"]
        (delivery,) = await recs[0].wait_for(1)
        assert delivery.at - created >= 0.09  # sent when the run became terminal
        verify(delivery)
        event = delivery.event
        assert re.fullmatch(r"evt_[0-9a-f]{24}", str(event["id"]))
        assert event["type"] == "run.succeeded"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(event["created_at"]))
        assert event["data"] == (await c.get_run(run_id)).data
        assert delivery.headers["Content-Type"] == "application/json"
        assert delivery.headers["Semarize-Event-Id"] == event["id"]
        assert delivery.headers["Semarize-Delivery-Id"]
        tampered = Delivery(delivery.headers, delivery.raw.replace(b"succeeded", b"failed"), 0)
        try:
            verify(tampered)
        except AssertionError:
            pass
        else:
            raise AssertionError("a changed body must not verify")
        await asyncio.sleep(0.1)
        stats = (await c.stats())["webhooks"]
        assert (stats["events"], stats["attempts"], stats["acknowledged"]) == (1, 1, 1)
        assert stats["pending"] == 0

    run(scenario)


def test_failed_and_cancelled_events() -> None:
    async def scenario(c: SimClient, recs: list[Receiver]) -> None:
        await c.create(fixed("failed"))
        await c.create(fixed("cancelled"))
        deliveries = await recs[0].wait_for(2)
        by_type = {str(d.event["type"]): d.event for d in deliveries}
        assert set(by_type) == {"run.failed", "run.cancelled"}
        failed = by_type["run.failed"]["data"]
        assert isinstance(failed, dict) and failed["error_code"] and "output" not in failed

    run(scenario)


def test_retries_until_acknowledged() -> None:
    async def scenario(c: SimClient, recs: list[Receiver]) -> None:
        await c.create(fixed())
        deliveries = await recs[0].wait_for(3)
        await asyncio.sleep(0.2)
        assert len(deliveries) == 3  # 500, 503, then 200: no fourth attempt
        assert len({d.headers["Semarize-Event-Id"] for d in deliveries}) == 1
        assert len({d.headers["Semarize-Delivery-Id"] for d in deliveries}) == 3
        assert {d.raw for d in deliveries} == {deliveries[0].raw}
        for d in deliveries:
            verify(d)
        gaps = [b.at - a.at for a, b in itertools.pairwise(deliveries)]
        assert gaps[0] >= 0.045 and gaps[1] >= 0.095  # 50 ms, then doubled
        stats = (await c.stats())["webhooks"]
        assert (stats["attempts"], stats["failed_attempts"], stats["acknowledged"]) == (3, 2, 1)

    run(scenario, statuses=(500, 503))


def test_gives_up_after_max_attempts() -> None:
    async def scenario(c: SimClient, recs: list[Receiver]) -> None:
        await c.create(fixed())
        await recs[0].wait_for(3)
        await asyncio.sleep(0.5)
        assert len(recs[0].deliveries) == 3
        stats = (await c.stats())["webhooks"]
        assert (stats["gave_up"], stats["acknowledged"], stats["pending"]) == (1, 0, 0)

    run(scenario, statuses=(500,) * 10, webhook_max_attempts=3)


def test_unreachable_endpoint_is_retried() -> None:
    async def main() -> None:
        config = SimConfig(
            webhook_url=("http://127.0.0.1:9/hook",),
            webhook_secret=SECRET,
            webhook_backoff_ms=10,
            webhook_max_attempts=2,
        )
        async with in_process(config) as c:
            await c.create(fixed())
            for _ in range(200):
                stats = (await c.stats())["webhooks"]
                if stats["gave_up"]:
                    break
                await asyncio.sleep(0.02)
            assert (stats["attempts"], stats["failed_attempts"], stats["gave_up"]) == (2, 2, 1)

    asyncio.run(main())


def test_round_robin_across_urls() -> None:
    async def scenario(c: SimClient, recs: list[Receiver]) -> None:
        for _ in range(4):
            await c.create(fixed())
        for _ in range(200):
            if sum(len(r.deliveries) for r in recs) == 4:
                break
            await asyncio.sleep(0.02)
        assert [len(r.deliveries) for r in recs] == [2, 2]

    run(scenario, receivers=2)


def test_duplicates() -> None:
    async def scenario(c: SimClient, recs: list[Receiver]) -> None:
        await c.create(fixed())
        deliveries = await recs[0].wait_for(2)
        assert (
            deliveries[0].headers["Semarize-Event-Id"] == deliveries[1].headers["Semarize-Event-Id"]
        )
        assert (
            deliveries[0].headers["Semarize-Delivery-Id"]
            != deliveries[1].headers["Semarize-Delivery-Id"]
        )
        assert deliveries[0].raw == deliveries[1].raw
        assert (await c.stats())["webhooks"]["duplicated"] == 1

    run(scenario, webhook_duplicate_rate=1.0)


def test_thin_events() -> None:
    async def scenario(c: SimClient, recs: list[Receiver]) -> None:
        run_id = (await c.create(fixed())).data["run_id"]
        (delivery,) = await recs[0].wait_for(1)
        verify(delivery)
        data = delivery.event["data"]
        assert isinstance(data, dict) and "output" not in data
        assert data["run_id"] == run_id and data["status"] == "succeeded"
        assert delivery.event["type"] == "run.succeeded"
        assert "output" in (await c.get_run(run_id)).data  # the run itself keeps its output
        assert (await c.stats())["webhooks"]["thin"] == 1

    run(scenario, webhook_thin_rate=1.0)


def test_dropped_events() -> None:
    async def scenario(c: SimClient, recs: list[Receiver]) -> None:
        await c.create(fixed())
        await asyncio.sleep(0.3)
        assert recs[0].deliveries == []
        stats = (await c.stats())["webhooks"]
        assert (stats["events"], stats["dropped"], stats["attempts"]) == (1, 1, 0)

    run(scenario, webhook_drop_rate=1.0)


def test_delay_before_delivery() -> None:
    async def scenario(c: SimClient, recs: list[Receiver]) -> None:
        created = time.monotonic()
        await c.create(fixed())
        (delivery,) = await recs[0].wait_for(1)
        assert delivery.at - created >= 0.3

    run(scenario, webhook_delay_ms=(300, 300))


def test_webhook_faults_through_the_control_plane() -> None:
    async def scenario(c: SimClient, recs: list[Receiver]) -> None:
        reply = await c.faults(
            webhook_thin_rate=1, webhook_duplicate_rate=1, webhook_delay_ms="0:50"
        )
        assert reply.status == 200 and reply.data["webhook_secret"] == "***"
        await c.create(fixed())
        deliveries = await recs[0].wait_for(2)
        assert all("output" not in d.event["data"] for d in deliveries)  # type: ignore[operator]

    run(scenario)
