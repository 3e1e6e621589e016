"""The consumer thread's hand-over logic: room, read-ahead, pauses (a fake Consumer, no broker).

The real Consumer is covered by the integration tests; here the loop's decisions are checked
one step at a time: what is handed to the pipeline, what waits, what is paused and what is
rewound.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from connector import kafka_source
from connector.kafka_source import Capacity, KafkaSource, PauseControl, Readahead
from connector.records import SourceRecord

TOPIC = "transcripts"


class FakeMessage:
    def __init__(self, partition: int, offset: int, value: bytes = b"x" * 10) -> None:
        self._partition = partition
        self._offset = offset
        self._value = value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return b"k"

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


class FakeConsumer:
    """Serves queued messages; remembers pauses, resumes and seeks."""

    def __init__(self, _config: dict[str, Any]) -> None:
        self.queue: list[FakeMessage] = []
        self.paused: set[tuple[str, int]] = set()
        self.seeks: list[tuple[int, int]] = []

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        served = [m for m in self.queue if (TOPIC, m.partition()) not in self.paused]
        served = served[:num_messages]
        for message in served:
            self.queue.remove(message)
        return served

    def poll(self, timeout: float) -> FakeMessage | None:
        messages = self.consume(1, timeout)
        return messages[0] if messages else None

    def pause(self, partitions: list[Any]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[Any]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.partition, tp.offset))
        # librdkafka refetches from the seek position: drop what was queued at or after it
        self.queue = [
            m for m in self.queue if m.partition() != tp.partition or m.offset() < tp.offset
        ]


class Harness:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, limit: int, partitions: int = 2) -> None:
        monkeypatch.setattr(kafka_source, "Consumer", FakeConsumer)
        self.loop = asyncio.new_event_loop()
        self.capacity = Capacity(limit)
        self.pauses = PauseControl()
        self.delivered: list[SourceRecord] = []

        async def on_revoke(tps: list[Any], lost: bool) -> dict[Any, int]:
            return {}

        self.source = KafkaSource(
            {},
            [TOPIC],
            capacity=self.capacity,
            pauses=self.pauses,
            on_records=self.delivered.extend,
            on_assign=lambda tps: None,
            on_revoke=on_revoke,
            on_commit=lambda results, ok: None,
            revoke_budget=1.0,
        )
        self.source._loop = self.loop
        self.consumer: FakeConsumer = self.source._consumer  # type: ignore[assignment]
        self.source._assigned = {(TOPIC, p) for p in range(partitions)}

    def produce(self, partition: int, offsets: range) -> None:
        self.consumer.queue.extend(FakeMessage(partition, o) for o in offsets)

    def step(self) -> None:
        """One turn of the consumer thread's loop, then let the event loop deliver."""
        self.source._step()
        self.loop.run_until_complete(asyncio.sleep(0))

    def offsets(self, partition: int) -> list[int]:
        return [r.offset for r in self.delivered if r.partition == partition]

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Any:
    made: list[Harness] = []

    def make(limit: int, partitions: int = 2) -> Harness:
        made.append(Harness(monkeypatch, limit, partitions))
        return made[-1]

    yield make
    for h in made:
        h.close()


def test_the_pipeline_gets_only_as_many_records_as_it_has_room_for(harness: Any) -> None:
    h = harness(limit=3, partitions=1)
    h.produce(0, range(10))
    h.step()
    assert h.offsets(0) == [0, 1, 2]
    assert h.capacity.held == 3


def test_while_full_it_reads_ahead_and_hands_over_in_order_when_slots_free(harness: Any) -> None:
    h = harness(limit=4, partitions=2)
    h.produce(0, range(6))
    h.produce(1, range(6))
    h.step()  # 4 handed over, the pipeline is full
    assert len(h.delivered) == 4
    h.step()  # full: the next records are read ahead, not handed over
    assert len(h.delivered) == 4
    assert h.source.readahead.count == 4  # read ahead up to max_in_flight
    h.capacity.release(3)
    h.step()
    assert len(h.delivered) == 7
    for partition in (0, 1):
        offsets = h.offsets(partition)
        assert offsets == sorted(offsets) == list(range(len(offsets)))  # no gap, no repeat
    assert h.consumer.seeks == []  # read-ahead needs no rewind


def test_a_full_read_ahead_pauses_everything_until_half_of_it_is_used(harness: Any) -> None:
    h = harness(limit=4, partitions=2)
    h.produce(0, range(20))
    h.produce(1, range(20))
    h.step()
    h.step()
    h.step()  # pipeline full, read-ahead full: all partitions paused
    assert h.source.readahead.full
    assert h.consumer.paused == {(TOPIC, 0), (TOPIC, 1)}
    h.capacity.release(1)
    h.step()  # one handed from the read-ahead; 3 of 4 left, not yet low
    assert h.consumer.paused == {(TOPIC, 0), (TOPIC, 1)}
    h.capacity.release(2)
    h.step()
    h.step()  # read-ahead at half: fetching again
    assert h.consumer.paused == set()
    h.capacity.release(100)
    for _ in range(10):
        h.step()
    for partition in (0, 1):
        assert h.offsets(partition) == list(range(20))


def test_a_partition_paused_for_its_own_sake_gives_its_read_ahead_back(harness: Any) -> None:
    h = harness(limit=2, partitions=2)
    h.produce(0, range(5))
    h.produce(1, range(5))
    h.step()
    h.step()  # full: read-ahead holds records of both partitions
    assert h.source.readahead.count == 2
    h.pauses.mark("refused", True, (TOPIC, 0))
    h.step()
    assert (TOPIC, 0) in h.consumer.paused
    first_unstarted = len(h.offsets(0))
    assert h.consumer.seeks == [(0, first_unstarted)]  # refetched from there when resumed
    h.capacity.release(100)
    for _ in range(5):
        h.step()
    assert h.offsets(1) == list(range(5))  # the other partition is not blocked
    assert h.offsets(0) == list(range(first_unstarted))


def test_a_global_pause_keeps_the_read_ahead_and_hands_nothing_over(harness: Any) -> None:
    h = harness(limit=2, partitions=1)
    h.produce(0, range(6))
    h.step()
    h.step()
    h.pauses.mark("api", True)
    h.capacity.release(2)
    h.step()
    assert len(h.delivered) == 2
    h.pauses.mark("api", False)
    for _ in range(5):
        h.step()
    assert h.offsets(0) == [0, 1, 2, 3]  # room for 2 more after the release: 4 in total


def test_revoked_partitions_lose_their_read_ahead(harness: Any) -> None:
    h = harness(limit=1, partitions=2)
    h.produce(0, range(3))
    h.produce(1, range(3))
    h.step()
    h.step()
    before = h.source.readahead.count
    assert before > 0
    h.source.readahead.drop([(TOPIC, 0), (TOPIC, 1)])
    assert h.source.readahead.count == 0
    assert h.source.readahead.size == 0


def test_readahead_is_bounded_by_bytes_too() -> None:
    ahead = Readahead(max_records=1000, max_bytes=100)
    ahead.add([FakeMessage(0, o, b"y" * 60) for o in range(2)])
    assert ahead.full
    taken = ahead.take(1, set())
    assert [m.offset() for m in taken] == [0]
    assert not ahead.full
    assert not ahead.low  # 60 of 100 bytes: more than half
    ahead.take(1, set())
    assert ahead.low
