"""Start-up checks (DESIGN.md section 1): a missing topic or an unknown configured Kit is a
configuration error (exit 2, one clear line each); a broker or API that cannot be reached yet
is not: the connector keeps trying, alive but not ready, and starts once it can."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.fixtures_connector import ConnectorFactory, ConnectorProcess, Topics
from tests.integration.test_main_job import transcript_event
from tests.kafka_admin import consume_all, produce
from tests.kafka_broker import free_port

pytestmark = pytest.mark.kafka

EXIT_CONFIG = 2


def error_lines(connector: ConnectorProcess) -> list[str]:
    return [str(e.get("message")) for e in connector.logs() if e.get("level") == "error"]


def stays_unready(connector: ConnectorProcess, seconds: float) -> bytes:
    """Polls /readyz for `seconds`: always 503 and the process alive. Returns the last body."""
    deadline = time.monotonic() + seconds
    body = b""
    while time.monotonic() < deadline:
        assert connector.running(), connector.tail()
        try:
            status, body = connector.get("/readyz", timeout=1)
        except OSError:
            time.sleep(0.2)  # the ops server is not up yet
            continue
        assert status == 503, body
        live, _ = connector.get("/healthz", timeout=1)
        assert live == 200  # waiting is not a reason to be restarted
        time.sleep(0.3)
    return body


def test_a_missing_topic_is_a_configuration_error(
    kafka_bootstrap: str, pipeline_topics: Any, simulator: Any, connector_factory: ConnectorFactory
) -> None:
    topics: Topics = pipeline_topics(1)
    missing = Topics(topics.input, topics.output + ".missing", topics.dlq, topics.completions, 1)
    connector = connector_factory(api_url=simulator.url, topics=missing)
    assert connector.wait(60) == EXIT_CONFIG
    lines = error_lines(connector)
    assert lines == [f"kafka: topic {missing.output!r} does not exist (create it first)"]
    assert simulator.stats()["runs_created"] == 0


def test_an_unknown_configured_kit_is_a_configuration_error(
    kafka_bootstrap: str,
    pipeline_topics: Any,
    simulator_factory: Any,
    connector_factory: ConnectorFactory,
) -> None:
    topics: Topics = pipeline_topics(1)
    sim = simulator_factory("--kits", "OTHERKIT")  # the configured A1B2C3D4 is unknown
    produce(kafka_bootstrap, topics.input, [transcript_event(0)])
    connector = connector_factory(api_url=sim.url, topics=topics)
    assert connector.wait(60) == EXIT_CONFIG
    lines = error_lines(connector)
    assert len(lines) == 1 and "configured Kit 'A1B2C3D4' is unknown" in lines[0], lines
    assert "kit_not_found" in lines[0]
    assert sim.stats()["runs_created"] == 0
    assert consume_all(kafka_bootstrap, topics.dlq) == []  # never a dead letter


def test_an_unreachable_broker_is_waited_for_not_ready(
    simulator: Any, connector_factory: ConnectorFactory, tmp_path: Any
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    topics = Topics("in", "out", "dlq", "completions", 1)
    connector = connector_factory(
        api_url=simulator.url, topics=topics, config={"kafka": {"bootstrap_servers": nowhere}}
    )
    body = stays_unready(connector, 8)
    assert b"starting" in body
    warnings = [e for e in connector.logs() if "waiting for Kafka" in str(e.get("message"))]
    assert len(warnings) == 1  # said once, not every retry
    assert simulator.stats()["runs_created"] == 0


def test_an_unreachable_api_is_waited_for_and_work_starts_when_it_answers(
    kafka_bootstrap: str,
    pipeline_topics: Any,
    simulator_factory: Any,
    connector_factory: ConnectorFactory,
) -> None:
    topics: Topics = pipeline_topics(1)
    events = 20
    produce(kafka_bootstrap, topics.input, [transcript_event(i) for i in range(events)])
    port = free_port()
    connector = connector_factory(api_url=f"http://127.0.0.1:{port}", topics=topics)
    stays_unready(connector, 6)
    waiting = [
        e for e in connector.logs() if "waiting for the Semarize API" in str(e.get("message"))
    ]
    assert len(waiting) == 1
    assert consume_all(kafka_bootstrap, topics.output) == []
    sim = simulator_factory("--port", str(port), "--run-duration-ms", "50:100")
    connector.wait_ready(60)
    deadline = time.monotonic() + 60
    while len(consume_all(kafka_bootstrap, topics.output)) < events:
        assert time.monotonic() < deadline, connector.tail()
        time.sleep(0.5)
    assert sim.stats()["runs_created"] == events
    assert consume_all(kafka_bootstrap, topics.dlq) == []
