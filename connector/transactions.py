"""Exactly-once output (`processing_guarantee: exactly_once`).

Outputs, dead letters and the input offsets they finish go into one Kafka transaction, so a
`read_committed` reader sees each result once whatever crashes. A checkpoint:

1. per partition, take the finished records from the oldest unfinished offset onwards, as
   long as they are contiguous: records of a partition are emitted in offset order, and a
   finished record waits for earlier ones;
2. begin a transaction, produce them, add the offsets after them
   (`send_offsets_to_transaction` with the consumer's current group metadata), commit;
3. on success mark those offsets finished and release their slots; on an abortable error
   abort and try the same records again in the next checkpoint; a fatal error (fenced by a
   newer instance with the same transactional.id) stops the process without committing.

Checkpoints run one at a time (a lock); revocation and shutdown run one under the same lock
before the partitions move, so no transaction ever carries a partition this process lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from connector import metrics
from connector.errors import KafkaFatalError
from connector.kafka_sink import PERMANENT_ERRORS, Message

if TYPE_CHECKING:
    from connector.kafka_source import TP, PauseControl
    from connector.pipeline import PartitionWork
    from connector.records import SourceRecord

log = logging.getLogger("connector.transactions")

_TXN_TIMEOUT = 30.0
_REFUSED_RETRY_SECONDS = 30.0


class TransactionalCheckpointer:
    def __init__(
        self,
        producer: Producer,
        *,
        partitions: dict[TP, PartitionWork],
        pauses: PauseControl,
        group_metadata: Callable[[], Any],
        on_committed: Callable[[list[tuple[TP, int]], bool], None],
        interval: float,
    ) -> None:
        self._producer = producer
        self._partitions = partitions
        self._pauses = pauses
        self._refused: dict[TP, float] = {}
        self._group_metadata = group_metadata
        self._on_committed = on_committed
        self._interval = interval
        self._ready: dict[TP, dict[int, tuple[Message, asyncio.Future[None]]]] = {}
        self._lock = asyncio.Lock()
        self._wanted = asyncio.Event()
        self.fatal: KafkaFatalError | None = None
        self.transactions = 0

    async def emit(self, record: SourceRecord, work: PartitionWork, message: Message) -> None:
        """Queue a finished record's message; returns once its transaction committed."""
        tp = (record.topic, record.partition)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ready.setdefault(tp, {})[record.offset] = (message, future)
        self._wanted.set()
        await future

    async def run(self) -> None:
        while self.fatal is None:
            await self._wanted.wait()
            self._wanted.clear()
            await self.checkpoint()
            await asyncio.sleep(self._interval)

    def forget(self, tps: list[TP]) -> None:
        """Drop what was queued for partitions this process no longer owns."""
        for tp in tps:
            for _, future in self._ready.pop(tp, {}).values():
                future.cancel()

    async def checkpoint(self) -> None:
        async with self._lock:
            if self.fatal is not None:
                return
            batch: dict[TP, list[int]] = {}
            now = time.monotonic()
            for tp, ready in self._ready.items():
                work = self._partitions.get(tp)
                if work is None or work.offsets.revoked or not ready:
                    continue
                if now - self._refused.get(tp, -1e9) < _REFUSED_RETRY_SECONDS:
                    continue  # halted: a record of it was refused for good; retried later
                prefix = work.offsets.ready_prefix(ready)
                if prefix:
                    batch[tp] = prefix
            if not batch:
                return
            messages = [(tp, self._ready[tp][o][0]) for tp, prefix in batch.items() for o in prefix]
            offsets = [TopicPartition(t, p, prefix[-1] + 1) for (t, p), prefix in batch.items()]
            metadata = self._group_metadata()
            started = time.perf_counter()
            refused: set[TP] = set()
            try:
                committed = await asyncio.to_thread(
                    self._transaction, messages, offsets, metadata, refused
                )
            except KafkaFatalError as exc:
                self.fatal = exc
                log.error("exactly-once producer failed for good: %s; stopping", exc)
                return
            for tp in refused:
                # Never skipped: the partition halts (with an alert) and is retried later.
                metrics.DEAD_LETTER_REFUSED.inc()
                log.error(
                    "the broker refused a record for good; partition halted until fixed",
                    extra={"topic": tp[0], "partition": tp[1]},
                )
                self._refused[tp] = time.monotonic()
                self._pauses.mark("refused", True, tp)
            if not committed:
                self._wanted.set()  # try the same records again (less any halted partition)
                return
            for tp in batch:
                if self._refused.pop(tp, None) is not None:
                    self._pauses.mark("refused", False, tp)
            self.transactions += 1
            results = []
            for tp, prefix in batch.items():
                work = self._partitions.get(tp)
                ready = self._ready.get(tp, {})
                for offset in prefix:
                    _, future = ready.pop(offset)
                    if not future.done():
                        future.set_result(None)
                    if work is not None:
                        work.offsets.finish(offset)
                results.append((tp, prefix[-1] + 1))
            self._on_committed(results, True)
            log.debug(
                "transaction committed",
                extra={
                    "records": len(messages),
                    "seconds": round(time.perf_counter() - started, 4),
                },
            )

    def _transaction(
        self,
        messages: list[tuple[TP, Message]],
        offsets: list[TopicPartition],
        metadata: Any,
        refused: set[TP],
    ) -> bool:
        """One transaction, on a worker thread. True when committed; source partitions whose
        record the broker refused for good are added to `refused`."""
        producer = self._producer

        def on_delivery(source: TP) -> Callable[[KafkaError | None, Any], None]:
            def report(error: KafkaError | None, _message: Any) -> None:
                if error is not None and error.code() in PERMANENT_ERRORS:
                    refused.add(source)

            return report

        try:
            producer.begin_transaction()
            for source, message in messages:
                kwargs: dict[str, Any] = {
                    "key": message.key,
                    "headers": message.headers,
                    "on_delivery": on_delivery(source),
                }
                if message.timestamp_ms:
                    kwargs["timestamp"] = message.timestamp_ms
                while True:
                    try:
                        producer.produce(message.topic, message.value, **kwargs)
                        break
                    except BufferError:
                        producer.poll(0.05)
                    except KafkaException as exc:
                        if exc.args[0].code() in PERMANENT_ERRORS:
                            refused.add(source)
                        raise
            producer.send_offsets_to_transaction(offsets, metadata, _TXN_TIMEOUT)
            self._commit(producer)
            return True
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.fatal():
                raise KafkaFatalError(error.str()) from exc
            log.warning("transaction failed, aborting and retrying: %s", error.str())
            try:
                producer.abort_transaction(_TXN_TIMEOUT)
            except KafkaException as abort_exc:
                abort_error: KafkaError = abort_exc.args[0]
                if abort_error.fatal():
                    raise KafkaFatalError(abort_error.str()) from abort_exc
                log.warning("abort failed: %s", abort_error.str())
            return False

    @staticmethod
    def _commit(producer: Producer) -> None:
        for attempt in range(5):
            try:
                producer.commit_transaction(_TXN_TIMEOUT)
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.retriable() and not error.txn_requires_abort() and attempt < 4:
                    continue
                raise
