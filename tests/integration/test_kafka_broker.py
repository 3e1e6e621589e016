"""Smoke tests of the real test broker (tests/kafka_broker.py) and the admin helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from tests.fixtures_kafka import TopicFactory
from tests.kafka_admin import (
    committed_offsets,
    consume_all,
    create_topic,
    delete_topic,
    end_offsets,
    produce,
    topic_partitions,
    unique_name,
)
from tests.kafka_broker import KafkaBroker

pytestmark = pytest.mark.kafka


def test_round_trip_keys_headers_partitions(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(partitions=2)
    records = [
        (b"k1", b"v1", [("trace", b"abc"), ("empty", b"")], 0),
        (None, b"no key", None, 1),
        (b"tombstone", None, [("h", b"x")], 1),
        (b"k2", b"\x00\xffbinary", [("dup", b"1"), ("dup", b"2")], 0),
    ]
    delivered = produce(kafka_bootstrap, topic, records)
    assert delivered == [(0, 0), (1, 0), (1, 1), (0, 1)]

    got = consume_all(kafka_bootstrap, topic, timeout=30)
    assert [(m["partition"], m["offset"]) for m in got] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    by_key = {m["key"]: m for m in got}
    assert by_key[b"k1"]["value"] == b"v1"
    assert by_key[b"k1"]["headers"] == [("trace", b"abc"), ("empty", b"")]
    assert by_key[None]["value"] == b"no key"
    assert by_key[None]["headers"] == []
    assert by_key[b"tombstone"]["value"] is None
    assert by_key[b"k2"]["value"] == b"\x00\xffbinary"
    assert by_key[b"k2"]["headers"] == [("dup", b"1"), ("dup", b"2")]
    assert all(m["topic"] == topic and m["timestamp"] > 0 for m in got)
    assert end_offsets(kafka_bootstrap, topic) == {0: 2, 1: 2}

    # Records produced after the call are not waited for; an empty topic reads as [].
    assert consume_all(kafka_bootstrap, topic_factory(), timeout=5) == []


def test_large_record(kafka_bootstrap: str, topic_factory: TopicFactory) -> None:
    topic = topic_factory()
    value = bytes(range(256)) * (8 * 1024 * 1024 // 256)  # 8 MiB
    produce(kafka_bootstrap, topic, [(b"big", value, None, None)])
    (got,) = consume_all(kafka_bootstrap, topic, timeout=30)
    assert got["value"] == value


def test_create_and_delete_topic(kafka_bootstrap: str) -> None:
    name = create_topic(kafka_bootstrap, unique_name("create-delete"), partitions=3)
    assert topic_partitions(kafka_bootstrap, name) == [0, 1, 2]
    delete_topic(kafka_bootstrap, name)
    delete_topic(kafka_bootstrap, name)  # already gone: not an error
    with pytest.raises(KafkaException):
        topic_partitions(kafka_bootstrap, name)


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_committed_offsets(
    kafka_bootstrap: str, topic_factory: TopicFactory, protocol: str
) -> None:
    topic = topic_factory(partitions=2)
    produce(kafka_bootstrap, topic, [(f"k{i}".encode(), b"v", None, i % 2) for i in range(5)])
    group = unique_name(f"group-{protocol}")
    assert committed_offsets(kafka_bootstrap, group, topic) == {}

    conf: dict[str, Any] = {
        "bootstrap.servers": kafka_bootstrap,
        "group.id": group,
        "group.protocol": protocol,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    if protocol == "classic":
        conf["session.timeout.ms"] = 6000
    consumer = Consumer(conf)
    try:
        consumer.subscribe([topic])
        seen = 0
        for _ in range(200):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                seen += 1
            if seen == 5:
                break
        assert seen == 5
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert committed_offsets(kafka_bootstrap, group, topic) == {0: 3, 1: 2}


def test_read_committed_skips_aborted_transactions(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory()
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": unique_name("txn")}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"a", value=b"committed-1")
    producer.produce(topic, key=b"b", value=b"committed-2")
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"c", value=b"aborted")
    assert producer.flush(30) == 0  # abort_transaction() would purge an unsent record
    producer.abort_transaction(30)

    committed = consume_all(kafka_bootstrap, topic, timeout=30, isolation_level="read_committed")
    assert [m["value"] for m in committed] == [b"committed-1", b"committed-2"]
    uncommitted = consume_all(kafka_bootstrap, topic, timeout=30)
    assert [m["value"] for m in uncommitted] == [b"committed-1", b"committed-2", b"aborted"]


@pytest.mark.slow
def test_restart_and_crash_keep_data(tmp_path: Path) -> None:
    """A broker of its own (the session broker is left alone): data and committed offsets
    survive a clean restart and a SIGKILL, on the same ports."""
    broker = KafkaBroker(tmp_path / "kafka")
    try:
        broker.start()
        bootstrap = broker.bootstrap_servers
        topic = create_topic(bootstrap, "durable", partitions=2)
        produce(
            bootstrap,
            topic,
            [(b"k", f"v{i}".encode(), [("i", b"%d" % i)], i % 2) for i in range(6)],
        )
        group = "durable-group"
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        try:
            consumer.commit(
                offsets=[TopicPartition(topic, 0, 2), TopicPartition(topic, 1, 3)],
                asynchronous=False,
            )
        finally:
            consumer.close()
        before = consume_all(bootstrap, topic, timeout=30)
        assert len(before) == 6

        broker.restart()
        assert broker.is_running()
        assert broker.bootstrap_servers == bootstrap
        assert consume_all(bootstrap, topic, timeout=30) == before
        assert committed_offsets(bootstrap, group, topic) == {0: 2, 1: 3}

        broker.kill()
        assert not broker.is_running()
        broker.start()
        assert consume_all(bootstrap, topic, timeout=30) == before
        assert committed_offsets(bootstrap, group, topic) == {0: 2, 1: 3}
        assert end_offsets(bootstrap, topic) == {0: 3, 1: 3}
    finally:
        broker.stop()
    assert not broker.is_running()
