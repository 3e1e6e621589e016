"""The dispatcher: records in, outcomes written, offsets committed.

Per record, in this order (a newcomer's map of where a record goes next):

1. `on_records` (from the consumer thread): track the offset, start a `_process` task;
2. `_process`: decode (`records.Decoder`); a bad record is an `invalid_input` dead letter;
   otherwise the run tracker (`tracker.RunTracker`) drives the run to a terminal outcome;
3. with `ordering: key`, wait until the previous record of the same key is written;
4. write the output or dead letter (`kafka_sink.KafkaSink`) and wait for the broker's ack;
5. mark the offset finished (`offsets.PartitionOffsets`); the commit task commits every
   partition's committable offset, and a confirmed commit releases the record's slot.

Revocation and shutdown take the same path: stop taking records, let what can finish
finish within a budget, commit, cancel the rest (replayed later with the same idempotency
key, so the same run is resumed, not paid for twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connector import metrics
from connector.kafka_sink import DeliveryFailed, KafkaSink, Message
from connector.kafka_source import TP, Capacity, PauseControl
from connector.offsets import PartitionOffsets
from connector.records import (
    DeadLetterContext,
    Decoder,
    InvalidInput,
    RunRequest,
    SourceRecord,
    dead_letter_headers,
    output_record,
)
from connector.tracker import DeadLettered, Outcome, RunTracker, Succeeded

if TYPE_CHECKING:
    from connector.transactions import TransactionalCheckpointer

log = logging.getLogger("connector.pipeline")

_DELIVERY_RETRY_SECONDS = 1.0
_FULL_CHECK_SECONDS = 0.01


@dataclass(slots=True)
class PartitionWork:
    offsets: PartitionOffsets
    tasks: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    started: dict[int, float] = field(default_factory=dict)  # offset -> monotonic start


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    output_topic: str
    dlq_topic: str
    group_id: str
    instance_id: str
    ordering_by_key: bool
    commit_interval: float


class Pipeline:
    def __init__(
        self,
        settings: PipelineSettings,
        *,
        decoder: Decoder,
        tracker: RunTracker,
        sink: KafkaSink,
        capacity: Capacity,
        pauses: PauseControl,
        healthy_clock: Callable[[], float],
    ) -> None:
        self._s = settings
        self._decoder = decoder
        self._tracker = tracker
        self._sink = sink
        self.capacity = capacity
        self._pauses = pauses
        self._healthy_clock = healthy_clock
        self._transactions: TransactionalCheckpointer | None = None
        self.partitions: dict[TP, PartitionWork] = {}
        self._key_tails: dict[bytes, asyncio.Future[None]] = {}
        self._commit_wanted = asyncio.Event()
        self._commit_in_flight = False
        self._commit_done = asyncio.Event()
        self._commit_fn: Callable[[list[tuple[TP, int]]], None] | None = None
        self.last_record_at = time.monotonic()
        self.finished_total = 0
        self.dead_letters_total = 0
        metrics.IN_FLIGHT_RECORDS.set_function(lambda: capacity.held)
        metrics.OLDEST_IN_FLIGHT_AGE.set_function(self.oldest_age)

    # --- wiring ----------------------------------------------------------------------------
    def bind_commit(self, commit: Callable[[list[tuple[TP, int]]], None]) -> None:
        self._commit_fn = commit

    def use_transactions(self, transactions: TransactionalCheckpointer) -> None:
        """Exactly-once mode: outcomes and offsets are written by transactions."""
        self._transactions = transactions

    def oldest_age(self) -> float:
        now = time.monotonic()
        oldest = min(
            (min(work.started.values()) for work in self.partitions.values() if work.started),
            default=now,
        )
        return now - oldest

    @property
    def unfinished(self) -> int:
        return sum(work.offsets.unfinished for work in self.partitions.values())

    # --- from the consumer thread ------------------------------------------------------------
    def on_assign(self, tps: list[TP]) -> None:
        for tp in tps:
            self.partitions[tp] = PartitionWork(PartitionOffsets(*tp))

    def on_records(self, records: list[SourceRecord]) -> None:
        self.last_record_at = now = time.monotonic()
        started = self._healthy_clock()
        orphans = 0
        for record in records:
            tp = (record.topic, record.partition)
            work = self.partitions.get(tp)
            if work is None or work.offsets.revoked:
                orphans += 1  # arrived after revoke: the new owner reads it again
                continue
            metrics.series(metrics.RECORDS_CONSUMED, record.topic).inc()
            work.offsets.track(record.offset)
            work.started[record.offset] = now
            work.tasks[record.offset] = asyncio.create_task(
                self._process(record, work, started), name=record.coordinates
            )
        self.capacity.release(orphans)

    # --- one record --------------------------------------------------------------------------
    async def _process(self, record: SourceRecord, work: PartitionWork, started: float) -> None:
        tail: asyncio.Future[None] | None = None
        mine: asyncio.Future[None] | None = None
        if self._s.ordering_by_key and record.key is not None:
            tail = self._key_tails.get(record.key)
            mine = asyncio.get_running_loop().create_future()
            self._key_tails[record.key] = mine
        try:
            outcome, message, decoded = await self._resolve(record, started)
            kind = "succeeded" if isinstance(outcome, Succeeded) else outcome.why.kind
            if tail is not None:
                await asyncio.shield(tail)
            if self._transactions is not None:
                # Exactly-once: the checkpointer writes it, in offset order, in a transaction
                # with the offset, and marks the offset finished when that commits.
                await self._transactions.emit(record, work, message)
                self._account(record, work, outcome, kind, decoded)
            else:
                await self._write(record, message)
                self._account(record, work, outcome, kind, decoded)
                if not work.offsets.revoked and work.offsets.finish(record.offset):
                    self._commit_wanted.set()
        finally:
            if mine is not None and record.key is not None:
                mine.set_result(None)
                if self._key_tails.get(record.key) is mine:
                    del self._key_tails[record.key]

    async def _resolve(
        self, record: SourceRecord, started: float
    ) -> tuple[Outcome, Message, RunRequest | InvalidInput | None]:
        """Decode and run one record; the message to write for its outcome."""
        decoded: RunRequest | InvalidInput | None = None
        outcome: Outcome | None = None
        try:
            decoded = self._decoder.decode(record)
            if isinstance(decoded, InvalidInput):
                metrics.DECODE_FAILURES.labels(reason=decoded.reason).inc()
                outcome = DeadLettered(
                    DeadLetterContext(
                        kind="invalid_input", message=decoded.message, event_id=decoded.event_id
                    ),
                    time.perf_counter(),
                )
            else:
                outcome = await self._tracker.track(record, decoded, started)
                if isinstance(outcome, Succeeded):
                    key, value, headers = output_record(
                        record,
                        decoded,
                        outcome.run,
                        submitted_at=outcome.submitted_at,
                        completed_at=outcome.completed_at,
                    )
                    return (
                        outcome,
                        Message(self._s.output_topic, key, value, headers, None),
                        decoded,
                    )
        except Exception as exc:
            # A bug, or an answer the output format cannot carry: a dead letter with the
            # stack trace, never a stalled partition.
            log.exception("record failed unexpectedly", extra=_coords(record))
            run = outcome.run if isinstance(outcome, Succeeded) else None
            outcome = DeadLettered(
                DeadLetterContext(
                    kind="run_failed" if run else "invalid_input",
                    message=f"connector error: {type(exc).__name__}: {exc}",
                    event_id=getattr(decoded, "event_id", None),
                    run_id=str(run.get("run_id")) if run else None,
                    error_code="connector_error",
                    stacktrace=traceback.format_exc(),
                ),
                time.perf_counter(),
            )
        assert isinstance(outcome, DeadLettered)
        headers = dead_letter_headers(
            record, outcome.why, group_id=self._s.group_id, instance_id=self._s.instance_id
        )
        message = Message(self._s.dlq_topic, record.key, record.value, headers, record.timestamp_ms)
        return outcome, message, decoded

    async def _write(self, record: SourceRecord, message: Message) -> None:
        """Produce and wait for the ack; retry until the broker takes it. Never skips."""
        tp = (record.topic, record.partition)
        refused = False
        while True:
            try:
                await self._sink.write(*message)
                if refused:
                    log.info(
                        "the broker took the refused record: partition resumed",
                        extra=_coords(record),
                    )
                    self._pauses.mark("refused", False, tp)
                return
            except DeliveryFailed as exc:
                if exc.permanent:
                    refused = True
                    metrics.DEAD_LETTER_REFUSED.inc()
                    log.error(
                        "the broker refused a record for good; partition halted until fixed",
                        extra=_coords(record) | {"target_topic": message.topic, "error": str(exc)},
                    )
                    self._pauses.mark("refused", True, tp)
                    await asyncio.sleep(30)
                else:
                    log.warning("delivery failed, retrying: %s", exc, extra=_coords(record))
                    await asyncio.sleep(_DELIVERY_RETRY_SECONDS)

    def _account(
        self, record: SourceRecord, work: PartitionWork, outcome: Outcome, kind: str, decoded: Any
    ) -> None:
        """Metrics and the one log line of a finished record."""
        offset = record.offset
        work.tasks.pop(offset, None)
        work.started.pop(offset, None)
        metrics.series(metrics.RECORDS_FINISHED, kind).inc()
        self.finished_total += 1
        if kind != "succeeded":
            self.dead_letters_total += 1
        if record.timestamp_ms:
            metrics.END_TO_END_LATENCY.observe(max(0.0, time.time() - record.timestamp_ms / 1000))
        metrics.NOTICE_TO_OUTPUT.observe(time.perf_counter() - outcome.noticed)
        extra = _coords(record)
        extra["outcome"] = kind
        if isinstance(outcome, Succeeded):
            extra["event_id"] = decoded.event_id
            extra["run_id"] = outcome.run.get("run_id")
            extra["request_id"] = decoded.create_request_id
            extra["polls"] = outcome.polls
            log.info("record finished", extra=extra)
        else:
            why = outcome.why
            extra.update(
                event_id=why.event_id,
                run_id=why.run_id,
                error_code=why.error_code,
                http_status=why.http_status,
                request_id=why.request_id,
                reason=why.message,
            )
            log.info("record dead-lettered", extra=extra)

    # --- committing --------------------------------------------------------------------------
    async def commit_loop(self) -> None:
        """Commit committable offsets as they move: one commit outstanding at a time."""
        while True:
            await self._commit_wanted.wait()
            self._commit_wanted.clear()
            if self.request_commit():
                try:
                    await asyncio.wait_for(self._commit_done.wait(), timeout=10)
                except TimeoutError:
                    log.warning("commit not confirmed within 10 s; retrying")
                    self._reset_requested()
                    self._commit_wanted.set()
                self._commit_done.clear()
                self._commit_in_flight = False
            await self._pace_commits()

    async def _pace_commits(self) -> None:
        """Commits go out every `commit_interval`, except while the pipeline is starved of
        slots: then records wait for slots that only a commit frees, so commit again without
        delay."""
        interval = self._s.commit_interval
        waited = 0.0
        while waited < interval and not self.capacity.starved:
            step = min(_FULL_CHECK_SECONDS, interval - waited)
            await asyncio.sleep(step)
            waited += step

    def request_commit(self) -> bool:
        offsets = []
        for tp, work in self.partitions.items():
            state = work.offsets
            if state.needs_commit() and not state.revoked:
                assert state.committable is not None
                offsets.append((tp, state.committable))
                state.commit_requested = state.committable
        if not offsets or self._commit_fn is None:
            return False
        self._commit_in_flight = True
        self._commit_fn(offsets)
        return True

    def _reset_requested(self) -> None:
        for work in self.partitions.values():
            work.offsets.commit_requested = work.offsets.committed

    def on_commit(self, results: list[tuple[TP, int]], ok: bool) -> None:
        """A commit was confirmed (or failed); release the slots it covers."""
        if not ok:
            log.warning("offset commit failed; will retry")
            self._reset_requested()
            self._commit_wanted.set()
        for tp, offset in results:
            work = self.partitions.get(tp)
            if work is None:
                continue
            self.capacity.release(work.offsets.committed_to(offset))
            metrics.COMMITTED_OFFSET.labels(topic=tp[0], partition=str(tp[1])).set(offset)
        self._commit_done.set()

    # --- hand-over ---------------------------------------------------------------------------
    async def revoke(self, tps: list[TP], lost: bool, budget: float) -> dict[TP, int]:
        """Finish what can finish within `budget`, cancel the rest, return offsets to commit."""
        works = {tp: self.partitions[tp] for tp in tps if tp in self.partitions}
        if not lost and budget > 0:
            pending = [t for w in works.values() for t in w.tasks.values()]
            if pending:
                log.info("handing over: waiting up to %.0f s for %d records", budget, len(pending))
                await asyncio.wait(pending, timeout=budget)
        if self._transactions is not None and not lost:
            await self._transactions.checkpoint()  # the last transaction for these partitions
        offsets: dict[TP, int] = {}
        for tp, work in works.items():
            work.offsets.revoked = True
            for task in work.tasks.values():
                task.cancel()
            committable = work.offsets.committable
            if (
                self._transactions is None
                and not lost
                and committable is not None
                and committable != work.offsets.committed
            ):
                offsets[tp] = committable
            self.capacity.release(work.offsets.holding)
            del self.partitions[tp]
            _forget_partition_series(tp)
            self._pauses.forget_partition(tp)
        if self._transactions is not None:
            self._transactions.forget(list(works))
        return offsets

    async def drain(self, budget: float) -> None:
        """Shutdown: wait up to `budget` for in-flight records, then commit what finished."""
        pending = [t for w in self.partitions.values() for t in w.tasks.values()]
        if pending:
            log.info("draining: waiting up to %.0f s for %d records", budget, len(pending))
            _done, not_done = (
                await asyncio.wait(pending, timeout=budget) if budget > 0 else (set(), set(pending))
            )
            if not_done:
                log.info(
                    "%d records unfinished at shutdown: resumed after restart (same runs)",
                    len(not_done),
                )
            for task in not_done:
                task.cancel()
        if self._transactions is not None:
            await self._transactions.checkpoint()
            return
        if self.request_commit():
            try:
                await asyncio.wait_for(self._commit_done.wait(), timeout=10)
            except TimeoutError:
                log.warning("final commit not confirmed within 10 s")


def _forget_partition_series(tp: TP) -> None:
    for gauge in (metrics.COMMITTED_OFFSET, metrics.CONSUMER_LAG, metrics.COMMITTABLE_LAG):
        with contextlib.suppress(KeyError):
            gauge.remove(tp[0], str(tp[1]))


def _coords(record: SourceRecord) -> dict[str, Any]:
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}
