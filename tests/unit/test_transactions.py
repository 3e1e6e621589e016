"""How one transaction reacts to librdkafka's error classes (a fake Producer, no broker):
a retriable commit error is retried, an abortable one aborts so the same records go again
in the next checkpoint, a fatal one (fenced by a newer instance) stops without committing."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from connector.errors import KafkaFatalError
from connector.kafka_sink import Message
from connector.kafka_source import PauseControl
from connector.transactions import TransactionalCheckpointer

SOURCE = ("transcripts", 0)


def retriable() -> KafkaException:
    return KafkaException(KafkaError(KafkaError._TIMED_OUT, "commit timed out", retriable=True))


def abortable() -> KafkaException:
    return KafkaException(KafkaError(KafkaError._STATE, "must abort", txn_requires_abort=True))


def fenced() -> KafkaException:
    return KafkaException(KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True))


class FakeProducer:
    """Records the transactional calls; `failures` maps a call name to the errors it raises
    (one per call, in order)."""

    def __init__(self, failures: dict[str, list[KafkaException]] | None = None) -> None:
        self.failures = failures or {}
        self.calls: list[str] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        queued = self.failures.get(name)
        if queued:
            raise queued.pop(0)

    def begin_transaction(self) -> None:
        self._call("begin")

    def produce(self, topic: str, value: bytes | None, **kwargs: Any) -> None:
        self._call("produce")

    def poll(self, timeout: float) -> int:
        return 0

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        self._call("send_offsets")

    def commit_transaction(self, timeout: float) -> None:
        self._call("commit")

    def abort_transaction(self, timeout: float) -> None:
        self._call("abort")


def transaction(producer: FakeProducer) -> bool:
    checkpointer = TransactionalCheckpointer(
        producer,  # type: ignore[arg-type]
        partitions={},
        pauses=PauseControl(),
        group_metadata=lambda: object(),
        on_committed=lambda offsets, ok: None,
        interval=0.1,
    )
    message = Message("transcripts.analyzed", b"k", b"{}", None, None)
    refused: set[Any] = set()
    return checkpointer._transaction(
        [(SOURCE, message)], [TopicPartition(*SOURCE, 1)], object(), refused
    )


def test_a_clean_transaction_commits_once() -> None:
    producer = FakeProducer()
    assert transaction(producer) is True
    assert producer.calls == ["begin", "produce", "send_offsets", "commit"]


def test_a_retriable_commit_error_is_retried_without_aborting() -> None:
    producer = FakeProducer({"commit": [retriable(), retriable()]})
    assert transaction(producer) is True
    assert producer.calls.count("commit") == 3
    assert "abort" not in producer.calls


def test_an_abortable_error_aborts_so_the_records_go_again() -> None:
    producer = FakeProducer({"commit": [abortable()]})
    assert transaction(producer) is False  # not committed: the next checkpoint retries
    assert producer.calls[-2:] == ["commit", "abort"]


def test_an_abortable_produce_error_aborts_before_sending_offsets() -> None:
    producer = FakeProducer({"send_offsets": [abortable()]})
    assert transaction(producer) is False
    assert producer.calls == ["begin", "produce", "send_offsets", "abort"]


def test_fenced_is_fatal_and_nothing_is_committed() -> None:
    producer = FakeProducer({"commit": [fenced()]})
    with pytest.raises(KafkaFatalError):
        transaction(producer)
    assert "abort" not in producer.calls  # a fenced producer may not touch the transaction


def test_a_fatal_error_while_aborting_is_fatal_too() -> None:
    producer = FakeProducer({"commit": [abortable()], "abort": [fenced()]})
    with pytest.raises(KafkaFatalError):
        transaction(producer)
