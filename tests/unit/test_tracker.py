"""The run tracker against a scripted API (MockTransport), on virtual time.

`asyncio.sleep` inside the tracker is replaced by a virtual one: it records the delay, moves
the gate's clock forward by it and yields once, so hours of polling take milliseconds.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from connector import metrics, tracker
from connector.config import InputMapping
from connector.records import Decoder, RunRequest, SourceRecord
from connector.semarize.client import SemarizeClient
from connector.semarize.errors import TransportFailure
from connector.semarize.retry import ApiGate, Backoff
from connector.semarize.transport import MockTransport, Request, Response
from connector.tracker import DeadLettered, RunTracker, Succeeded, TrackerSettings

Item = Response | Exception


def reply(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Response:
    raw = b"" if body is None else orjson.dumps(body)
    return Response(status, headers or {}, raw)


def accepted(run_id: str = "run_1", **extra: Any) -> Response:
    return reply(202, {"run_id": run_id, "status": "queued", "run_type": "api", **extra})


def detail(status: str, run_id: str = "run_1", **extra: Any) -> Response:
    body: dict[str, Any] = {"run_id": run_id, "status": status, "run_type": "api", **extra}
    if status == "succeeded":
        body.setdefault("duration_ms", 1500)
        body.setdefault("output", {"kit_code": "A1B2C3D4", "bricks": {"b": {"value": 1}}})
    return reply(200, body)


def error(status: int, code: str | None = None, headers: dict[str, str] | None = None) -> Response:
    return reply(status, {"error": code} if code else None, headers)


class Script:
    """The API's answers, in order; the last one repeats."""

    def __init__(self, items: list[Item]) -> None:
        assert items
        self.items = list(items)

    def next(self) -> Item:
        return self.items.pop(0) if len(self.items) > 1 else self.items[0]

    def replace(self, items: list[Item]) -> None:
        self.items = list(items)


@dataclass
class Harness:
    creates: Script
    gets: Script
    log: list[tuple[str, Any]] = field(default_factory=list)
    offset: float = 0.0

    def clock(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, delay: float) -> None:
        assert delay >= 0
        self.log.append(("sleep", delay))
        self.offset += delay
        await asyncio.sleep(0)

    async def handle(self, request: Request) -> Response:
        item = self.creates.next() if request.method == "POST" else self.gets.next()
        self.log.append((request.method, request))
        if isinstance(item, Exception):
            raise item
        return item

    def requests(self, method: str) -> list[Request]:
        return [r for m, r in self.log if m == method]

    def sleeps(self) -> list[float]:
        return [d for m, d in self.log if m == "sleep"]

    def sleep_before(self, method: str, index: int) -> float:
        """The last virtual sleep before the index-th request of `method`."""
        seen = -1
        last_sleep = -1.0
        for m, value in self.log:
            if m == "sleep":
                last_sleep = value
            elif m == method:
                seen += 1
                if seen == index:
                    return last_sleep
        raise AssertionError(f"no {method} #{index}")


@pytest.fixture
def virtual_sleep(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Harness]]:
    """Installs the current harness's sleep into connector.tracker."""
    holder: list[Harness] = []

    async def sleep(delay: float) -> None:
        await holder[0].sleep(delay)

    monkeypatch.setattr(tracker, "asyncio", types.SimpleNamespace(sleep=sleep))
    yield holder


def settings(**overrides: Any) -> TrackerSettings:
    values: dict[str, Any] = {
        "deadline_seconds": 3600.0,
        "max_create_attempts": 5,
        "poll_initial_seconds": 1.0,
        "poll_max_seconds": 10.0,
        "retry_max_seconds": 60.0,
    }
    values.update(overrides)
    return TrackerSettings(**values)


def source(value: bytes = b'{"event_id": "e1", "transcript": "hi"}') -> SourceRecord:
    return SourceRecord("transcripts", 0, 7, 1_700_000_000_000, b"key", value, None)


def request_for(value: bytes = b'{"event_id": "e1", "transcript": "hi"}') -> RunRequest:
    decoder = Decoder(
        mapping=InputMapping(),
        kit_code="A1B2C3D4",
        kit_version_id=None,
        run_type="api",
        mode="async",
        salt="",
        max_bytes=65536,
    )
    decoded = decoder.decode(source(value))
    assert isinstance(decoded, RunRequest)
    return decoded


@dataclass
class Setup:
    harness: Harness
    gate: ApiGate
    tracker: RunTracker


def setup(
    holder: list[Harness],
    creates: list[Item],
    gets: list[Item] | None = None,
    *,
    rng: float = 0.5,
    gate_options: dict[str, Any] | None = None,
    **tracker_settings: Any,
) -> Setup:
    harness = Harness(Script(creates), Script(gets or [detail("succeeded")]))
    holder[:] = [harness]
    options: dict[str, Any] = {"min_requests": 1_000_000, "clock": harness.clock}
    options.update(gate_options or {})
    gate = ApiGate(**options)
    client = SemarizeClient(
        MockTransport(harness.handle), base_url="https://api.test", api_key="smz_test_k"
    )
    run_tracker = RunTracker(
        client,
        gate,
        settings(**tracker_settings),
        create_backoff=Backoff(initial=0.5, maximum=60.0, rng=lambda: rng),
        poll_backoff=Backoff(initial=0.5, maximum=60.0, rng=lambda: rng),
    )
    return Setup(harness, gate, run_tracker)


def track(s: Setup, request: RunRequest | None = None) -> tracker.Outcome:
    req = request or request_for()

    async def main() -> tracker.Outcome:
        return await asyncio.wait_for(s.tracker.track(source(), req, s.gate.healthy_clock()), 5)

    return asyncio.run(main())


def retries(route: str, reason: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "semarize_connector_retries_total", {"route": route, "reason": reason}
    )
    return value or 0.0


# --- create ----------------------------------------------------------------------------------


def test_async_run_is_created_then_polled_to_success(virtual_sleep: list[Harness]) -> None:
    s = setup(
        virtual_sleep, [accepted()], [detail("queued"), detail("running"), detail("succeeded")]
    )
    request = request_for()
    outcome = track(s, request)
    assert isinstance(outcome, Succeeded)
    assert outcome.run["run_id"] == "run_1"
    assert outcome.run["output"]["bricks"] == {"b": {"value": 1}}
    assert outcome.polls == 3
    assert len(s.harness.requests("POST")) == 1
    assert [r.url for r in s.harness.requests("GET")] == ["https://api.test/v1/runs/run_1"] * 3
    assert request.body is None  # the transcript is dropped once the run exists
    assert outcome.completed_at >= outcome.submitted_at


def test_create_retries_on_429_and_5xx_with_the_same_key_and_body(
    virtual_sleep: list[Harness],
) -> None:
    creates: list[Item] = [
        error(429, "rate_limited", {"Retry-After": "7"}),
        error(500, "run_request_failed"),
        error(502),
        error(503),
        error(504),
        TransportFailure("POST timed out", kind="timeout"),
        accepted(),
    ]
    s = setup(virtual_sleep, creates, max_create_attempts=10)
    before = retries("create", "5xx")
    request = request_for()
    body = request.body
    outcome = track(s, request)
    assert isinstance(outcome, Succeeded)
    posts = s.harness.requests("POST")
    assert len(posts) == 7
    assert {p.headers["Idempotency-Key"] for p in posts} == {request.idempotency_key}
    assert {p.body for p in posts} == {body}
    assert len({p.headers["X-Request-Id"] for p in posts}) == 7
    assert s.harness.sleep_before("POST", 1) >= 7.0  # Retry-After honoured
    assert retries("create", "5xx") - before == 4


def test_create_honours_the_body_retry_after(virtual_sleep: list[Harness]) -> None:
    rate_limited = reply(
        429, {"error": "rate_limited", "retry_after_seconds": 3}, {"Retry-After": "10"}
    )
    s = setup(virtual_sleep, [rate_limited, accepted()], rng=0.0)
    assert isinstance(track(s), Succeeded)
    assert s.harness.sleep_before("POST", 1) == 3.0


def test_create_retry_delay_grows_without_retry_after(virtual_sleep: list[Harness]) -> None:
    s = setup(virtual_sleep, [error(503)] * 4 + [accepted()], rng=1.0)
    assert isinstance(track(s), Succeeded)
    assert [s.harness.sleep_before("POST", i) for i in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]


def test_receipt_without_a_run_id_is_retried(virtual_sleep: list[Harness]) -> None:
    s = setup(virtual_sleep, [reply(202, {"status": "queued"}), accepted("run_2")])
    outcome = track(s)
    assert isinstance(outcome, Succeeded)
    posts = s.harness.requests("POST")
    assert len(posts) == 2
    assert posts[0].headers["Idempotency-Key"] == posts[1].headers["Idempotency-Key"]
    assert [r.url for r in s.harness.requests("GET")] == ["https://api.test/v1/runs/run_2"]


def test_max_attempts_gives_retries_exhausted(virtual_sleep: list[Harness]) -> None:
    s = setup(virtual_sleep, [error(503)], max_create_attempts=3)
    outcome = track(s)
    assert isinstance(outcome, DeadLettered)
    why = outcome.why
    assert why.kind == "retries_exhausted"
    assert why.attempts == 3
    assert why.http_status == 503
    assert why.event_id == "e1"
    assert why.run_id is None
    assert len(s.harness.requests("POST")) == 3
    assert s.harness.requests("GET") == []


def test_transport_failures_exhaust_too(virtual_sleep: list[Harness]) -> None:
    s = setup(
        virtual_sleep, [TransportFailure("refused", kind="connection")], max_create_attempts=2
    )
    outcome = track(s)
    assert isinstance(outcome, DeadLettered)
    assert outcome.why.kind == "retries_exhausted"
    assert outcome.why.attempts == 2
    assert outcome.why.http_status is None


@pytest.mark.parametrize(
    ("status", "code"),
    [(409, "idempotency_key_conflict"), (422, "input_not_processable"), (413, "payload_too_large"),
     (400, "input_must_be_object")],
)  # fmt: skip
def test_request_rejected_dead_letter(virtual_sleep: list[Harness], status: int, code: str) -> None:
    s = setup(virtual_sleep, [error(503), error(status, code)])
    outcome = track(s)
    assert isinstance(outcome, DeadLettered)
    why = outcome.why
    assert why.kind == "request_rejected"
    assert why.http_status == status
    assert why.error_code == code
    assert why.attempts == 2
    assert why.event_id == "e1"
    assert why.error_message is not None and code in why.error_message
    assert len(s.harness.requests("POST")) == 2
    assert s.harness.requests("GET") == []


def test_kit_not_found_for_a_per_event_kit_is_the_records_fault(
    virtual_sleep: list[Harness],
) -> None:
    s = setup(virtual_sleep, [error(404, "kit_not_found")])
    request = request_for(b'{"event_id": "e1", "transcript": "hi", "kit_code": "ZZZZZZZZ"}')
    outcome = track(s, request)
    assert isinstance(outcome, DeadLettered)
    assert outcome.why.kind == "request_rejected"
    assert outcome.why.error_code == "kit_not_found"
    assert s.gate.halt_error is None


async def wait_for_condition(condition: Any, within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


def test_halt_on_401_and_resume(virtual_sleep: list[Harness]) -> None:
    s = setup(virtual_sleep, [error(401, "invalid_api_key")], [detail("succeeded")])

    async def main() -> tracker.Outcome:
        task = asyncio.create_task(s.tracker.track(source(), request_for(), s.gate.healthy_clock()))
        await wait_for_condition(lambda: s.gate.halt_error is not None)
        assert s.gate.halt_error.status == 401  # type: ignore[union-attr]
        await asyncio.sleep(0.05)
        assert not task.done()  # halted: no dead letter...
        assert len(s.harness.requests("POST")) == 1  # ...and nothing more is sent
        s.harness.creates.replace([accepted()])
        s.gate.resume()
        return await asyncio.wait_for(task, 2)

    outcome = asyncio.run(main())
    assert isinstance(outcome, Succeeded)
    assert len(s.harness.requests("POST")) == 2


def test_a_halt_costs_the_record_no_attempt(virtual_sleep: list[Harness]) -> None:
    s = setup(virtual_sleep, [error(403)], max_create_attempts=2)

    async def main() -> tracker.Outcome:
        task = asyncio.create_task(s.tracker.track(source(), request_for(), s.gate.healthy_clock()))
        await wait_for_condition(lambda: s.gate.halt_error is not None)
        s.harness.creates.replace([error(503)])
        s.gate.resume()
        return await asyncio.wait_for(task, 2)

    outcome = asyncio.run(main())
    assert isinstance(outcome, DeadLettered)
    assert outcome.why.kind == "retries_exhausted"
    assert outcome.why.attempts == 2
    # the refused create, the halt's trial (it tests the API, not the record: no attempt
    # either), then the record's two attempts
    assert len(s.harness.requests("POST")) == 4


def test_configured_kit_not_found_halts_instead_of_dead_lettering(
    virtual_sleep: list[Harness],
) -> None:
    s = setup(virtual_sleep, [error(404, "kit_not_found")])

    async def main() -> tracker.Outcome:
        task = asyncio.create_task(s.tracker.track(source(), request_for(), s.gate.healthy_clock()))
        await wait_for_condition(lambda: s.gate.halt_error is not None)
        assert s.gate.halt_error.error_code == "kit_not_found"  # type: ignore[union-attr]
        await asyncio.sleep(0.02)
        assert not task.done()
        s.harness.creates.replace([accepted()])
        s.gate.resume()
        return await asyncio.wait_for(task, 2)

    assert isinstance(asyncio.run(main()), Succeeded)


def test_time_halted_does_not_count_against_the_deadline(virtual_sleep: list[Harness]) -> None:
    s = setup(virtual_sleep, [error(401)], deadline_seconds=60.0)

    async def main() -> tracker.Outcome:
        task = asyncio.create_task(s.tracker.track(source(), request_for(), s.gate.healthy_clock()))
        await wait_for_condition(lambda: s.gate.halt_error is not None)
        s.harness.offset += 3600  # an hour passes while halted
        s.harness.creates.replace([accepted()])
        s.gate.resume()
        return await asyncio.wait_for(task, 2)

    assert isinstance(asyncio.run(main()), Succeeded)


def test_deadline_before_the_run_is_created(virtual_sleep: list[Harness]) -> None:
    s = setup(virtual_sleep, [error(503)], deadline_seconds=30.0, max_create_attempts=10_000)
    outcome = track(s)
    assert isinstance(outcome, DeadLettered)
    why = outcome.why
    assert why.kind == "deadline_exceeded"
    assert why.run_id is None
    assert why.http_status == 503
    assert why.attempts == len(s.harness.requests("POST"))
    assert sum(s.harness.sleeps()) >= 30.0


# --- sync mode and the 202 receipt -----------------------------------------------------------


def test_sync_200_finishes_at_once(virtual_sleep: list[Harness]) -> None:
    s = setup(virtual_sleep, [detail("succeeded", extra_field="ignored")])
    outcome = track(s)
    assert isinstance(outcome, Succeeded)
    assert outcome.polls == 0
    assert outcome.run["output"]["kit_code"] == "A1B2C3D4"
    assert s.harness.requests("GET") == []
    assert s.harness.sleeps() == []


def test_sync_200_failed_is_a_dead_letter_at_once(virtual_sleep: list[Harness]) -> None:
    failed = detail(
        "failed",
        error_code="transcript_too_short",
        error_message="The transcript is too short",
        error_user_message="Add more conversation",
    )
    s = setup(virtual_sleep, [failed])
    outcome = track(s)
    assert isinstance(outcome, DeadLettered)
    why = outcome.why
    assert why.kind == "run_failed"
    assert (why.error_code, why.error_message, why.error_user_message) == (
        "transcript_too_short",
        "The transcript is too short",
        "Add more conversation",
    )
    assert why.run_id == "run_1"
    assert s.harness.requests("GET") == []


def test_202_with_sync_fallback_polls(virtual_sleep: list[Harness]) -> None:
    fallback = reply(
        202, {"run_id": "run_9", "status": "running", "sync_fallback": True, "waited_ms": 30000}
    )
    s = setup(virtual_sleep, [fallback], [detail("running", "run_9"), detail("succeeded", "run_9")])
    outcome = track(s)
    assert isinstance(outcome, Succeeded)
    assert outcome.polls == 2
    assert [r.url for r in s.harness.requests("GET")] == ["https://api.test/v1/runs/run_9"] * 2


def test_202_that_says_succeeded_is_still_polled_for_the_output(
    virtual_sleep: list[Harness],
) -> None:
    receipt = reply(202, {"run_id": "run_1", "status": "succeeded"})
    full = detail("succeeded", output={"kit_code": "A1B2C3D4", "bricks": {"x": {"value": True}}})
    s = setup(virtual_sleep, [receipt], [full])
    outcome = track(s)
    assert isinstance(outcome, Succeeded)
    assert outcome.polls == 1
    assert outcome.run["output"]["bricks"] == {"x": {"value": True}}
    assert len(s.harness.requests("GET")) == 1


def test_first_poll_waits_for_the_retry_after_of_the_receipt(virtual_sleep: list[Harness]) -> None:
    s = setup(virtual_sleep, [reply(202, {"run_id": "run_1"}, {"Retry-After": "3"})])
    track(s)
    assert s.harness.sleep_before("GET", 0) == 3.0


def test_first_poll_retry_after_is_capped_by_poll_max(virtual_sleep: list[Harness]) -> None:
    s = setup(virtual_sleep, [reply(202, {"run_id": "run_1"}, {"Retry-After": "120"})])
    track(s)
    assert s.harness.sleep_before("GET", 0) == 10.0


def test_first_poll_without_retry_after_uses_poll_initial(virtual_sleep: list[Harness]) -> None:
    s = setup(virtual_sleep, [accepted()], poll_initial_seconds=2.5)
    track(s)
    assert s.harness.sleep_before("GET", 0) == 2.5


def test_polls_never_come_faster_than_poll_initial(virtual_sleep: list[Harness]) -> None:
    s = setup(virtual_sleep, [accepted()], [detail("running")] * 20 + [detail("succeeded")])
    outcome = track(s)
    assert isinstance(outcome, Succeeded)
    delays = [s.harness.sleep_before("GET", i) for i in range(21)]
    assert all(1.0 <= d <= 10.0 for d in delays)


def test_later_polls_back_off_exponentially_with_jitter(
    virtual_sleep: list[Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run's age comes from perf_counter: let it follow the virtual clock.
    virtual_time = types.SimpleNamespace(
        perf_counter=lambda: virtual_sleep[0].clock(), time=time.time
    )
    monkeypatch.setattr(tracker, "time", virtual_time)

    def delays(rng: float) -> list[float]:
        s = setup(
            virtual_sleep,
            [accepted()],
            [detail("running")] * 24 + [detail("succeeded")],
            rng=rng,
            poll_initial_seconds=1.0,
            poll_max_seconds=30.0,
        )
        assert isinstance(track(s), Succeeded)
        return [s.harness.sleep_before("GET", i) for i in range(25)]

    low, mid, high = delays(0.0), delays(0.5), delays(1.0)
    grown = [d for d in mid if 1.0 < d < 30.0]
    assert len(grown) >= 4
    assert all(b > a * 1.2 for a, b in itertools.pairwise(grown))  # x1.25 a poll
    assert max(mid) == 30.0  # capped at poll_max
    assert low[12] < mid[12] < high[12]  # the jitter moves them


# --- polling ---------------------------------------------------------------------------------


def test_poll_retries_are_separate_from_create_attempts(virtual_sleep: list[Harness]) -> None:
    gets: list[Item] = [
        *(error(503) for _ in range(6)),
        error(429, "rate_limited", {"Retry-After": "4"}),
        TransportFailure("GET timed out", kind="timeout"),
        detail("running"),
        detail("succeeded"),
    ]
    s = setup(virtual_sleep, [error(503), accepted()], gets, rng=0.0, max_create_attempts=2)
    before = retries("get", "5xx")
    outcome = track(s)
    assert isinstance(outcome, Succeeded)  # 8 failed polls, though creates allow only 2 tries
    assert outcome.polls == 10
    assert retries("get", "5xx") - before == 6
    assert s.harness.sleep_before("GET", 7) == 4.0  # the 429's Retry-After


def test_poll_backoff_grows_while_polls_fail(virtual_sleep: list[Harness]) -> None:
    s = setup(virtual_sleep, [accepted()], [error(500)] * 4 + [detail("succeeded")], rng=1.0)
    assert isinstance(track(s), Succeeded)
    assert [s.harness.sleep_before("GET", i) for i in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]


def test_run_not_found_three_times_is_request_rejected(virtual_sleep: list[Harness]) -> None:
    s = setup(virtual_sleep, [accepted("run_x")], [error(404, "run_not_found")])
    outcome = track(s)
    assert isinstance(outcome, DeadLettered)
    why = outcome.why
    assert why.kind == "request_rejected"
    assert why.run_id == "run_x"
    assert why.http_status == 404
    assert why.error_code == "run_not_found"
    assert len(s.harness.requests("GET")) == 3


def test_run_not_found_twice_is_tolerated(virtual_sleep: list[Harness]) -> None:
    gets = [error(404, "run_not_found"), error(404, "run_not_found"), detail("succeeded")]
    s = setup(virtual_sleep, [accepted()], gets)
    assert isinstance(track(s), Succeeded)


@pytest.mark.parametrize(
    ("status", "kind"), [("failed", "run_failed"), ("cancelled", "run_cancelled")]
)
def test_terminal_failures_are_dead_letters(
    virtual_sleep: list[Harness], status: str, kind: str
) -> None:
    terminal = detail(status, error_code="model_timeout", error_message="took too long")
    s = setup(virtual_sleep, [accepted()], [detail("running"), terminal])
    outcome = track(s)
    assert isinstance(outcome, DeadLettered)
    why = outcome.why
    assert why.kind == kind
    assert why.run_id == "run_1"
    assert why.event_id == "e1"
    assert why.error_code == "model_timeout"
    assert why.error_message == "took too long"
    assert why.error_user_message is None
    assert why.http_status is None


def test_deadline_while_polling(virtual_sleep: list[Harness]) -> None:
    s = setup(virtual_sleep, [accepted()], [detail("running")], deadline_seconds=120.0)
    outcome = track(s)
    assert isinstance(outcome, DeadLettered)
    why = outcome.why
    assert why.kind == "deadline_exceeded"
    assert why.run_id == "run_1"
    assert why.attempts is None
    assert 120.0 <= sum(s.harness.sleeps()) <= 120.0 + 10.0  # stopped within one poll


def test_halt_while_polling_waits_for_resume(virtual_sleep: list[Harness]) -> None:
    s = setup(virtual_sleep, [accepted()], [error(401, "api_key_expired")])

    async def main() -> tracker.Outcome:
        task = asyncio.create_task(s.tracker.track(source(), request_for(), s.gate.healthy_clock()))
        await wait_for_condition(lambda: s.gate.halt_error is not None)
        await asyncio.sleep(0.05)
        polls_while_halted = len(s.harness.requests("GET"))
        assert polls_while_halted == 1
        assert not task.done()
        s.harness.gets.replace([detail("succeeded")])
        s.gate.resume()
        return await asyncio.wait_for(task, 2)

    outcome = asyncio.run(main())
    assert isinstance(outcome, Succeeded)
    assert len(s.harness.requests("GET")) == 2


def test_unknown_fields_of_the_run_are_kept_in_the_output(virtual_sleep: list[Harness]) -> None:
    full = detail(
        "succeeded",
        output={"kit_code": "A1B2C3D4", "bricks": {}, "new_output_field": 1},
        created_at="2024-01-01T00:00:00Z",
        something_new={"a": 1},
    )
    s = setup(virtual_sleep, [accepted()], [full])
    outcome = track(s)
    assert isinstance(outcome, Succeeded)
    assert outcome.run["output"]["new_output_field"] == 1


def test_durations_feed_the_first_poll_estimate(virtual_sleep: list[Harness]) -> None:
    s = setup(virtual_sleep, [accepted()], [detail("succeeded", duration_ms=4000)])
    track(s)
    assert s.tracker.durations.median() == 4.0
    s.harness.log.clear()
    track(s)
    assert s.harness.sleep_before("GET", 0) == pytest.approx(4.08, abs=0.01)


def test_a_first_poll_that_just_missed_the_end_is_repeated_soon(
    virtual_sleep: list[Harness],
) -> None:
    s = setup(virtual_sleep, [accepted()], [detail("succeeded", duration_ms=4000)])
    track(s)  # teaches the estimator: runs take 4 s
    s.harness.log.clear()
    s.harness.gets.replace([detail("running"), detail("succeeded", duration_ms=4100)])
    outcome = track(s)
    assert isinstance(outcome, Succeeded)
    assert s.harness.sleep_before("GET", 0) == pytest.approx(4.08, abs=0.01)
    assert s.harness.sleep_before("GET", 1) == pytest.approx(0.4)  # a tenth of the median


def test_a_near_miss_repeat_still_waits_for_the_retry_after(virtual_sleep: list[Harness]) -> None:
    s = setup(virtual_sleep, [accepted()], [detail("succeeded", duration_ms=4000)])
    track(s)
    s.harness.log.clear()
    running = reply(200, {"run_id": "run_1", "status": "running"}, {"Retry-After": "2"})
    s.harness.gets.replace([running, detail("succeeded", duration_ms=4100)])
    track(s)
    assert s.harness.sleep_before("GET", 1) == 2.0
