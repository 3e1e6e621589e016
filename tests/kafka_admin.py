"""Small Kafka helpers for tests and benchmarks (confluent_kafka only, no group membership).

create_topic(bootstrap, "in", partitions=3, config={"max.message.bytes": "10485760"})
produce(bootstrap, "in", [(b"k", b"v", [("h", b"1")], None)])
consume_all(bootstrap, "out", timeout=30, isolation_level="read_committed")
committed_offsets(bootstrap, "my-group", "in")   # {partition: next offset to read}
end_offsets(bootstrap, "in")                     # {partition: high watermark}
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

# (key, value, headers, partition); headers and partition may be None. A shorter tuple
# (key, value) or (key, value, headers) is accepted too.
Record = tuple[Any, ...]
Message = dict[str, Any]

# Large enough for the 8 MiB records the tests use (the test broker allows 10 MiB).
MAX_MESSAGE_BYTES = 10485760


def unique_name(prefix: str = "t") -> str:
    """A topic / group name nothing else uses: ``<prefix>-<12 hex digits>``."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


_ADMINS: dict[str, AdminClient] = {}


def admin_client(bootstrap: str) -> AdminClient:
    """One long-lived client per cluster: destroying clients with events still queued in
    librdkafka's background thread crashed the test process (seen: SIGSEGV)."""
    admin = _ADMINS.get(bootstrap)
    if admin is None:
        admin = _ADMINS[bootstrap] = AdminClient({"bootstrap.servers": bootstrap})
    return admin


def topic_partitions(bootstrap: str, topic: str, timeout: float = 10) -> list[int]:
    """The partition ids of ``topic`` (KafkaException if it does not exist)."""
    return _partitions(admin_client(bootstrap), topic, timeout)


def _partitions(admin: AdminClient, topic: str, timeout: float = 10) -> list[int]:
    md = admin.list_topics(topic=topic, timeout=timeout)
    tmd = md.topics.get(topic)
    if tmd is None:
        raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, topic))
    if tmd.error is not None:
        raise KafkaException(tmd.error)
    return sorted(tmd.partitions)


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 1,
    config: dict[str, str] | None = None,
    timeout: float = 30,
) -> str:
    """Create ``name`` (replication 1) and wait until metadata shows every partition led."""
    admin = admin_client(bootstrap)
    topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})
    admin.create_topics([topic], operation_timeout=timeout, request_timeout=timeout)[name].result()
    deadline = time.monotonic() + timeout
    while True:
        md = admin.list_topics(topic=name, timeout=max(1.0, deadline - time.monotonic()))
        tmd = md.topics.get(name)
        if (
            tmd is not None
            and tmd.error is None
            and len(tmd.partitions) == partitions
            and all(p.leader >= 0 and p.error is None for p in tmd.partitions.values())
        ):
            return name
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {name!r} not in metadata with {partitions} partitions")
        time.sleep(0.05)


def delete_topic(bootstrap: str, name: str, timeout: float = 30) -> None:
    """Delete ``name``; a topic that does not exist is not an error."""
    admin = admin_client(bootstrap)  # keep it referenced: its futures die with it
    future = admin.delete_topics([name], operation_timeout=timeout, request_timeout=timeout)[name]
    try:
        future.result()
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[Record],
    config: dict[str, Any] | None = None,
    timeout: float = 60,
) -> list[tuple[int, int]]:
    """Produce ``records`` (acks=all) and flush; returns (partition, offset) for each record,
    in order. Raises KafkaException if any record was not delivered."""
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "message.max.bytes": MAX_MESSAGE_BYTES + 65536,
        "linger.ms": 5,
    }
    conf.update(config or {})
    producer = Producer(conf)
    results: list[tuple[int, int] | None] = []
    errors: list[KafkaError] = []

    def on_delivery(index: int) -> Any:
        def callback(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                errors.append(err)
            else:
                results[index] = (msg.partition(), msg.offset())

        return callback

    for index, record in enumerate(records):
        key, value, headers, partition = (*record, None, None)[:4]
        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": on_delivery(index)}
        if headers is not None:
            kwargs["headers"] = list(headers)
        if partition is not None:
            kwargs["partition"] = partition
        results.append(None)
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(timeout)
    if remaining:
        raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, f"{remaining} not delivered"))
    if errors:
        raise KafkaException(errors[0])
    return [r for r in results if r is not None]


def end_offsets(
    bootstrap: str, topic: str, isolation_level: str = "read_uncommitted", timeout: float = 10
) -> dict[int, int]:
    """``{partition: end offset}``: the high watermark, or with ``read_committed`` the last
    stable offset."""
    return _list_offsets(bootstrap, topic, OffsetSpec.latest(), isolation_level, timeout)


def beginning_offsets(bootstrap: str, topic: str, timeout: float = 10) -> dict[int, int]:
    """``{partition: log start offset}``."""
    return _list_offsets(bootstrap, topic, OffsetSpec.earliest(), "read_uncommitted", timeout)


def _list_offsets(
    bootstrap: str, topic: str, spec: OffsetSpec, isolation_level: str, timeout: float
) -> dict[int, int]:
    admin = admin_client(bootstrap)
    request = {TopicPartition(topic, p): spec for p in _partitions(admin, topic, timeout)}
    futures = admin.list_offsets(
        request, isolation_level=_isolation(isolation_level), request_timeout=timeout
    )
    return {tp.partition: future.result().offset for tp, future in futures.items()}


def _isolation(isolation_level: str) -> IsolationLevel:
    if isolation_level == "read_committed":
        return IsolationLevel.READ_COMMITTED
    if isolation_level == "read_uncommitted":
        return IsolationLevel.READ_UNCOMMITTED
    raise ValueError(
        f"isolation_level must be read_committed or read_uncommitted: {isolation_level}"
    )


_COORDINATOR_BUSY = {
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
}


def committed_offsets(
    bootstrap: str, group: str, topic: str, timeout: float = 10
) -> dict[int, int]:
    """``{partition: committed offset}`` of ``group`` on ``topic``; partitions without a
    committed offset are left out.

    Read through a consumer that never joins the group, not through AdminClient's
    list_consumer_group_offsets: librdkafka 2.x crashes (SIGSEGV in rd_kafka_cgrp_op) when
    that admin call meets COORDINATOR_LOAD_IN_PROGRESS.
    """
    key = (bootstrap, group)
    reader = _OFFSET_READERS.get(key)
    if reader is None:
        reader = _OFFSET_READERS[key] = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
        )
    partitions = [TopicPartition(topic, p) for p in topic_partitions(bootstrap, topic, timeout)]
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = reader.committed(partitions, timeout=timeout)
            break
        except KafkaException as exc:
            retry = exc.args[0].retriable() or exc.args[0].code() in _COORDINATOR_BUSY
            if not retry or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    offsets: dict[int, int] = {}
    for tp in result:
        if tp.error is not None:
            raise KafkaException(tp.error)
        if tp.offset >= 0:
            offsets[tp.partition] = tp.offset
    return offsets


_OFFSET_READERS: dict[tuple[str, str], Consumer] = {}


def close_clients() -> None:
    """Close the long-lived clients this module keeps (offset readers)."""
    while _OFFSET_READERS:
        _, reader = _OFFSET_READERS.popitem()
        reader.close()


def consume_all(
    bootstrap: str,
    topic: str,
    timeout: float = 30,
    isolation_level: str = "read_uncommitted",
    config: dict[str, Any] | None = None,
) -> list[Message]:
    """Every record of ``topic`` from the beginning up to the end offsets taken at call time
    (the last stable offsets with ``read_committed``), ordered by (partition, offset).

    Reads with all partitions assigned, not as a group member, and commits nothing. Each
    record is ``{topic, partition, offset, key, value, headers, timestamp}`` with headers a
    list of ``(str, bytes)`` (empty when there are none) and timestamp in ms. Raises
    TimeoutError if the end is not reached within ``timeout`` seconds.
    """
    ends = end_offsets(bootstrap, topic, isolation_level)
    # Explicit start offsets: OFFSET_BEGINNING costs librdkafka an extra ~0.5 s per call.
    starts = beginning_offsets(bootstrap, topic)
    pending = {p for p, end in ends.items() if end > starts.get(p, 0)}
    messages: list[Message] = []
    if not pending:
        return messages
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": unique_name("consume-all"),  # never joined nor committed to
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "isolation.level": isolation_level,
        "fetch.max.bytes": 4 * MAX_MESSAGE_BYTES,
        "receive.message.max.bytes": 4 * MAX_MESSAGE_BYTES + 65536,
    }
    conf.update(config or {})
    consumer = Consumer(conf)
    try:
        consumer.assign(
            [TopicPartition(topic, p, starts.get(p, OFFSET_BEGINNING)) for p in sorted(pending)]
        )
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"consume_all({topic!r}): end offsets {ends} not reached within {timeout:g}s;"
                    f" partitions {sorted(pending)} unfinished, {len(messages)} records read"
                )
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            partition = msg.partition()
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    if msg.offset() >= ends.get(partition, 0):
                        pending.discard(partition)
                    continue
                raise KafkaException(err)
            offset = msg.offset()
            end = ends.get(partition, 0)
            if offset < end:
                _, timestamp = msg.timestamp()
                messages.append(
                    {
                        "topic": msg.topic(),
                        "partition": partition,
                        "offset": offset,
                        "key": msg.key(),
                        "value": msg.value(),
                        "headers": list(msg.headers() or []),
                        "timestamp": timestamp,
                    }
                )
            if offset >= end - 1:
                pending.discard(partition)
    finally:
        consumer.close()
    messages.sort(key=lambda m: (m["partition"], m["offset"]))
    return messages


def header_dict(headers: Sequence[tuple[str, bytes | None]]) -> dict[str, bytes | None]:
    """Headers as a dict (the last value of a repeated header wins)."""
    return dict(headers)
