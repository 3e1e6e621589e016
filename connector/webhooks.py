"""Webhooks: receive signed completion events, route them to the replica tracking the run.

With several replicas behind one Service, a delivery lands on any replica, not on the one
tracking its run. So the receiver does not complete anything itself:

    Semarize ──POST──► WebhookReceiver (any replica): size limit, verify the signature,
                        parse, dedupe, publish to the completions topic (key = run id),
                        answer 2xx only once the broker acknowledged
    completions topic ─► CompletionsReader (every replica, every partition, no group)
                        ─► CompletionRegistry (on the loop) ─► the waiting RunTracker

The signature check is `verify_signature` (semarize-api.md section 9, a decision of this
project, so it is one swappable function: the receiver takes any `Verifier`). Polling stays
as the safety net: the tracker polls a watched run after `webhooks.poll_fallback_seconds`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

from connector import metrics
from connector.records import Headers

log = logging.getLogger("connector.webhooks")

PATH = "/webhooks/semarize"
SIGNATURE_HEADER = "Semarize-Signature"
EVENT_ID_HEADER = "Semarize-Event-Id"
TOLERANCE_SECONDS = 300.0
MAX_BODY_BYTES = 1024 * 1024
# Answer well inside the provider's 10 s: a slower 2xx counts as a failed delivery anyway.
PUBLISH_TIMEOUT_SECONDS = 8.0
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})

_MAX_SIGNATURE_HEADER = 4096
_MAX_V1 = 16  # more signatures than any rotation needs: refuse rather than compare them all
_MAX_TIMESTAMP_DIGITS = 12


# --- signature ---------------------------------------------------------------------------------
Verifier = Callable[[str, "str | None", bytes, float], bool]


def verify_signature(
    secret: str,
    header: str | None,
    body: bytes,
    now: float,
    tolerance: float = TOLERANCE_SECONDS,
) -> bool:
    """True when `header` signs `body` with `secret` (semarize-api.md section 9).

    `Semarize-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`;
    several `v1=` may appear while the provider rotates secrets, and any one matching
    passes. Rejected: no header, no or several `t`, no `v1`, `|now - t| > tolerance`.
    Comparisons are constant-time (`hmac.compare_digest`), over bytes.
    """
    if not secret or not header or len(header) > _MAX_SIGNATURE_HEADER:
        return False
    timestamp: str | None = None
    candidates: list[bytes] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        name, value = name.strip(), value.strip()
        if name == "t":
            if timestamp is not None:
                return False  # two timestamps: which one was signed?
            timestamp = value
        elif name == "v1" and value:
            candidates.append(value.encode("utf-8", "replace").lower())
    if timestamp is None or not candidates or len(candidates) > _MAX_V1:
        return False
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > _MAX_TIMESTAMP_DIGITS:
        return False
    if abs(now - int(timestamp)) > tolerance:
        return False
    expected = (
        hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
        .hexdigest()
        .encode()
    )
    matched = False
    for candidate in candidates:  # no early exit: every candidate costs the same
        matched |= hmac.compare_digest(expected, candidate)
    return matched


# --- the events ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Completion:
    """A terminal run event: the run id, its status and the run detail (`data`)."""

    run_id: str
    status: str
    data: dict[str, Any]

    @property
    def complete(self) -> bool:
        """True when `data` can finish the run with no GET (a thin success cannot)."""
        return self.status != "succeeded" or isinstance(self.data.get("output"), dict)

    def thin(self) -> Completion:
        if "output" not in self.data:
            return self
        return Completion(
            self.run_id, self.status, {k: v for k, v in self.data.items() if k != "output"}
        )


def completion_from_event(event: Any) -> Completion | None:
    """The completion an event envelope carries, or None (not a terminal run event)."""
    if not isinstance(event, dict):
        return None
    data = event.get("data")
    if not isinstance(data, dict):
        return None
    run_id = data.get("run_id")
    if not isinstance(run_id, str) or not run_id:
        return None
    status = data.get("status")
    kind = event.get("type")
    if status is None and isinstance(kind, str) and kind.startswith("run."):
        status = kind[4:]
    if status not in TERMINAL:
        return None
    return Completion(run_id, status, data)


def parse_completion(value: bytes | None) -> Completion | None:
    if not value:
        return None
    try:
        return completion_from_event(orjson.loads(value))
    except orjson.JSONDecodeError:
        return None


# --- dedupe ------------------------------------------------------------------------------------
class SeenEvents:
    """Event ids seen recently: bounded (oldest forgotten first) and each kept `ttl` seconds."""

    def __init__(
        self, ttl: float, max_size: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._max = max_size
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        self._purge()
        return event_id in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, event_id: str) -> None:
        self._seen[event_id] = self._clock() + self._ttl
        self._seen.move_to_end(event_id)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)

    def _purge(self) -> None:
        now = self._clock()
        while self._seen:
            oldest, expiry = next(iter(self._seen.items()))
            if expiry > now:
                return
            del self._seen[oldest]


# --- the registry (event loop) ------------------------------------------------------------------
class CompletionRegistry:
    """Runs this replica tracks, matched with the completions every replica reads.

    `watch(run_id)` gives a future resolved with the run's `Completion`; `deliver` resolves
    the waiters of a run, and keeps every completion (thin: without its output) for
    `keep_seconds`, so a run watched later (taken over after a rebalance, or created after
    its webhook came) is matched too; such a match carries no output, so it costs one GET.
    Bounded: at most `max_pending` kept, the oldest evicted first. Loop thread only.
    """

    def __init__(
        self,
        keep_seconds: float,
        max_pending: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keep = keep_seconds
        self._max = max_pending
        self._clock = clock
        self._waiters: dict[str, set[asyncio.Future[Completion]]] = {}
        self._pending: OrderedDict[str, tuple[float, Completion]] = OrderedDict()
        metrics.WEBHOOK_PENDING.set(0)

    @property
    def watched(self) -> int:
        return len(self._waiters)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def watch(self, run_id: str) -> asyncio.Future[Completion]:
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        self._purge()
        kept = self._pending.get(run_id)
        if kept is not None:
            future.set_result(kept[1])
            metrics.WEBHOOK_COMPLETIONS.labels(result="matched_pending").inc()
        self._waiters.setdefault(run_id, set()).add(future)
        return future

    def unwatch(self, run_id: str, future: asyncio.Future[Completion]) -> None:
        waiters = self._waiters.get(run_id)
        if waiters is None:
            return
        waiters.discard(future)
        if not waiters:
            del self._waiters[run_id]
        if not future.done():
            future.cancel()

    def deliver(self, completion: Completion) -> str:
        """Resolve the run's waiters and keep the completion; returns the result counted."""
        waiting = [f for f in self._waiters.get(completion.run_id, ()) if not f.done()]
        for future in waiting:
            future.set_result(completion)
        if waiting:
            result = "matched"
        elif completion.run_id in self._waiters or completion.run_id in self._pending:
            result = "duplicate"
        else:
            result = "unmatched"
        self._keep_completion(completion.thin())
        metrics.WEBHOOK_COMPLETIONS.labels(result=result).inc()
        return result

    def deliver_many(self, completions: list[Completion]) -> None:
        for completion in completions:
            self.deliver(completion)
        self._purge()

    def _keep_completion(self, completion: Completion) -> None:
        pending = self._pending
        pending[completion.run_id] = (self._clock() + self._keep, completion)
        pending.move_to_end(completion.run_id)
        while len(pending) > self._max:
            pending.popitem(last=False)
            metrics.WEBHOOK_COMPLETIONS.labels(result="evicted").inc()
        metrics.WEBHOOK_PENDING.set(len(pending))

    def _purge(self) -> None:
        now = self._clock()
        pending = self._pending
        while pending:
            run_id, (expiry, _) = next(iter(pending.items()))
            if expiry > now:
                break
            del pending[run_id]
        metrics.WEBHOOK_PENDING.set(len(pending))


# --- the receiver (HTTP) -------------------------------------------------------------------------
Publish = Callable[[bytes, bytes, Headers], Awaitable[None]]


class WebhookReceiver:
    """The public endpoint: `POST /webhooks/semarize`, on its own port.

    Order of checks: size (413) -> signature over the raw bytes (401, no detail) -> JSON
    (400) -> dedupe on the event id (200) -> publish to the completions topic, keyed by run
    id, and answer 200 only once the broker acknowledged it (503 otherwise, so the provider
    delivers again). A verified event that is not a terminal run event is acknowledged and
    dropped (`ignored`).
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        secret: str,
        publish: Publish,
        verifier: Verifier = verify_signature,
        clock: Callable[[], float] = time.time,
        max_body_bytes: int = MAX_BODY_BYTES,
        publish_timeout: float = PUBLISH_TIMEOUT_SECONDS,
        seen: SeenEvents | None = None,
    ) -> None:
        self._secret = secret
        self._publish = publish
        self._verifier = verifier
        self._clock = clock
        self._max_body = max_body_bytes
        self._publish_timeout = publish_timeout
        # Retries of one event come minutes apart; a captured delivery replays only within
        # the signature tolerance. An hour covers both; a forgotten id costs a duplicate
        # completion, which the registry absorbs.
        self.seen = seen or SeenEvents(ttl=3600.0, max_size=100_000)
        self.app = web.Application(client_max_size=max_body_bytes)
        self.app.router.add_post(PATH, self.handle)
        self._runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, shutdown_timeout=5.0
        )
        self._host = host
        self._port = port
        self.port: int | None = None
        self._started = False

    async def start(self) -> None:
        await self._runner.setup()
        self._started = True
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        length = request.content_length
        if length is not None and length > self._max_body:
            return _answer("too_large", 413)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _answer("too_large", 413)
        header = request.headers.get(SIGNATURE_HEADER)
        if not self._verifier(self._secret, header, body, self._clock()):
            return _answer("bad_signature", 401)
        # Verified: only now is the body parsed.
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _answer("malformed", 400)
        if not isinstance(event, dict):
            return _answer("malformed", 400)
        event_id = event.get("id")
        if not isinstance(event_id, str) or not event_id:
            # The body is signed, the header is not: prefer the body's id.
            event_id = request.headers.get(EVENT_ID_HEADER, "")[:200]
        if event_id and event_id in self.seen:
            return _answer("duplicate", 200)
        completion = completion_from_event(event)
        if completion is None:
            return _answer("ignored", 200)
        headers: Headers = [("semarize.run_id", completion.run_id.encode())]
        if event_id:
            headers.append(("semarize.event_id", event_id.encode()))
        try:
            await asyncio.wait_for(
                self._publish(completion.run_id.encode(), body, headers), self._publish_timeout
            )
        except Exception as exc:  # the broker did not take it: the provider will retry
            log.warning(
                "webhook not acknowledged: the completion could not be published: %s",
                exc,
                extra={"run_id": completion.run_id, "event_id": event_id},
            )
            return _answer("publish_failed", 503)
        if event_id:
            self.seen.add(event_id)  # only once published: a failed publish is retried
        return _answer("accepted", 200)


def _answer(result: str, status: int) -> web.Response:
    metrics.WEBHOOK_DELIVERIES.labels(result=result).inc()
    return web.Response(status=status)


# --- the reader (its own thread) ------------------------------------------------------------------
_BATCH = 500
_REFRESH_SECONDS = 30.0


def reader_config(
    *,
    bootstrap_servers: str,
    group_id: str,
    instance_id: str,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """A consumer that joins no group: it assigns itself every partition and never commits.

    librdkafka requires a `group.id`; a per-instance one that is never used for a commit
    leaves nothing on the broker. The consumer's extra settings (security) apply too.
    """
    group_keys = ("group.", "partition.assignment.strategy")
    config: dict[str, Any] = {k: v for k, v in extra.items() if not k.startswith(group_keys)}
    config.update(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"{group_id}.completions.{instance_id}",
            "client.id": f"{instance_id}.completions",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "latest",
        }
    )
    return config


class CompletionsReader:
    """Reads every partition of the completions topic, from `lookback_seconds` ago on.

    Thread contract (as KafkaSource): the Consumer is created here and used only by the
    reader's own thread; the loop gets each batch of parsed completions in one
    `call_soon_threadsafe(on_completions, batch)`. Partitions added to the topic later are
    picked up within 30 s.
    """

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        *,
        lookback_seconds: float,
        on_completions: Callable[[list[Completion]], None],
    ) -> None:
        self._consumer = Consumer({**config, "logger": logging.getLogger("librdkafka.consumer")})
        self._topic = topic
        self._lookback = lookback_seconds
        self._on_completions = on_completions
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._assigned: set[int] = set()
        self._last_logged: dict[int, float] = {}
        self.closed = threading.Event()
        self.ready = threading.Event()  # every partition assigned at its start offset
        self.read_total = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="kafka-completions", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def partitions(self) -> int:
        return len(self._assigned)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        consumer = self._consumer
        try:
            start_ms = int((time.time() - self._lookback) * 1000)
            while not self._stop.is_set() and not self._assign_new(start_ms):
                self._stop.wait(2.0)
            self.ready.set()
            refreshed = time.monotonic()
            while not self._stop.is_set():
                messages = consumer.consume(_BATCH, 0.2)
                if messages:
                    self._deliver(messages)
                if time.monotonic() - refreshed >= _REFRESH_SECONDS:
                    refreshed = time.monotonic()
                    self._assign_new(None)
        except Exception:
            log.exception("completions reader failed")
            raise
        finally:
            try:
                consumer.close()
            except Exception:
                log.exception("closing the completions reader failed")
            self.closed.set()

    def _assign_new(self, start_ms: int | None) -> bool:
        """Assign partitions not assigned yet: at `start_ms` (first time) or their start."""
        consumer = self._consumer
        try:
            metadata = consumer.list_topics(self._topic, timeout=5)
            topic = metadata.topics.get(self._topic)
            if topic is None or topic.error is not None:
                self._warn(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, self._topic))
                return False
            new = sorted(set(topic.partitions) - self._assigned)
            if not new:
                return True
            if start_ms is None:
                wanted = [TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in new]
            else:
                asked = [TopicPartition(self._topic, p, start_ms) for p in new]
                found = consumer.offsets_for_times(asked, timeout=10)
                # No record since then: start at the end (-1 from offsets_for_times).
                wanted = [
                    TopicPartition(self._topic, tp.partition, _or_end(tp.offset)) for tp in found
                ]
            consumer.incremental_assign(wanted)
        except Exception as exc:  # KafkaException: broker not reachable yet; try again
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error is not None:
                self._warn(error)
            else:
                log.warning("completions reader: cannot assign partitions: %s", exc)
            return False
        self._assigned.update(new)
        log.info(
            "completions reader assigned",
            extra={"topic": self._topic, "partitions": ",".join(map(str, new))},
        )
        return True

    def _deliver(self, messages: list[Any]) -> None:
        batch: list[Completion] = []
        for message in messages:
            error = message.error()
            if error is not None:
                self._warn(error)
                continue
            completion = parse_completion(message.value())
            if completion is not None:
                batch.append(completion)
        self.read_total += len(messages)
        if batch and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._on_completions, batch)
            except RuntimeError:
                self._stop.set()  # the loop is closed: shutting down

    def _warn(self, error: KafkaError) -> None:
        code = error.code()
        now = time.monotonic()
        if now - self._last_logged.get(code, -1e9) >= 30:
            self._last_logged[code] = now
            log.warning("completions reader: %s", error.str())


def _or_end(offset: int) -> int:
    return offset if offset >= 0 else OFFSET_END
