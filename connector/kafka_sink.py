"""The producer: records out, delivery acknowledgements back to the event loop as futures.

confluent-kafka's delivery callbacks run inside `poll()`. A dedicated thread polls, collects
the callbacks of one poll and hands them to the loop in a single `call_soon_threadsafe`, so
each acknowledgement costs the loop one list append, not one wake-up.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, KafkaException, Producer

from connector import metrics
from connector.records import Headers

log = logging.getLogger("connector.kafka_sink")

# Errors after which the same record will never be accepted: retrying cannot help.
PERMANENT_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.INVALID_RECORD,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
    }
)


class Message(NamedTuple):
    """One record to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers | None
    timestamp_ms: int | None


class DeliveryFailed(Exception):
    def __init__(self, error: KafkaError) -> None:
        super().__init__(error.str())
        self.error = error
        self.permanent = error.code() in PERMANENT_ERRORS or error.fatal()


def producer_config(
    bootstrap_servers: str, extra: Mapping[str, Any], client_id: str
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "compression.type": "lz4",
        # Never give up on a record on our own: an unacknowledged record keeps its offset
        # uncommitted, so a broker outage costs time, never data.
        "message.timeout.ms": 0,
        "message.max.bytes": 16 * 1024 * 1024,
    }
    config.update(extra)
    return config


class KafkaSink:
    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer({**config, "logger": logging.getLogger("librdkafka.producer")})
        self._loop: asyncio.AbstractEventLoop | None = None
        self._acks: list[tuple[asyncio.Future[None], KafkaError | None]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        metrics.PRODUCER_QUEUE_DEPTH.set_function(lambda: len(self._producer))

    @property
    def producer(self) -> Producer:
        return self._producer

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(
            target=self._poll_forever, name="kafka-producer", daemon=True
        )
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def write(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
        timestamp_ms: int | None = None,
    ) -> asyncio.Future[None]:
        """Produce one record; the future resolves when the broker acknowledged it."""
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        lock = self._lock

        def on_delivery(error: KafkaError | None, _message: Any) -> None:
            with lock:  # the list is swapped by the poll thread: look it up each time
                self._acks.append((future, error))

        kwargs: dict[str, Any] = {"key": key, "headers": headers, "on_delivery": on_delivery}
        if timestamp_ms:
            kwargs["timestamp"] = timestamp_ms
        while True:
            try:
                self._producer.produce(topic, value, **kwargs)
                return future
            except BufferError:
                # The local queue is full: let the poll thread drain it. Rare, since the
                # pipeline never has more than max_in_flight records outstanding.
                self._producer.poll(0.05)
            except KafkaException as exc:
                future.set_exception(DeliveryFailed(exc.args[0]))
                return future

    def _poll_forever(self) -> None:
        producer, loop = self._producer, self._loop
        assert loop is not None
        while not self._stopping.is_set():
            producer.poll(0.05)
            if self._acks:
                with self._lock:
                    batch, self._acks = self._acks, []
                try:
                    loop.call_soon_threadsafe(_resolve, batch)
                except RuntimeError:
                    return  # the loop is closed: shutting down

    def flush(self, timeout: float) -> int:
        """Wait for outstanding records; returns how many are still undelivered."""
        remaining: int = self._producer.flush(timeout)
        return remaining

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._acks and self._loop is not None and not self._loop.is_closed():
            _resolve(self._acks)
            self._acks = []


def _resolve(batch: list[tuple[asyncio.Future[None], KafkaError | None]]) -> None:
    for future, error in batch:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(DeliveryFailed(error))
