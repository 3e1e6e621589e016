"""The run tracker: one record's lifecycle at the API, create -> track -> terminal outcome.

Create retries and poll retries are kept apart (semarize-api.md section 3): a create has a
budget of attempts; tracking has none beyond the record's deadline. Both wait for the
`ApiGate` (circuit breaker, halt), and the deadline runs on the gate's healthy clock, so an
outage or a halt never turns records into dead letters.

With webhooks on, the tracker watches its run in the `CompletionRegistry` and polls only
after `webhooks.poll_fallback_seconds` (then with the usual backoff): a completion event
finishes the run at once (a thin one after a single GET), and a lost one costs latency only.
The tracker returns once, so a run finished by a poll and then by a late webhook (or the
reverse) gives one outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from connector import metrics
from connector.records import DeadLetterContext, DeadLetterKind, RunRequest, SourceRecord
from connector.semarize.client import TERMINAL_STATUSES, ApiResult, SemarizeClient
from connector.semarize.errors import (
    HaltError,
    RateLimited,
    RecordRejected,
    RetryableError,
    SemarizeError,
)
from connector.semarize.retry import AdaptiveLimit, ApiGate, Backoff
from connector.webhooks import Completion, CompletionRegistry

log = logging.getLogger("connector.tracker")

# While the circuit is open, runs are still tracked, but at this slower pace.
_OPEN_CIRCUIT_POLL_SECONDS = 5.0
_GET_NOT_FOUND_TRIES = 3
_FIRST_POLL_MARGIN = 1.02
_NEAR_MISS_MIN_SECONDS = 0.05


@dataclass(slots=True)
class Succeeded:
    run: dict[str, Any]
    submitted_at: float
    completed_at: float
    noticed: float  # perf_counter when the terminal state was seen
    polls: int


@dataclass(slots=True)
class DeadLettered:
    why: DeadLetterContext
    noticed: float


Outcome = Succeeded | DeadLettered


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    deadline_seconds: float
    max_create_attempts: int
    poll_initial_seconds: float
    poll_max_seconds: float
    retry_max_seconds: float
    # With webhooks: the first poll of a watched run waits at least this long.
    webhook_fallback_seconds: float = 300.0


class DurationEstimator:
    """Recent run durations, to time the first poll when the API gives no Retry-After."""

    def __init__(self, size: int = 64) -> None:
        self._recent: deque[float] = deque(maxlen=size)
        self._sorted_cache: float | None = None

    def observe(self, seconds: float) -> None:
        self._recent.append(seconds)
        self._sorted_cache = None

    def median(self) -> float | None:
        if not self._recent:
            return None
        if self._sorted_cache is None:
            ordered = sorted(self._recent)
            self._sorted_cache = ordered[len(ordered) // 2]
        return self._sorted_cache


class RunTracker:
    def __init__(
        self,
        client: SemarizeClient,
        gate: ApiGate,
        settings: TrackerSettings,
        *,
        create_backoff: Backoff | None = None,
        poll_backoff: Backoff | None = None,
        adaptive: AdaptiveLimit | None = None,
        completions: CompletionRegistry | None = None,
    ) -> None:
        self._adaptive = adaptive
        self._completions = completions
        self._client = client
        self._gate = gate
        self._s = settings
        self._create_backoff = create_backoff or Backoff(
            initial=0.5, maximum=settings.retry_max_seconds
        )
        self._poll_backoff = poll_backoff or Backoff(
            initial=0.5, maximum=settings.retry_max_seconds
        )
        self.durations = DurationEstimator()

    async def track(self, record: SourceRecord, request: RunRequest, started: float) -> Outcome:
        """Drive one record to a terminal outcome. `started` is on the gate's healthy clock."""
        created = await self._create(record, request, started)
        if isinstance(created, DeadLettered):
            return created
        result, submitted_at, create_mono = created
        body = result.body
        run_id = str(body.get("run_id", ""))
        request.body = None  # the run exists: the transcript is no longer needed
        # Only a 200 carries the run detail (sync mode); a 202 is a receipt: track the run.
        if result.status == 200 and body.get("status") in TERMINAL_STATUSES:
            return self._terminal(body, request, submitted_at, create_mono, polls=0, via="create")
        registry = self._completions
        if registry is None or not run_id:
            return await self._poll(
                record, request, run_id, started, submitted_at, create_mono, result, None
            )
        waiter = registry.watch(run_id)
        try:
            return await self._poll(
                record, request, run_id, started, submitted_at, create_mono, result, waiter
            )
        finally:
            registry.unwatch(run_id, waiter)

    # --- create --------------------------------------------------------------------------
    async def _create(
        self, record: SourceRecord, request: RunRequest, started: float
    ) -> tuple[ApiResult, float, float] | DeadLettered:
        gate = self._gate
        attempts = 0
        last_error: SemarizeError | None = None
        while True:
            await gate.wait_until_usable(create=True)
            if self._expired(started):
                return self._dead(
                    "deadline_exceeded",
                    request,
                    "deadline passed before a run was created",
                    last_error,
                    attempts,
                )
            attempts += 1
            # A half-open probe (or a halt's trial) tests the API, not the record: its
            # failure costs the record no attempt.
            probing = not gate.healthy
            submitted_at = time.time()
            try:
                assert request.body is not None
                result = await self._client.create_run(
                    request.body,
                    idempotency_key=request.idempotency_key,
                    record_chose_kit=request.kit_from_event,
                )
            except RetryableError as exc:
                gate.create_answered()
                gate.record_failure()
                last_error = exc
                if probing:
                    attempts -= 1
                if isinstance(exc, RateLimited) and self._adaptive is not None:
                    self._adaptive.rate_limited(exc.retry_after)
                if attempts >= self._s.max_create_attempts and gate.healthy:
                    return self._dead(
                        "retries_exhausted",
                        request,
                        f"run not created after {attempts} attempts: {exc}",
                        exc,
                        attempts,
                    )
                metrics.RETRIES.labels(route="create", reason=exc.reason).inc()
                await asyncio.sleep(self._create_backoff.delay(attempts, exc.retry_after))
                continue
            except HaltError as exc:
                gate.halt(exc)
                attempts -= 1  # a halt is not the record's fault: it costs no attempt
                continue
            except RecordRejected as exc:
                gate.create_answered()
                gate.probe_finished()
                gate.record_success()  # the API answered: it is up
                return self._dead(
                    "request_rejected", request, f"the API rejected the run: {exc}", exc, attempts
                )
            gate.create_answered()
            gate.record_success()
            if self._adaptive is not None:
                self._adaptive.succeeded(time.perf_counter() - result.sent_at)
            metrics.RUNS_CREATED.inc()
            request.create_request_id = result.request_id
            # Polls are timed from the answer: the run started somewhere between the send
            # and the answer, and under a burst the API takes creates in late; timed from
            # the send, the first poll of a late-started run comes too early and then waits
            # out the GET's Retry-After (measured at 1,000 in flight: +1 s per run).
            return result, submitted_at, time.perf_counter()

    # --- track ---------------------------------------------------------------------------
    async def _poll(
        self,
        record: SourceRecord,
        request: RunRequest,
        run_id: str,
        started: float,
        submitted_at: float,
        create_mono: float,
        created: ApiResult,
        waiter: asyncio.Future[Completion] | None,
    ) -> Outcome:
        gate = self._gate
        delay = self._first_delay(created.retry_after, time.perf_counter() - create_mono)
        if waiter is not None and created.body.get("status") not in TERMINAL_STATUSES:
            # Wait for the webhook; poll only when none came (a receipt already saying
            # terminal is a replayed key of a finished run: read it at once).
            delay = max(delay, self._s.webhook_fallback_seconds)
        polls = 0
        failures = 0
        not_found = 0
        via = "poll"
        last_error: SemarizeError | None = None
        while True:
            if not gate.healthy:
                delay = max(delay, _OPEN_CIRCUIT_POLL_SECONDS)
            if waiter is None:
                await asyncio.sleep(delay)
            else:
                completion = await _wait_for(waiter, delay)
                if completion is not None or waiter.done():
                    waiter = None  # used up: from now on, plain polling
                if completion is not None and completion.complete:
                    return self._terminal(
                        completion.data, request, submitted_at, create_mono, polls, via="webhook"
                    )
                if completion is not None:
                    via = "webhook"  # a thin event (no output): the run is terminal, GET it now
            if gate.halt_error is not None:
                await gate.wait_until_usable()
            if self._expired(started):
                return self._dead(
                    "deadline_exceeded",
                    request,
                    f"run {run_id} not terminal within run.deadline_seconds",
                    last_error,
                    None,
                    run_id=run_id,
                )
            polls += 1
            try:
                result = await self._client.get_run(run_id)
            except RetryableError as exc:
                gate.record_failure()
                if isinstance(exc, RateLimited) and self._adaptive is not None:
                    self._adaptive.rate_limited(exc.retry_after)
                failures += 1
                last_error = exc
                metrics.RETRIES.labels(route="get", reason=exc.reason).inc()
                delay = self._poll_backoff.delay(failures, exc.retry_after)
                continue
            except HaltError as exc:
                gate.halt(exc)
                continue
            except RecordRejected as exc:
                gate.record_success()
                not_found += 1
                last_error = exc
                if not_found >= _GET_NOT_FOUND_TRIES:
                    return self._dead(
                        "request_rejected",
                        request,
                        f"run {run_id} cannot be read: {exc}",
                        exc,
                        None,
                        run_id=run_id,
                    )
                delay = self._poll_backoff.delay(not_found)
                continue
            gate.record_success()
            failures = 0
            body = result.body
            if body.get("status") in TERMINAL_STATUSES:
                return self._terminal(body, request, submitted_at, create_mono, polls, via=via)
            delay = self._next_delay(result.retry_after, create_mono, polls)

    def _first_delay(self, retry_after: float | None, since_sent: float = 0.0) -> float:
        estimate = self.durations.median()
        if estimate is None:
            delay = self._s.poll_initial_seconds
        else:
            # Just after the typical run ends: a poll too early costs a GET and a later one
            # (a run this old grows its poll interval), one too late costs latency.
            delay = max(0.0, estimate * _FIRST_POLL_MARGIN - since_sent)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self._s.poll_max_seconds)

    def _next_delay(self, retry_after: float | None, create_mono: float, polls: int) -> float:
        age = time.perf_counter() - create_mono
        estimate = self.durations.median()
        if polls == 1 and estimate is not None and age < estimate * 1.5:
            # The first poll, timed on the typical duration, just missed the end: the run is
            # most likely about to finish.
            delay = max(_NEAR_MISS_MIN_SECONDS, estimate * 0.1)
        else:
            # Grow with the run's age (a run this old is a long one: exponential, x1.25 a
            # poll), jittered, within [initial, max].
            delay = self._poll_backoff.spread(age * 0.25)
            delay = min(self._s.poll_max_seconds, max(self._s.poll_initial_seconds, delay))
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def _terminal(
        self,
        body: dict[str, Any],
        request: RunRequest,
        submitted_at: float,
        create_mono: float,
        polls: int,
        via: str = "poll",
    ) -> Outcome:
        noticed = time.perf_counter()
        metrics.series(metrics.COMPLETIONS_NOTICED, via).inc()
        status = body.get("status")
        run_id = str(body.get("run_id", ""))
        duration_ms = body.get("duration_ms")
        if isinstance(duration_ms, int | float) and duration_ms >= 0:
            seconds = duration_ms / 1000
            metrics.RUN_DURATION.observe(seconds)
            self.durations.observe(seconds)
            metrics.COMPLETION_NOTICE_DELAY.observe(max(0.0, noticed - create_mono - seconds))
        metrics.POLLS_PER_RUN.observe(polls)
        if status == "succeeded":
            return Succeeded(body, submitted_at, time.time(), noticed, polls)
        kind: DeadLetterKind = "run_failed" if status == "failed" else "run_cancelled"
        return DeadLettered(
            DeadLetterContext(
                kind=kind,
                message=f"run {run_id} {status}"
                + (f": {body['error_code']}" if body.get("error_code") else ""),
                event_id=request.event_id,
                run_id=run_id,
                error_code=_text(body.get("error_code")),
                error_message=_text(body.get("error_message")),
                error_user_message=_text(body.get("error_user_message")),
            ),
            noticed,
        )

    def _expired(self, started: float) -> bool:
        return self._gate.healthy_clock() - started > self._s.deadline_seconds

    @staticmethod
    def _dead(
        kind: DeadLetterKind,
        request: RunRequest,
        message: str,
        error: SemarizeError | None,
        attempts: int | None,
        *,
        run_id: str | None = None,
    ) -> DeadLettered:
        return DeadLettered(
            DeadLetterContext(
                kind=kind,
                message=message,
                event_id=request.event_id,
                run_id=run_id,
                error_code=error.error_code if error else None,
                error_message=str(error) if error else None,
                http_status=error.status if error else None,
                attempts=attempts,
                request_id=getattr(error, "request_id", None) or request.create_request_id,
            ),
            time.perf_counter(),
        )


async def _wait_for(waiter: asyncio.Future[Completion], delay: float) -> Completion | None:
    """Wait up to `delay` for the run's completion event; None when none came."""
    if not waiter.done():
        await asyncio.wait({waiter}, timeout=delay)
    if waiter.done() and not waiter.cancelled():
        return waiter.result()
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
