"""Input events for the benchmark: sales-call transcripts of a chosen size, and a paced producer.

Transcripts come from a small pool (64 per size), so the simulator's Bricks cache (256
distinct transcripts) keeps its own cost per run low; every event still has its own event id,
hence its own idempotency key and its own run.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
from confluent_kafka import Producer

POOL = 64

_REP = [
    "Thanks for making the time today, I know the quarter is busy.",
    "Could you walk me through how the team handles renewals right now?",
    "We can set up a pilot for two teams and review it together in a fortnight.",
    "Pricing depends on seats; for forty users we would be at the standard tier.",
    "I will send over the security questionnaire and the order form after this call.",
    "How does the budget for this project get approved on your side?",
    "Most customers see the first results within the first month.",
    "Let us book a follow-up with your head of operations next Tuesday.",
]
_PROSPECT = [
    "We looked at a competitor last year but the integration never worked well.",
    "Budget is approved for this half, but finance wants to see a clear return.",
    "Honestly the price is a concern, it is higher than what we pay today.",
    "I am the decision maker for tooling, although procurement signs the contract.",
    "Our reps spend too long writing notes after every call.",
    "That sounds great, the next step would be a demo for my team.",
    "We need this to work with our CRM before anything else.",
    "Timing is tricky because we are migrating systems in the autumn.",
]


def transcript(size: int, variant: int) -> str:
    """A ``Rep: ... Prospect: ...`` transcript of about ``size`` bytes (deterministic)."""
    rng = random.Random(variant * 7919 + size)
    parts: list[str] = []
    length = 0
    while length < size:
        line = f"Rep: {rng.choice(_REP)} Prospect: {rng.choice(_PROSPECT)}"
        parts.append(line)
        length += len(line) + 1
    return " ".join(parts)[:size]


def event_values(prefix: str, count: int, size: int) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of ``count`` input events with transcripts of ``size`` bytes."""
    pool = [transcript(size, v) for v in range(POOL)]
    for i in range(count):
        event_id = f"{prefix}-{i:06d}"
        value: dict[str, Any] = {
            "event_id": event_id,
            "transcript": pool[i % POOL],
            "metadata": {"bench": prefix, "seq": i},
        }
        yield event_id.encode(), orjson.dumps(value)


class PacedProducer(threading.Thread):
    """Produces ``count`` events at ``rate`` per second (each at its scheduled time)."""

    def __init__(
        self, bootstrap: str, topic: str, prefix: str, count: int, size: int, rate: float
    ) -> None:
        super().__init__(name="paced-producer", daemon=True)
        self.bootstrap = bootstrap
        self.topic = topic
        self.records = list(event_values(prefix, count, size))
        self.rate = rate
        self.errors: list[str] = []
        self.produced = 0
        self.late_seconds = 0.0  # how far behind schedule the producer fell at worst

    def run(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "linger.ms": 1})

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                self.errors.append(str(err))

        start = time.monotonic()
        for i, (key, value) in enumerate(self.records):
            due = start + i / self.rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            else:
                self.late_seconds = max(self.late_seconds, now - due)
            while True:
                try:
                    producer.produce(self.topic, key=key, value=value, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            self.produced += 1
        remaining = producer.flush(60)
        if remaining:
            self.errors.append(f"{remaining} events not delivered")
