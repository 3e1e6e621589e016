"""The consumer: a thread that owns the confluent-kafka Consumer.

It fetches only as many records as the pipeline has room for, pauses every partition while
the pipeline is full or the API is unusable (and keeps polling, so the group membership
stays alive), and runs the rebalance callbacks. On revoke it asks the event loop to hand
over the revoked partitions (finish what can finish within a budget, give back their
committable offsets) and commits those synchronously before the partitions move.

Thread contract: the loop talks to this thread only through `PauseControl` (flags read
here), `capacity` (a counter both sides update under a lock) and `call()` (a function run on
this thread between two polls: confluent-kafka's Consumer blocks a second thread that calls
it while `consume()` runs). Everything that touches the Consumer happens on this thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import orjson
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, TopicPartition

from connector import metrics
from connector.records import SourceRecord

log = logging.getLogger("connector.kafka_source")

TP = tuple[str, int]
_BATCH = 500


class Capacity:
    """Records the pipeline may still take: max_in_flight minus those held (thread-safe)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            self._held += n

    def release(self, n: int) -> None:
        if n:
            with self._lock:
                self._held -= n

    @property
    def held(self) -> int:
        return self._held

    @property
    def available(self) -> int:
        return self.limit - self._held

    @property
    def resume_at(self) -> int:
        """Free slots a full pipeline needs before fetching again (a tenth: no flapping)."""
        return max(1, self.limit // 10)

    @property
    def starved(self) -> bool:
        """Fewer free slots than `resume_at`: records wait for slots only a commit frees."""
        return self.available < self.resume_at


class PauseControl:
    """Why consumption is paused: global reasons (pause everything) and per partition."""

    def __init__(self) -> None:
        self.global_reasons: set[str] = set()
        self.partition_reasons: dict[tuple[str, int], set[str]] = {}
        self._lock = threading.Lock()
        self.version = 0

    def mark(self, reason: str, on: bool, tp: TP | None = None) -> None:
        with self._lock:
            if tp is None:
                target = self.global_reasons
            else:
                target = self.partition_reasons.setdefault(tp, set())
            if on and reason not in target:
                target.add(reason)
                self.version += 1
            elif not on and reason in target:
                target.discard(reason)
                self.version += 1

    def forget_partition(self, tp: TP) -> None:
        """The partition left this process: its reasons go with it."""
        with self._lock:
            if self.partition_reasons.pop(tp, None):
                self.version += 1

    def snapshot(self) -> tuple[bool, set[tuple[str, int]]]:
        with self._lock:
            return bool(self.global_reasons), {
                tp for tp, reasons in self.partition_reasons.items() if reasons
            }


RevokeHandler = Callable[[list[TP], bool], Coroutine[Any, Any, dict[TP, int]]]


def consumer_config(
    *,
    bootstrap_servers: str,
    group_id: str,
    auto_offset_reset: str,
    client_id: str,
    extra: Mapping[str, Any],
    exactly_once: bool,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "group.id": group_id,
        "client.id": client_id,
        "auto.offset.reset": auto_offset_reset,
        # Incremental rebalancing: only moved partitions stop (docs/architecture.md).
        "partition.assignment.strategy": "cooperative-sticky",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "statistics.interval.ms": 5000,
        "session.timeout.ms": 45000,
        "max.poll.interval.ms": 300000,
        "fetch.max.bytes": 52428800,
        # One fetch in flight per broker: a partition resumed while a fetch for caught-up
        # partitions waits at the broker joins only the next one (default wait 500 ms).
        "fetch.wait.max.ms": 100,
    }
    if exactly_once:
        config["isolation.level"] = "read_committed"
    config.update(extra)
    return config


class KafkaSource:
    def __init__(
        self,
        config: dict[str, Any],
        topics: list[str],
        *,
        capacity: Capacity,
        pauses: PauseControl,
        on_records: Callable[[list[SourceRecord]], None],
        on_assign: Callable[[list[TP]], None],
        on_revoke: RevokeHandler,
        on_commit: Callable[[list[tuple[TP, int]], bool], None],
        revoke_budget: float,
    ) -> None:
        config = dict(config)
        config["error_cb"] = self._on_error
        config["stats_cb"] = self._on_stats
        config["on_commit"] = self._on_commit
        config["logger"] = logging.getLogger("librdkafka.consumer")
        self._consumer = Consumer(config)
        self._topics = topics
        self.capacity = capacity
        self.pauses = pauses
        self._on_records = on_records
        self._on_assign_cb = on_assign
        self._on_revoke_cb = on_revoke
        self._on_commit_cb = on_commit
        self._revoke_budget = revoke_budget
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._assigned: set[TP] = set()
        self._paused: set[TP] = set()
        self._next_offsets: dict[TP, int] = {}  # per partition: the first not handed over
        self._full = False
        self.broker_up = False
        self.last_broker_error: str | None = None
        self.fatal_error: KafkaError | None = None
        self.lag: dict[TP, tuple[int, int]] = {}  # tp -> (consumer lag, high watermark)
        self.closed = threading.Event()
        self._last_logged: dict[int, float] = {}
        self._group_metadata: Any = None
        self._calls: queue.SimpleQueue[
            tuple[Callable[[Consumer], Any], concurrent.futures.Future[Any]]
        ] = queue.SimpleQueue()

    # --- lifecycle -----------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="kafka-consumer", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def assigned(self) -> set[TP]:
        return set(self._assigned)

    def stop(self) -> None:
        """Leave the poll loop and close the consumer (revoking everything) on its thread."""
        self._stop.set()

    def call(self, fn: Callable[[Consumer], Any]) -> concurrent.futures.Future[Any]:
        """Run `fn(consumer)` on the consumer thread between two polls."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._calls.put((fn, future))
        return future

    def commit(self, offsets: list[tuple[TP, int]]) -> None:
        """Asynchronous commit, from any thread; the result comes back through on_commit."""
        if not offsets:
            return
        partitions = [TopicPartition(t, p, o) for (t, p), o in offsets]

        def commit(consumer: Consumer) -> None:
            owned = [tp for tp in partitions if (tp.topic, tp.partition) in self._assigned]
            if owned:  # never commit a partition this process no longer owns
                consumer.commit(offsets=owned, asynchronous=True)

        self.call(commit)

    def _run_calls(self) -> None:
        while True:
            try:
                fn, future = self._calls.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(self._consumer))
            except Exception as exc:
                future.set_exception(exc)

    @property
    def group_metadata(self) -> Any:
        """The group metadata of the current generation, refreshed at every rebalance."""
        return self._group_metadata

    # --- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        consumer = self._consumer
        consumer.subscribe(
            self._topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        try:
            while not self._stop.is_set():
                self._step()
        except Exception:
            log.exception("consumer thread failed")
            raise
        finally:
            self._run_calls()
            try:
                consumer.close()  # revokes every partition through _on_revoke
            except Exception:
                log.exception("closing the consumer failed")
            self.closed.set()

    def _step(self) -> None:
        """One turn: run queued calls, apply pauses, fetch only what fits."""
        consumer = self._consumer
        self._run_calls()
        self._apply_pauses()
        room = self.capacity.available
        if room <= 0 or self._all_paused():
            # Full: the commit that frees slots is queued for this thread and confirmed in a
            # callback here, so turn quickly; otherwise a slower turn keeps idle CPU low.
            message = consumer.poll(0.01 if self._full else 0.05)  # callbacks, membership
            if message is not None:
                self._give_back([message])
            return
        messages = consumer.consume(min(room, _BATCH), 0.05)
        if messages:
            self._deliver(messages)

    def _deliver(self, messages: list[Any]) -> None:
        records: list[SourceRecord] = []
        stale = []
        for message in messages:
            error = message.error()
            if error is not None:
                self._on_error(error)
                continue
            tp = (message.topic(), message.partition())
            if tp in self._paused:
                stale.append(message)  # fetched before the pause took effect: refetch later
                continue
            _, timestamp = message.timestamp()
            self._next_offsets[tp] = message.offset() + 1
            records.append(
                SourceRecord(
                    tp[0],
                    tp[1],
                    message.offset(),
                    timestamp if timestamp > 0 else None,
                    message.key(),
                    message.value(),
                    message.headers(),
                )
            )
        if stale:
            self._give_back(stale)
        if records:
            self.broker_up = True
            self.capacity.take(len(records))
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._on_records, records)

    def _give_back(self, messages: list[Any]) -> None:
        """Rewind to the first offset we did not hand over, per partition."""
        first: dict[TP, int] = {}
        for message in messages:
            if message.error() is None:
                tp = (message.topic(), message.partition())
                first.setdefault(tp, message.offset())
        for (topic, partition), offset in first.items():
            if (topic, partition) in self._assigned:
                self._consumer.seek(TopicPartition(topic, partition, offset))

    def _all_paused(self) -> bool:
        return bool(self._assigned) and self._paused >= self._assigned

    def _apply_pauses(self) -> None:
        room = self.capacity.available
        if room <= 0:
            self._full = True
        elif self._full and room >= self.capacity.resume_at:
            self._full = False
        pause_all, per_partition = self.pauses.snapshot()
        wanted = set(self._assigned) if self._full or pause_all else per_partition & self._assigned
        if wanted == self._paused:
            return
        to_pause = wanted - self._paused
        to_resume = self._paused - wanted
        if to_pause:
            self._consumer.pause([TopicPartition(t, p) for t, p in to_pause])
        if to_resume:
            self._consumer.resume([TopicPartition(t, p) for t, p in to_resume])
            # A seek to where the partition stands wakes librdkafka's broker thread, which
            # would otherwise start fetching the resumed partition only at its next wake-up
            # (measured: about 0.5 s of idle slots after every pause).
            for tp in to_resume:
                offset = self._next_offsets.get(tp)
                if offset is not None:
                    self._consumer.seek(TopicPartition(tp[0], tp[1], offset))
        self._paused = wanted
        metrics.PAUSED_PARTITIONS.set(len(wanted))

    # --- rebalance callbacks (on this thread, inside poll) --------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(tp.topic, tp.partition) for tp in partitions]
        if partitions:
            consumer.incremental_assign(partitions)
            # librdkafka keeps a partition's pause flag across a revoke or loss; a partition
            # paused when it left would come back paused while our books say it runs.
            consumer.resume(partitions)
        self._assigned.update(tps)
        self._group_metadata = consumer.consumer_group_metadata()
        log.info("partitions assigned", extra={"partitions": _names(tps)})
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._on_assign_cb, tps)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The generation that still owns these partitions: their last transaction uses it.
        self._group_metadata = consumer.consumer_group_metadata()
        self._hand_over([(tp.topic, tp.partition) for tp in partitions], lost=False)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._hand_over([(tp.topic, tp.partition) for tp in partitions], lost=True)

    def _hand_over(self, tps: list[TP], *, lost: bool) -> None:
        log.info(
            "partitions lost" if lost else "partitions revoked", extra={"partitions": _names(tps)}
        )
        assert self._loop is not None
        offsets: dict[TP, int] = {}
        try:
            future = asyncio.run_coroutine_threadsafe(self._on_revoke_cb(tps, lost), self._loop)
            offsets = future.result(timeout=self._revoke_budget + 10)
        except (FutureTimeout, RuntimeError, asyncio.CancelledError):
            log.warning("revoke hand-over did not finish in time; committing nothing for it")
        except Exception:
            log.exception("revoke hand-over failed; committing nothing for it")
        if offsets and not lost:
            try:
                self._consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    asynchronous=False,
                )
                self._report_commit(list(offsets.items()), ok=True)
            except Exception as exc:
                log.warning("commit on revoke failed: %s", exc)
        for tp in tps:
            self._assigned.discard(tp)
            self._paused.discard(tp)
            self.lag.pop(tp, None)
            self._next_offsets.pop(tp, None)
        metrics.PAUSED_PARTITIONS.set(len(self._paused))

    # --- librdkafka callbacks ------------------------------------------------------------
    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        results = [
            ((tp.topic, tp.partition), tp.offset)
            for tp in partitions
            if tp.error is None and tp.offset != OFFSET_INVALID
        ]
        self._report_commit(results, ok=error is None)

    def _report_commit(self, results: list[tuple[TP, int]], ok: bool) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._on_commit_cb, results, ok)

    def _on_error(self, error: KafkaError) -> None:
        code = error.code()
        if error.fatal():
            self.fatal_error = error
            log.error("fatal Kafka consumer error: %s", error.str())
        if code in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE):
            if code == KafkaError._ALL_BROKERS_DOWN:
                self.broker_up = False
            self.last_broker_error = error.str()
        # librdkafka repeats connection errors many times a second: one line per code per 30 s.
        now = time.monotonic()
        if now - self._last_logged.get(code, -1e9) >= 30:
            self._last_logged[code] = now
            log.warning("Kafka consumer: %s", error.str())
        metrics.BROKER_UP.set(1 if self.broker_up else 0)

    def _on_stats(self, raw: str) -> None:
        try:
            stats = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        brokers = stats.get("brokers", {})
        up = any(b.get("state") == "UP" for b in brokers.values() if b.get("nodeid", -1) >= 0)
        self.broker_up = up
        metrics.BROKER_UP.set(1 if up else 0)
        for topic, tdata in stats.get("topics", {}).items():
            for pid, pdata in tdata.get("partitions", {}).items():
                tp = (topic, int(pid))
                if tp not in self._assigned or tp in self._paused:
                    continue  # a paused partition's figures freeze: the app's lag probe has it
                hi = pdata.get("hi_offset", -1)
                lag = pdata.get("consumer_lag", -1)
                committed = pdata.get("committed_offset", -1)
                self.lag[tp] = (lag, hi)
                labels = {"topic": topic, "partition": str(pid)}
                if lag >= 0:
                    metrics.CONSUMER_LAG.labels(**labels).set(lag)
                if hi >= 0 and committed >= 0:
                    metrics.COMMITTABLE_LAG.labels(**labels).set(max(0, hi - committed))


def _names(tps: list[TP]) -> str:
    return ",".join(f"{t}/{p}" for t, p in sorted(tps))
