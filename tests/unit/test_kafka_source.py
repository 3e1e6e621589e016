"""The consumer thread's fetch logic: room, pauses, rewinds (a fake Consumer, no broker).

The real Consumer is covered by the integration tests; here the loop's decisions are checked
one step at a time: what is handed to the pipeline, what is paused and what is rewound.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from connector import kafka_source
from connector.kafka_source import Capacity, KafkaSource, PauseControl
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
    """A log per partition and a fetch position per partition, like librdkafka's: consume
    serves unpaused partitions from their positions; seek moves a position; a poll while
    paused may still return one message fetched before the pause took effect."""

    def __init__(self, _config: dict[str, Any]) -> None:
        self.logs: dict[int, list[FakeMessage]] = {}
        self.positions: dict[int, int] = {}
        self.paused: set[tuple[str, int]] = set()
        self.seeks: list[tuple[int, int]] = []

    def append(self, partition: int, offsets: range) -> None:
        log = self.logs.setdefault(partition, [])
        log.extend(FakeMessage(partition, o) for o in offsets)
        self.positions.setdefault(partition, 0)

    def _take(self, partitions: list[int], limit: int) -> list[FakeMessage]:
        served: list[FakeMessage] = []
        for partition in partitions:
            log, position = self.logs[partition], self.positions[partition]
            while position < len(log) and len(served) < limit:
                served.append(log[position])
                position += 1
            self.positions[partition] = position
        return served

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        active = [p for p in sorted(self.logs) if (TOPIC, p) not in self.paused]
        return self._take(active, num_messages)

    def poll(self, timeout: float) -> FakeMessage | None:
        messages = self._take(sorted(self.logs), 1)
        return messages[0] if messages else None

    def pause(self, partitions: list[Any]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[Any]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.partition, tp.offset))
        self.positions[tp.partition] = tp.offset


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
        self.consumer.append(partition, offsets)

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
    for _ in range(5):
        h.step()
    assert h.capacity.held == 3  # never more than max_in_flight handed over
    assert len(h.delivered) == 3


def test_a_full_pipeline_pauses_everything_and_rewinds_what_came_anyway(harness: Any) -> None:
    h = harness(limit=4, partitions=2)
    h.produce(0, range(6))
    h.produce(1, range(6))
    h.step()  # 4 handed over: full
    h.step()  # everything paused; a message fetched before the pause is rewound
    assert h.consumer.paused == {(TOPIC, 0), (TOPIC, 1)}
    assert len(h.consumer.seeks) == 1
    h.capacity.release(4)
    standing = [(p, len(h.offsets(p))) for p in (0, 1) if h.offsets(p)]
    h.step()  # resumed, with a seek to where each partition stands (wakes librdkafka)
    assert h.consumer.paused == set()
    assert sorted(h.consumer.seeks[1:]) == standing == [(0, 4)]
    for _ in range(10):
        h.step()
        h.capacity.release(h.capacity.held)
    for partition in (0, 1):
        assert h.offsets(partition) == list(range(6))  # no gap, no repeat, in order


def test_it_resumes_only_once_a_tenth_of_the_slots_are_free(harness: Any) -> None:
    h = harness(limit=20, partitions=1)
    h.produce(0, range(100))
    h.step()
    h.step()
    assert h.consumer.paused == {(TOPIC, 0)}
    h.capacity.release(1)
    h.step()
    assert h.consumer.paused == {(TOPIC, 0)}  # 1 of 20 free: stay paused, no flapping
    h.capacity.release(1)
    h.step()
    assert h.consumer.paused == set()
    assert len(h.delivered) == 22


def test_a_partition_paused_for_its_own_sake_does_not_block_the_others(harness: Any) -> None:
    h = harness(limit=100, partitions=2)
    h.pauses.mark("refused", True, (TOPIC, 0))
    h.produce(0, range(5))
    h.produce(1, range(5))
    for _ in range(3):
        h.step()
    assert h.offsets(0) == []
    assert h.offsets(1) == list(range(5))
    h.pauses.mark("refused", False, (TOPIC, 0))
    for _ in range(3):
        h.step()
    assert h.offsets(0) == list(range(5))


def test_a_global_pause_hands_nothing_over(harness: Any) -> None:
    h = harness(limit=10, partitions=1)
    h.pauses.mark("api", True)
    h.produce(0, range(6))
    for _ in range(3):
        h.step()
    assert h.delivered == []
    h.pauses.mark("api", False)
    for _ in range(3):
        h.step()
    assert h.offsets(0) == list(range(6))


def test_a_revoked_partition_is_no_longer_fetched_or_paused(harness: Any) -> None:
    h = harness(limit=10, partitions=2)
    runner = threading.Thread(target=h.loop.run_forever)  # the revoke waits on the loop
    runner.start()
    try:
        h.source._hand_over([(TOPIC, 0)], lost=True)
    finally:
        h.loop.call_soon_threadsafe(h.loop.stop)
        runner.join()
    assert h.source._assigned == {(TOPIC, 1)}
    h.produce(0, range(2))
    h.produce(1, range(2))
    h.step()
    assert h.offsets(1) == [0, 1]


def test_the_consumer_commits_nothing_by_itself_and_settings_can_be_overridden() -> None:
    config = kafka_source.consumer_config(
        bootstrap_servers="b:9092",
        group_id="g",
        auto_offset_reset="earliest",
        client_id="c",
        extra={},
        exactly_once=False,
    )
    assert config["enable.auto.commit"] is False
    assert config["enable.auto.offset.store"] is False
    assert config["partition.assignment.strategy"] == "cooperative-sticky"
    overridden = kafka_source.consumer_config(
        bootstrap_servers="b:9092",
        group_id="g",
        auto_offset_reset="earliest",
        client_id="c",
        extra={"fetch.wait.max.ms": 500},
        exactly_once=True,
    )
    assert overridden["fetch.wait.max.ms"] == 500
    assert overridden["isolation.level"] == "read_committed"
