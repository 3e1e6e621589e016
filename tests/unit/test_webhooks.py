"""Webhooks: the signature check, dedupe, the completion registry, the receiver, the tracker.

The receiver runs on aiohttp's TestServer inside `asyncio.run`; the tracker against a
scripted API (MockTransport) with short real delays.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from connector import metrics, webhooks
from connector.config import InputMapping
from connector.records import Decoder, RunRequest, SourceRecord
from connector.semarize.client import SemarizeClient
from connector.semarize.retry import ApiGate, Backoff
from connector.semarize.transport import MockTransport, Request, Response
from connector.simulator.webhooks import sign
from connector.tracker import DeadLettered, RunTracker, Succeeded, TrackerSettings
from connector.webhooks import (
    Completion,
    CompletionRegistry,
    SeenEvents,
    WebhookReceiver,
    completion_from_event,
    parse_completion,
    reader_config,
    verify_signature,
)

SECRET = "whsec_test_0123456789"
NOW = 1_700_000_000.0
BODY = b'{"id":"evt_1","type":"run.succeeded","data":{"run_id":"run_1"}}'


def mac(secret: str, t: int | str, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


# --- verify_signature --------------------------------------------------------------------------


def test_a_valid_signature_passes_and_matches_the_simulator() -> None:
    header = f"t={int(NOW)},v1={mac(SECRET, int(NOW), BODY)}"
    assert verify_signature(SECRET, header, BODY, NOW)
    assert verify_signature(SECRET, sign(SECRET, int(NOW), BODY), BODY, NOW)


def test_rotation_any_v1_matching_passes() -> None:
    t = int(NOW)
    old, new = mac("whsec_old", t, BODY), mac(SECRET, t, BODY)
    assert verify_signature(SECRET, f"t={t},v1={old},v1={new}", BODY, NOW)
    assert verify_signature(SECRET, f"t={t},v1={new},v1={old}", BODY, NOW)
    assert verify_signature("whsec_old", f"t={t},v1={new},v1={old}", BODY, NOW)
    assert not verify_signature("whsec_other", f"t={t},v1={new},v1={old}", BODY, NOW)
    # Unknown schemes are ignored, spaces and upper-case hex are tolerated.
    assert verify_signature(SECRET, f" t = {t} , v0=abc, v1 = {new.upper()} ", BODY, NOW)


def test_wrong_secret_or_changed_body_fails() -> None:
    t = int(NOW)
    assert not verify_signature(SECRET, f"t={t},v1={mac('whsec_wrong', t, BODY)}", BODY, NOW)
    assert not verify_signature(SECRET, f"t={t},v1={mac(SECRET, t, BODY)}", BODY + b" ", NOW)
    # The timestamp is signed too: moving it breaks the signature.
    assert not verify_signature(SECRET, f"t={t + 1},v1={mac(SECRET, t, BODY)}", BODY, NOW)


@pytest.mark.parametrize(
    ("offset", "ok"),
    [(0, True), (300, True), (-300, True), (301, False), (-301, False), (86400, False)],
)
def test_timestamp_tolerance(offset: int, ok: bool) -> None:
    t = int(NOW) + offset
    assert verify_signature(SECRET, f"t={t},v1={mac(SECRET, t, BODY)}", BODY, NOW) is ok


def test_tolerance_is_a_parameter() -> None:
    t = int(NOW) - 100
    header = f"t={t},v1={mac(SECRET, t, BODY)}"
    assert verify_signature(SECRET, header, BODY, NOW)
    assert not verify_signature(SECRET, header, BODY, NOW, tolerance=60)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        "v1=abc",  # no timestamp
        "t=1700000000",  # no signature
        "t=1700000000,v1=",
        "t=abc,v1=00",
        "t=-1700000000,v1=00",
        "t=1700000000.5,v1=00",
        "t=" + "9" * 5000 + ",v1=00",  # int() of it would raise
        "t=\uff11\uff17" + "\uff10" * 8 + ",v1=00",  # non-ASCII (full-width) digits
        "t=1700000000,t=1700000000,v1=00",  # two timestamps
        "t=1700000000,v1=\u00e9" + "0" * 63,  # non-ASCII signature
        "x" * 5000,
    ],
)
def test_malformed_headers_fail_without_raising(header: str | None) -> None:
    assert not verify_signature(SECRET, header, BODY, NOW)


def test_two_timestamps_fail_even_when_one_is_signed() -> None:
    t = int(NOW)
    header = f"t={t},t={t},v1={mac(SECRET, t, BODY)}"
    assert not verify_signature(SECRET, header, BODY, NOW)


def test_too_many_signatures_fail() -> None:
    t = int(NOW)
    good = mac(SECRET, t, BODY)
    assert not verify_signature(SECRET, f"t={t}," + ",".join([f"v1={good}"] * 17), BODY, NOW)
    assert verify_signature(SECRET, f"t={t}," + ",".join([f"v1={good}"] * 16), BODY, NOW)


def test_an_empty_secret_verifies_nothing() -> None:
    t = int(NOW)
    assert not verify_signature("", f"t={t},v1={mac('', t, BODY)}", BODY, NOW)


def test_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(webhooks.hmac, "compare_digest", spy)
    t = int(NOW)
    good = mac(SECRET, t, BODY)
    assert verify_signature(SECRET, f"t={t},v1={good},v1={'0' * 64}", BODY, NOW)
    # Every candidate is compared (no early exit), as bytes, with compare_digest only.
    assert len(calls) == 2
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)
    calls.clear()
    assert not verify_signature(SECRET, f"t={t},v1={'0' * 64}", BODY, NOW)
    assert len(calls) == 1


# --- events --------------------------------------------------------------------------------------


def event(
    run_id: str = "run_1",
    status: str = "succeeded",
    *,
    event_id: str = "evt_1",
    output: bool = True,
    **data: Any,
) -> dict[str, Any]:
    detail: dict[str, Any] = {"run_id": run_id, "status": status, "duration_ms": 1200, **data}
    if output and status == "succeeded":
        detail["output"] = {"kit_code": "A1B2C3D4", "bricks": {"b": {"value": 1}}}
    if status == "failed":
        detail.setdefault("error_code", "model_error")
    return {
        "id": event_id,
        "type": f"run.{status}",
        "created_at": "2026-01-02T03:04:05.678Z",
        "data": detail,
    }


def completion(run_id: str = "run_1", status: str = "succeeded", **kw: Any) -> Completion:
    found = completion_from_event(event(run_id, status, **kw))
    assert found is not None
    return found


def test_completion_from_event() -> None:
    full = completion()
    assert (full.run_id, full.status, full.complete) == ("run_1", "succeeded", True)
    assert not completion(output=False).complete  # thin: needs a GET
    assert completion(status="failed").complete  # a failure carries its error fields
    assert completion(status="cancelled").complete
    thin = full.thin()
    assert "output" not in thin.data and thin.data["run_id"] == "run_1" and not thin.complete
    assert "output" in full.data  # thin() copies
    # The status may come from the type alone.
    untyped = {"id": "e", "type": "run.failed", "data": {"run_id": "r"}}
    assert completion_from_event(untyped) == Completion("r", "failed", {"run_id": "r"})


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"not json",
        b"[]",
        b'{"data": []}',
        b'{"data": {"status": "succeeded"}}',
        b'{"data": {"run_id": 5, "status": "succeeded"}}',
        b'{"type": "run.running", "data": {"run_id": "r", "status": "running"}}',
        b'{"type": "run.created", "data": {"run_id": "r"}}',
    ],
)
def test_not_a_completion(value: bytes | None) -> None:
    assert parse_completion(value) is None


# --- SeenEvents ----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_seen_events_expire_and_are_bounded() -> None:
    clock = Clock()
    seen = SeenEvents(ttl=10, max_size=3, clock=clock)
    seen.add("a")
    clock.now += 5
    seen.add("b")
    assert "a" in seen and "b" in seen
    clock.now += 6  # a is 11 s old
    assert "a" not in seen and "b" in seen
    for name in ("c", "d", "e"):
        seen.add(name)
    assert len(seen) == 3 and "b" not in seen and "e" in seen


# --- CompletionRegistry -------------------------------------------------------------------------


def counted(result: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "semarize_connector_webhook_completions_total", {"result": result}
    )
    return value or 0.0


def test_watch_then_deliver_resolves_with_the_full_event() -> None:
    async def main() -> None:
        registry = CompletionRegistry(keep_seconds=60)
        waiter = registry.watch("run_1")
        assert not waiter.done()
        before = counted("matched")
        assert registry.deliver(completion("run_2")) == "unmatched"
        assert not waiter.done()
        assert registry.deliver(completion("run_1")) == "matched"
        assert waiter.result().complete and "output" in waiter.result().data
        assert counted("matched") - before == 1
        # A second completion of the same run (a duplicate delivery) resolves nothing.
        assert registry.deliver(completion("run_1")) == "duplicate"
        registry.unwatch("run_1", waiter)
        assert registry.watched == 0

    asyncio.run(main())


def test_pending_then_watch_resolves_at_once_without_output() -> None:
    async def main() -> None:
        registry = CompletionRegistry(keep_seconds=60)
        registry.deliver(completion("run_1"))
        assert registry.pending == 1
        waiter = registry.watch("run_1")
        assert waiter.done()
        kept = waiter.result()
        # Kept completions are thin: a match from pending costs one GET, not memory.
        assert kept.run_id == "run_1" and not kept.complete and "output" not in kept.data
        registry.deliver(completion("run_f", "failed"))
        failed = registry.watch("run_f").result()
        assert failed.complete and failed.data["error_code"] == "model_error"

    asyncio.run(main())


def test_every_waiter_of_a_run_is_resolved_and_unwatch_cancels() -> None:
    async def main() -> None:
        registry = CompletionRegistry(keep_seconds=60)
        first, second = registry.watch("run_1"), registry.watch("run_1")
        registry.unwatch("run_1", second)
        assert second.cancelled()
        third = registry.watch("run_1")
        registry.deliver(completion("run_1"))
        assert first.done() and third.done()
        registry.unwatch("run_1", first)
        registry.unwatch("run_1", third)
        registry.unwatch("run_1", third)  # twice: harmless
        assert registry.watched == 0

    asyncio.run(main())


def test_pending_completions_expire() -> None:
    async def main() -> None:
        clock = Clock()
        registry = CompletionRegistry(keep_seconds=60, clock=clock)
        registry.deliver(completion("run_1"))
        clock.now += 59
        assert registry.watch("run_1").done()
        clock.now += 2
        assert not registry.watch("run_2").done()
        assert not registry.watch("run_1").done()  # expired
        assert registry.pending == 0
        assert metrics.WEBHOOK_PENDING._value.get() == 0

    asyncio.run(main())


def test_pending_completions_are_bounded_oldest_first() -> None:
    async def main() -> None:
        registry = CompletionRegistry(keep_seconds=60, max_pending=3)
        before = counted("evicted")
        registry.deliver_many([completion(f"run_{i}") for i in range(5)])
        assert registry.pending == 3
        assert counted("evicted") - before == 2
        assert not registry.watch("run_0").done() and not registry.watch("run_1").done()
        assert all(registry.watch(f"run_{i}").done() for i in (2, 3, 4))

    asyncio.run(main())


# --- WebhookReceiver -----------------------------------------------------------------------------


def deliveries(result: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "semarize_connector_webhook_deliveries_total", {"result": result}
    )
    return value or 0.0


class Publisher:
    def __init__(self) -> None:
        self.published: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []
        self.fail = False
        self.gate: asyncio.Event | None = None

    async def __call__(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("broker down")
        self.published.append((key, value, headers))


Scenario = Callable[
    [TestClient[aiohttp.web.Request, aiohttp.web.Application], Publisher], Awaitable[None]
]


def run_receiver(scenario: Scenario, **options: Any) -> None:
    async def main() -> None:
        publisher = Publisher()
        receiver = WebhookReceiver(
            host="127.0.0.1", port=0, secret=SECRET, publish=publisher, **options
        )
        async with TestClient(TestServer(receiver.app)) as client:
            await scenario(client, publisher)

    asyncio.run(main())


def signed(body: bytes, *, secret: str = SECRET, t: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if t is None else t
    return {
        "Content-Type": "application/json",
        "Semarize-Signature": f"t={stamp},v1={mac(secret, stamp, body)}",
        "Semarize-Event-Id": "evt_header",
        "Semarize-Delivery-Id": "dlv_1",
    }


def test_a_verified_event_is_published_then_acknowledged() -> None:
    body = orjson.dumps(event("run_9", event_id="evt_9"))

    async def scenario(client: Any, publisher: Publisher) -> None:
        before = deliveries("accepted")
        publisher.gate = asyncio.Event()
        answer = asyncio.ensure_future(client.post(webhooks.PATH, data=body, headers=signed(body)))
        await asyncio.sleep(0.1)
        assert not answer.done()  # no 2xx before the broker acknowledged
        publisher.gate.set()
        response = await answer
        assert response.status == 200
        assert publisher.published == [
            (b"run_9", body, [("semarize.run_id", b"run_9"), ("semarize.event_id", b"evt_9")])
        ]
        assert deliveries("accepted") - before == 1

    run_receiver(scenario)


def test_a_redelivered_event_is_deduped() -> None:
    body = orjson.dumps(event(event_id="evt_dup"))

    async def scenario(client: Any, publisher: Publisher) -> None:
        before = deliveries("duplicate")
        headers = signed(body)
        for _ in range(3):  # the same delivery replayed, byte for byte
            response = await client.post(webhooks.PATH, data=body, headers=headers)
            assert response.status == 200
        assert len(publisher.published) == 1
        assert deliveries("duplicate") - before == 2

    run_receiver(scenario)


def test_a_failed_publish_is_a_503_and_is_not_remembered() -> None:
    body = orjson.dumps(event(event_id="evt_retry"))

    async def scenario(client: Any, publisher: Publisher) -> None:
        before = deliveries("publish_failed")
        publisher.fail = True
        response = await client.post(webhooks.PATH, data=body, headers=signed(body))
        assert response.status == 503
        assert deliveries("publish_failed") - before == 1
        publisher.fail = False  # the provider delivers again: now it goes through
        response = await client.post(webhooks.PATH, data=body, headers=signed(body))
        assert response.status == 200
        assert len(publisher.published) == 1

    run_receiver(scenario)


def test_a_publish_that_hangs_times_out_with_503() -> None:
    body = orjson.dumps(event(event_id="evt_slow"))

    async def scenario(client: Any, publisher: Publisher) -> None:
        publisher.gate = asyncio.Event()  # never set
        response = await client.post(webhooks.PATH, data=body, headers=signed(body))
        assert response.status == 503

    run_receiver(scenario, publish_timeout=0.2)


@pytest.mark.parametrize(
    "headers",
    [
        {},  # no signature
        {"Semarize-Signature": "t=1,v1=00"},  # forged, expired
        "wrong secret",
        "expired",
        "forged",
    ],
)
def test_a_bad_signature_is_401_with_no_detail(headers: Any) -> None:
    body = orjson.dumps(event(event_id="evt_bad"))
    if headers == "wrong secret":
        headers = signed(body, secret="whsec_wrong")
    elif headers == "expired":
        headers = signed(body, t=int(time.time()) - 301)
    elif headers == "forged":
        headers = signed(body)
        headers["Semarize-Signature"] = headers["Semarize-Signature"][:-4] + "0000"

    async def scenario(client: Any, publisher: Publisher) -> None:
        before = deliveries("bad_signature")
        response = await client.post(webhooks.PATH, data=body, headers=headers)
        assert response.status == 401
        assert await response.read() == b""
        assert publisher.published == []
        assert deliveries("bad_signature") - before == 1

    run_receiver(scenario)


def test_the_signature_is_checked_before_parsing() -> None:
    async def scenario(client: Any, publisher: Publisher) -> None:
        # Unsigned garbage is a 401, not a 400: nothing is parsed before verification.
        response = await client.post(webhooks.PATH, data=b"{not json")
        assert response.status == 401
        before = deliveries("malformed")
        for body in (b"{not json", b"[1, 2]", b'"text"'):
            response = await client.post(webhooks.PATH, data=body, headers=signed(body))
            assert response.status == 400
        assert deliveries("malformed") - before == 3
        assert publisher.published == []

    run_receiver(scenario)


def test_an_oversized_body_is_413() -> None:
    body = b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'

    async def scenario(client: Any, publisher: Publisher) -> None:
        before = deliveries("too_large")
        response = await client.post(webhooks.PATH, data=io.BytesIO(body), headers=signed(body))
        assert response.status == 413
        # Without a Content-Length (chunked), the limit holds while reading.

        async def chunks() -> Any:
            for _ in range(40):
                yield b"x" * 65536

        response = await client.post(webhooks.PATH, data=chunks(), headers=signed(b""))
        assert response.status == 413
        assert deliveries("too_large") - before == 2
        assert publisher.published == []

    run_receiver(scenario, max_body_bytes=1024 * 1024)


def test_a_verified_event_that_is_no_completion_is_ignored() -> None:
    body = orjson.dumps({"id": "evt_x", "type": "kit.published", "data": {"kit_code": "X"}})

    async def scenario(client: Any, publisher: Publisher) -> None:
        before = deliveries("ignored")
        response = await client.post(webhooks.PATH, data=body, headers=signed(body))
        assert response.status == 200
        assert publisher.published == []
        assert deliveries("ignored") - before == 1

    run_receiver(scenario)


def test_only_post_on_the_path() -> None:
    async def scenario(client: Any, publisher: Publisher) -> None:
        assert (await client.get(webhooks.PATH)).status == 405
        assert (await client.post("/metrics", data=b"")).status == 404

    run_receiver(scenario)


def test_the_verifier_is_swappable() -> None:
    seen: list[tuple[str, str | None, bytes]] = []

    def verifier(secret: str, header: str | None, body: bytes, now: float) -> bool:
        seen.append((secret, header, body))
        return header == "trust me"

    body = orjson.dumps(event(event_id="evt_custom"))

    async def scenario(client: Any, publisher: Publisher) -> None:
        headers = {"Semarize-Signature": "trust me"}
        assert (await client.post(webhooks.PATH, data=body, headers=headers)).status == 200
        assert (await client.post(webhooks.PATH, data=body, headers=signed(body))).status == 401
        assert seen[0] == (SECRET, "trust me", body)

    run_receiver(scenario, verifier=verifier)


def test_dedupe_uses_the_signed_event_id() -> None:
    body = orjson.dumps(event(event_id="evt_signed"))

    async def scenario(client: Any, publisher: Publisher) -> None:
        for header_id in ("evt_a", "evt_b"):  # the unsigned header cannot dodge the dedupe
            headers = signed(body) | {"Semarize-Event-Id": header_id}
            assert (await client.post(webhooks.PATH, data=body, headers=headers)).status == 200
        assert len(publisher.published) == 1

    run_receiver(scenario)


# --- reader configuration ------------------------------------------------------------------------


def test_reader_config_joins_no_group_and_keeps_security_settings() -> None:
    config = reader_config(
        bootstrap_servers="b:9092",
        group_id="grp",
        instance_id="pod-1",
        extra={
            "security.protocol": "SASL_SSL",
            "sasl.password": "secret",
            "group.instance.id": "static",
            "partition.assignment.strategy": "range",
        },
    )
    assert config["group.id"] == "grp.completions.pod-1"
    assert config["enable.auto.commit"] is False
    assert config["security.protocol"] == "SASL_SSL" and config["sasl.password"] == "secret"
    assert "group.instance.id" not in config and "partition.assignment.strategy" not in config


# --- the tracker with webhooks --------------------------------------------------------------------


def reply(status: int, body: Any) -> Response:
    return Response(status, {}, orjson.dumps(body))


class Api:
    """A scripted API: one 202 receipt, then GET answers (the last one repeats)."""

    def __init__(self, gets: list[dict[str, Any]], receipt_status: str = "queued") -> None:
        self.gets = gets
        self.receipt_status = receipt_status
        self.get_count = 0

    async def handle(self, request: Request) -> Response:
        if request.method == "POST":
            return reply(202, {"run_id": "run_1", "status": self.receipt_status})
        self.get_count += 1
        return reply(200, self.gets.pop(0) if len(self.gets) > 1 else self.gets[0])


def run_detail(status: str = "succeeded", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"run_id": "run_1", "status": status, "duration_ms": 100, **extra}
    if status == "succeeded":
        body.setdefault("output", {"kit_code": "A1B2C3D4", "bricks": {"polled": {"value": 1}}})
    return body


def new_tracker(api: Api, registry: CompletionRegistry, fallback: float) -> RunTracker:
    client = SemarizeClient(
        MockTransport(api.handle), base_url="https://api.test", api_key="smz_test_k"
    )
    return RunTracker(
        client,
        ApiGate(min_requests=1_000_000),
        TrackerSettings(
            deadline_seconds=60,
            max_create_attempts=3,
            poll_initial_seconds=0.01,
            poll_max_seconds=0.05,
            retry_max_seconds=0.1,
            webhook_fallback_seconds=fallback,
        ),
        create_backoff=Backoff(initial=0.01, maximum=0.1),
        poll_backoff=Backoff(initial=0.01, maximum=0.1),
        completions=registry,
    )


def request_for() -> tuple[SourceRecord, RunRequest]:
    record = SourceRecord("t", 0, 1, None, b"k", b'{"event_id": "e1", "transcript": "hi"}', None)
    decoded = Decoder(
        mapping=InputMapping(),
        kit_code="A1B2C3D4",
        kit_version_id=None,
        run_type="api",
        mode="async",
        salt="",
        max_bytes=65536,
    ).decode(record)
    assert isinstance(decoded, RunRequest)
    return record, decoded


async def track_with(
    api: Api,
    registry: CompletionRegistry,
    fallback: float,
    during: Callable[[], Awaitable[None]] | None = None,
) -> Any:
    run_tracker = new_tracker(api, registry, fallback)
    record, request = request_for()
    started = run_tracker._gate.healthy_clock()  # the deadline runs on the gate's clock
    task = asyncio.create_task(run_tracker.track(record, request, started))
    if during is not None:
        await during()
    return await asyncio.wait_for(task, 10)


def test_a_webhook_finishes_the_run_with_no_get() -> None:
    async def main() -> None:
        registry = CompletionRegistry(keep_seconds=60)
        api = Api([run_detail("running")])

        async def deliver() -> None:
            await asyncio.sleep(0.05)
            assert registry.watched == 1
            registry.deliver(completion("run_1"))

        outcome = await track_with(api, registry, fallback=30, during=deliver)
        assert isinstance(outcome, Succeeded)
        assert outcome.polls == 0 and api.get_count == 0
        assert outcome.run["output"]["bricks"] == {"b": {"value": 1}}
        assert registry.watched == 0  # unwatched when done

    asyncio.run(main())


def test_a_thin_webhook_costs_one_get() -> None:
    async def main() -> None:
        registry = CompletionRegistry(keep_seconds=60)
        api = Api([run_detail()])

        async def deliver() -> None:
            await asyncio.sleep(0.05)
            registry.deliver(completion("run_1", output=False))

        outcome = await track_with(api, registry, fallback=30, during=deliver)
        assert isinstance(outcome, Succeeded)
        assert outcome.polls == 1 and api.get_count == 1
        assert outcome.run["output"]["bricks"] == {"polled": {"value": 1}}

    asyncio.run(main())


def test_a_failed_webhook_dead_letters_with_its_error() -> None:
    async def main() -> None:
        registry = CompletionRegistry(keep_seconds=60)
        api = Api([run_detail("running")])

        async def deliver() -> None:
            await asyncio.sleep(0.02)
            registry.deliver(completion("run_1", "failed"))

        outcome = await track_with(api, registry, fallback=30, during=deliver)
        assert isinstance(outcome, DeadLettered)
        assert outcome.why.kind == "run_failed" and outcome.why.error_code == "model_error"
        assert api.get_count == 0

    asyncio.run(main())


def test_without_a_webhook_polling_starts_after_the_fallback() -> None:
    async def main() -> None:
        registry = CompletionRegistry(keep_seconds=60)
        api = Api([run_detail("running"), run_detail()])
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def check() -> None:
            await asyncio.sleep(0.2)
            assert api.get_count == 0  # still waiting for the webhook

        outcome = await track_with(api, registry, fallback=0.4, during=check)
        assert isinstance(outcome, Succeeded)
        assert loop.time() - started >= 0.4
        assert api.get_count == 2  # then the usual polling

    asyncio.run(main())


def test_a_late_webhook_after_a_poll_changes_nothing() -> None:
    async def main() -> None:
        registry = CompletionRegistry(keep_seconds=60)
        api = Api([run_detail()])
        outcome = await track_with(api, registry, fallback=0.05)
        assert isinstance(outcome, Succeeded) and api.get_count == 1
        assert registry.watched == 0
        assert registry.deliver(completion("run_1")) == "unmatched"  # kept, then expires

    asyncio.run(main())


def test_a_completion_that_came_first_is_matched() -> None:
    async def main() -> None:
        registry = CompletionRegistry(keep_seconds=60)
        registry.deliver(completion("run_1", output=True))
        api = Api([run_detail()])
        outcome = await track_with(api, registry, fallback=30)
        assert isinstance(outcome, Succeeded)
        assert api.get_count == 1  # kept completions are thin: one GET for the output

    asyncio.run(main())


def test_a_receipt_that_is_already_terminal_is_read_at_once() -> None:
    async def main() -> None:
        registry = CompletionRegistry(keep_seconds=60)
        api = Api([run_detail()], receipt_status="succeeded")  # a replayed key
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = await track_with(api, registry, fallback=30)
        assert isinstance(outcome, Succeeded)
        assert loop.time() - started < 5 and api.get_count == 1

    asyncio.run(main())
