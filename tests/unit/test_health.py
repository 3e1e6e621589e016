"""Liveness and readiness decisions of `Connector` (no broker: nothing is started, the
threads' states and the partitions' progress are set up directly).

What Kubernetes does with the answers matters: a failed liveness restarts the pod, so it
must fail only when a restart helps (a dead thread, a partition stuck while the API is
fine), never for an outage or a halt."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from connector.app import Connector
from connector.config import load_settings
from connector.semarize.errors import CredentialsRejected
from connector.semarize.transport import MockTransport, Response

ENV = {
    "SEMARIZE_API_KEY": "smz_test_health",
    "SEMARIZE_KIT_CODE": "A1B2C3D4",
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    "CONNECTOR_RUN_DEADLINE_SECONDS": "60",
    "CONNECTOR_HEALTH_STUCK_AFTER_SECONDS": "120",
}
TP = ("transcripts", 0)


async def _no_api(_request: Any) -> Response:
    raise AssertionError("no request expected")


def finished_thread() -> threading.Thread:
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
    return thread


def running_thread(stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def connector() -> Iterator[Connector]:
    stop = threading.Event()
    c = Connector(load_settings(None, ENV), transport=MockTransport(_no_api))
    c._checks_done = True
    c.source._thread = running_thread(stop)
    c.sink._thread = running_thread(stop)
    c.source.broker_up = True
    yield c
    stop.set()


def stuck_partition(c: Connector, idle_for: float) -> None:
    """A partition with a record in flight whose committable offset last moved `idle_for`
    seconds ago."""
    c.pipeline.on_assign([TP])
    work = c.pipeline.partitions[TP]
    work.offsets.track(0)
    work.offsets.moved_at = time.monotonic() - idle_for


def test_alive_and_ready_when_all_is_well(connector: Connector) -> None:
    ok, details = connector.liveness()
    assert ok, details
    ready, details = connector.readiness()
    assert ready, details


@pytest.mark.parametrize("thread", ["source", "sink"])
def test_a_dead_thread_fails_liveness(connector: Connector, thread: str) -> None:
    getattr(connector, thread)._thread = finished_thread()
    role = {"source": "consumer", "sink": "producer"}[thread]
    ok, details = connector.liveness()
    assert not ok
    assert details == {role: f"{role} thread stopped"}


def test_a_dead_thread_while_stopping_is_not_a_failure(connector: Connector) -> None:
    connector.source._thread = finished_thread()
    connector._stopping = True
    assert connector.liveness()[0]


def test_a_partition_stuck_while_the_api_is_healthy_fails_liveness(connector: Connector) -> None:
    stuck_partition(connector, idle_for=121)
    ok, details = connector.liveness()
    assert not ok and details["stuck_partitions"] == ["transcripts/0"]
    assert connector.readiness()[0]  # still ready: only a restart helps, not less traffic


def test_a_partition_idle_for_less_than_stuck_after_is_fine(connector: Connector) -> None:
    stuck_partition(connector, idle_for=100)
    assert connector.liveness()[0]


def test_no_restart_for_a_halt(connector: Connector) -> None:
    stuck_partition(connector, idle_for=10_000)
    connector.gate.halt(CredentialsRejected("HTTP 401", status=401, error_code="invalid_api_key"))
    ok, details = connector.liveness()
    assert ok, details  # the halt is not the pod's fault
    ready, details = connector.readiness()
    assert not ready and details["halted"] == "invalid_api_key"


def test_no_restart_for_an_outage(connector: Connector) -> None:
    stuck_partition(connector, idle_for=10_000)
    for _ in range(50):
        connector.gate.record_failure()  # the circuit opens
    assert not connector.gate.healthy
    assert connector.liveness()[0]


def test_not_ready_while_the_broker_is_unreachable(connector: Connector) -> None:
    connector.source.broker_up = False
    connector.source.last_broker_error = "Connection refused"
    ready, details = connector.readiness()
    assert not ready and details["broker"] == "Connection refused"
    assert connector.liveness()[0]
