"""Guarantee 4: outages, rate limits and a bad key are never dead letters. Real broker, CLI
and simulator; faults injected through the simulator's control plane."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
import pytest

from tests.figures import report_figure
from tests.fixtures_connector import ConnectorFactory, Topics
from tests.integration.test_guarantees import output_events, sim_event
from tests.integration.test_main_job import transcript_event
from tests.kafka_admin import consume_all, produce

pytestmark = pytest.mark.kafka


def wait_for_outputs(bootstrap: str, topic: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(consume_all(bootstrap, topic)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} outputs after {timeout} s"
        time.sleep(0.5)


@pytest.mark.slow
def test_a_60_second_outage_makes_no_dead_letters(
    kafka_bootstrap: str,
    pipeline_topics: Any,
    simulator_factory: Any,
    connector_factory: ConnectorFactory,
) -> None:
    events = 3000
    topics: Topics = pipeline_topics(6)
    sim = simulator_factory("--run-duration-ms", "200:1500", "--retry-after", "0", "--seed", "8")
    produce(kafka_bootstrap, topics.input, [transcript_event(i) for i in range(events)])
    # Budgets far shorter than the outage: they must not run down while the API is down.
    # A stuck_after shorter than the outage: liveness must still hold (an outage never
    # restarts a healthy pod).
    config = {
        "run": {"deadline_seconds": 45},
        "semarize": {"max_create_attempts": 10},
        "health": {"stuck_after_seconds": 50},
    }
    connector = connector_factory(api_url=sim.url, topics=topics, config=config)
    wait_for_outputs(kafka_bootstrap, topics.output, 300, 120)

    circuit_states: list[float] = []
    halted = threading.Event()

    def scrape() -> None:
        while not halted.is_set():
            try:
                value = connector.metrics().get("semarize_connector_circuit_state")
            except OSError:
                value = None
            if value is not None:
                circuit_states.append(value)
            halted.wait(0.5)

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    sim.faults(outage="refuse", outage_seconds=30)  # connections refused ...
    time.sleep(31)
    sim.faults(outage="503", outage_seconds=30)  # ... then 503s
    time.sleep(27)
    # 58 s into the outage: no offset has moved for longer than stuck_after.
    status, body = connector.get("/healthz")
    assert status == 200, body
    time.sleep(3)
    outputs_before_recovery = len(consume_all(kafka_bootstrap, topics.output))
    deadline = time.monotonic() + 240
    while len(output_events(consume_all(kafka_bootstrap, topics.output))) < events:
        assert time.monotonic() < deadline, connector.tail()
        assert connector.running(), connector.tail()
        time.sleep(1)
    halted.set()
    scraper.join(5)
    stats = sim.stats()
    dead = consume_all(kafka_bootstrap, topics.dlq)
    report_figure(
        f"OUTAGE-TEST events={events} dead_letters={len(dead)} "
        f"runs_created={stats['runs_created']} outputs_at_recovery={outputs_before_recovery} "
        f"circuit_states_seen={sorted(set(circuit_states))}"
    )
    assert dead == []
    assert stats["runs_created"] == events
    assert 2.0 in circuit_states, "the open circuit never showed in the metrics"
    assert circuit_states[-1] == 0.0
    assert outputs_before_recovery < events  # the outage really held work back


def test_a_revoked_key_halts_without_dead_letters_and_resumes(
    kafka_bootstrap: str,
    pipeline_topics: Any,
    simulator_factory: Any,
    connector_factory: ConnectorFactory,
) -> None:
    events = 300
    topics: Topics = pipeline_topics(3)
    sim = simulator_factory("--run-duration-ms", "300:1200", "--retry-after", "0")
    produce(kafka_bootstrap, topics.input, [transcript_event(i) for i in range(events)])
    connector = connector_factory(
        api_url=sim.url,
        topics=topics,
        config={
            "semarize": {"halt_probe_seconds": 1},
            "pipeline": {"max_in_flight": 32},
            # Shorter than the halt lasts: liveness must hold all the same.
            "run": {"deadline_seconds": 10},
            "health": {"stuck_after_seconds": 11},
        },
    )
    wait_for_outputs(kafka_bootstrap, topics.output, 30, 60)
    sim.faults(revoke_key=True)
    deadline = time.monotonic() + 20
    while True:
        status, body = connector.get("/readyz")
        if status == 503 and b"invalid_api_key" in body:
            break
        assert time.monotonic() < deadline, connector.tail()
        time.sleep(0.2)
    halted_at = time.monotonic()
    samples = connector.metrics()
    assert samples['semarize_connector_halted{reason="credentials"}'] == 1
    status, _ = connector.get("/healthz")
    assert status == 200  # a halt must never make Kubernetes restart a healthy pod
    time.sleep(3)
    paused = connector.metrics()["semarize_connector_paused_partitions"]
    created_while_halted = sim.stats()["runs_created"]
    time.sleep(3)
    assert sim.stats()["runs_created"] == created_while_halted  # nothing created while halted
    assert paused == 3
    # Lag keeps being measured while every partition is paused.
    more = 150
    produce(kafka_bootstrap, topics.input, [transcript_event(events + i) for i in range(more)])
    events += more
    deadline = time.monotonic() + 30
    while True:
        samples = connector.metrics()
        lag = sum(v for k, v in samples.items() if k.startswith("semarize_connector_consumer_lag{"))
        if lag >= more:
            break
        assert time.monotonic() < deadline, f"consumer_lag stuck at {lag}"
        time.sleep(1)
    time.sleep(max(0.0, halted_at + 13 - time.monotonic()))
    status, body = connector.get("/healthz")
    assert status == 200, body  # halted longer than stuck_after: still alive
    sim.faults(revoke_key=False)
    wait_for_outputs(kafka_bootstrap, topics.output, events, 120)
    assert consume_all(kafka_bootstrap, topics.dlq) == []
    assert sim.stats()["runs_created"] == events
    halt_lines = [e for e in connector.logs() if str(e.get("message", "")).startswith("halted")]
    assert len(halt_lines) == 1 and "invalid_api_key" in halt_lines[0]["message"]
    assert "smz_test_integration_key" not in connector.log_path.read_text()


def test_the_configured_kit_disappearing_halts_instead_of_dead_lettering(
    kafka_bootstrap: str,
    pipeline_topics: Any,
    simulator_factory: Any,
    connector_factory: ConnectorFactory,
) -> None:
    events = 200
    topics: Topics = pipeline_topics(2)
    sim = simulator_factory("--run-duration-ms", "300:900", "--retry-after", "0")
    produce(kafka_bootstrap, topics.input, [transcript_event(i) for i in range(events)])
    connector = connector_factory(
        api_url=sim.url,
        topics=topics,
        config={"semarize": {"halt_probe_seconds": 1}, "pipeline": {"max_in_flight": 16}},
    )
    wait_for_outputs(kafka_bootstrap, topics.output, 20, 60)
    sim.faults(kits="OTHERKIT")  # the configured A1B2C3D4 is gone
    deadline = time.monotonic() + 20
    while connector.metrics().get('semarize_connector_halted{reason="configuration"}') != 1:
        assert time.monotonic() < deadline, connector.tail()
        time.sleep(0.2)
    status, body = connector.get("/readyz")
    assert status == 503 and b"kit_not_found" in body
    created = sim.stats()["runs_created"]
    refused_before = sim.stats()["requests"]["POST /v1/runs"].get("404", 0)
    time.sleep(4)  # four probes (1 s): each may let one trial create through, no more
    assert sim.stats()["runs_created"] == created  # nothing created while halted
    refused = sim.stats()["requests"]["POST /v1/runs"].get("404", 0) - refused_before
    assert refused <= 5, refused  # no flood of refused creates
    sim.faults(kits="")  # any well-formed Kit again
    wait_for_outputs(kafka_bootstrap, topics.output, events, 120)
    assert consume_all(kafka_bootstrap, topics.dlq) == []
    halt_lines = [e for e in connector.logs() if str(e.get("message", "")).startswith("halted")]
    assert len(halt_lines) == 1 and "kit_not_found" in halt_lines[0]["message"]


def test_sync_mode_200_and_202_fallback(
    kafka_bootstrap: str,
    pipeline_topics: Any,
    simulator_factory: Any,
    connector_factory: ConnectorFactory,
) -> None:
    topics: Topics = pipeline_topics(1)
    sim = simulator_factory("--sync-wait-ms", "1500", "--retry-after", "0")
    records = [sim_event(i, 200) for i in range(10)]  # finish within the request: 200
    records += [sim_event(10 + i, 4000) for i in range(5)]  # 202 sync_fallback, then polled
    records.append(sim_event(15, 200, outcome="failed"))  # a 200 whose body says failed
    produce(kafka_bootstrap, topics.input, records)
    connector = connector_factory(
        api_url=sim.url, topics=topics, config={"semarize": {"mode": "sync"}}, stop_when_idle=1
    )
    assert connector.wait(90) == 0, connector.tail()
    outputs = consume_all(kafka_bootstrap, topics.output)
    dead = consume_all(kafka_bootstrap, topics.dlq)
    assert len(output_events(outputs)) == 15
    assert all(orjson.loads(r["value"])["output"]["bricks"] for r in outputs)
    assert len(dead) == 1
    stats = sim.stats()
    creates = stats["requests"]["POST /v1/runs"]
    assert creates == {"200": 11, "202": 5}
    polls = sum(stats["requests"].get("GET /v1/runs/{runId}", {}).values())
    assert polls >= 5  # only the fallback runs are polled ...
    assert stats["runs_created"] == 16


@pytest.mark.parametrize("client_limit", [True, False], ids=["token-bucket", "adaptive-only"])
def test_a_hard_rate_limit_keeps_429s_rare(
    client_limit: bool,
    kafka_bootstrap: str,
    pipeline_topics: Any,
    simulator_factory: Any,
    connector_factory: ConnectorFactory,
) -> None:
    events, limit = 600, 60
    topics: Topics = pipeline_topics(3)
    sim = simulator_factory(
        "--run-duration-ms", "100:400", "--retry-after", "0", "--rate-limit", str(limit)
    )
    produce(kafka_bootstrap, topics.input, [transcript_event(i) for i in range(events)])
    connector = connector_factory(
        api_url=sim.url,
        topics=topics,
        config={"rate_limit": {"requests_per_second": limit if client_limit else 0}},
        stop_when_idle=1,
    )
    connector.wait_ready(60)
    time.sleep(5)  # warm-up: without a configured rate the connector must find the limit
    warm = sim.stats()["requests"]
    assert connector.wait(240) == 0, connector.tail()
    assert len(output_events(consume_all(kafka_bootstrap, topics.output))) == events
    assert consume_all(kafka_bootstrap, topics.dlq) == []
    end = sim.stats()["requests"]

    def counts(requests: dict[str, dict[str, int]]) -> tuple[int, int]:
        total = sum(n for route in requests.values() for n in route.values())
        return total, sum(route.get("429", 0) for route in requests.values())

    total, limited = counts(end)
    warm_total, warm_limited = counts(warm)
    after_total, after_limited = total - warm_total, limited - warm_limited
    report_figure(
        f"RATE-LIMIT-TEST {client_limit=} R={limit} requests={total} 429s={limited} "
        f"after_warm_up: requests={after_total} 429s={after_limited} "
        f"share={after_limited / after_total:.3f}"
    )
    assert after_limited / after_total < 0.05
