"""The ops server of a live connector: /metrics passes promtool, probes answer."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fixtures_connector import ConnectorFactory, Topics
from tests.integration.test_main_job import transcript_event
from tests.kafka_admin import produce

pytestmark = pytest.mark.kafka

PROMTOOL = Path(__file__).resolve().parents[2] / ".local" / "bin" / "promtool"
# DESIGN.md section 1 guarantees these names.
GUARANTEED = [
    "records_consumed_total",
    "records_finished_total",
    "runs_created_total",
    "http_requests_total",
    "http_request_duration_seconds",
    "retries_total",
    "in_flight_records",
    "oldest_in_flight_age_seconds",
    "run_duration_seconds",
    "completion_notice_delay_seconds",
    "end_to_end_latency_seconds",
    "consumer_lag",
    "committed_offset",
    "paused_partitions",
    "concurrency_limit",
    "circuit_state",
    "halted",
    "webhook_deliveries_total",
]


def test_live_metrics_pass_promtool_and_probes_answer(
    kafka_bootstrap: str,
    pipeline_topics: Any,
    simulator_factory: Any,
    connector_factory: ConnectorFactory,
) -> None:
    if not PROMTOOL.exists():
        if os.environ.get("CI"):
            pytest.fail("promtool missing: tools/chart-tools.sh installs it")
        pytest.skip("promtool not installed (run tools/chart-tools.sh)")
    topics: Topics = pipeline_topics(2)
    sim = simulator_factory("--run-duration-ms", "50:200", "--retry-after", "0")
    produce(kafka_bootstrap, topics.input, [transcript_event(i) for i in range(50)])
    produce(kafka_bootstrap, topics.input, [(b"bad", b"not json")])
    connector = connector_factory(
        api_url=sim.url, topics=topics, config={"ops": {"summary_interval_seconds": 1}}
    )
    connector.wait_ready(60)
    # Wait until everything went through, so outcome and latency series have samples.
    for _ in range(200):
        samples = connector.metrics()
        if samples.get('semarize_connector_records_finished_total{outcome="succeeded"}') == 50:
            break
        time.sleep(0.1)
    _, body = connector.get("/metrics")
    check = subprocess.run(
        [str(PROMTOOL), "check", "metrics"], input=body, capture_output=True, timeout=30
    )
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    text = body.decode()
    for name in GUARANTEED:
        assert f"semarize_connector_{name}" in text, name
    samples = connector.metrics()
    assert samples['semarize_connector_records_finished_total{outcome="invalid_input"}'] == 1
    assert samples["semarize_connector_runs_created_total"] == 50
    assert samples['semarize_connector_records_consumed_total{topic="' + topics.input + '"}'] == 51

    status, ready = connector.get("/readyz")
    assert status == 200 and orjson.loads(ready)["ok"] is True
    status, live = connector.get("/healthz")
    assert status == 200 and orjson.loads(live)["ok"] is True

    # Logs: one JSON object per line, coordinates and ids on every outcome, no secret.
    raw = connector.log_path.read_bytes()
    assert b"smz_test_integration_key" not in raw
    finished = [e for e in connector.logs() if e.get("message") == "record finished"]
    assert len(finished) == 50
    assert all(
        {"topic", "partition", "offset", "event_id", "run_id", "request_id"} <= e.keys()
        for e in finished
    )
    assert b"budget" not in raw  # no transcript text
    deadline = time.monotonic() + 10  # the summary comes every second
    while not any(e.get("message") == "summary" for e in connector.logs()):
        assert time.monotonic() < deadline, connector.tail()
        time.sleep(0.2)

    # The values, not only the names: what happened shows where the docs say it does.
    deadline = time.monotonic() + 30  # commits, then the 10 s lag probe
    while True:
        samples = connector.metrics()
        committed = total(samples, "semarize_connector_committed_offset{")
        lag = total(samples, "semarize_connector_committable_lag{")
        if committed == 51 and lag == 0:
            break
        assert time.monotonic() < deadline, (committed, lag)
        time.sleep(0.5)
    assert total(samples, "semarize_connector_decode_failures_total{") == 1
    assert samples["semarize_connector_in_flight_records"] == 0
    assert samples["semarize_connector_oldest_in_flight_age_seconds"] == 0
    assert samples["semarize_connector_run_duration_seconds_count"] == 50
    assert samples["semarize_connector_completion_notice_delay_seconds_count"] == 50
    assert samples["semarize_connector_end_to_end_latency_seconds_count"] == 51
    created = 'semarize_connector_http_requests_total{error_code="",route="create",status="202"}'
    assert samples[created] == 50
    assert samples['semarize_connector_http_request_duration_seconds_count{route="create"}'] == 50
    assert samples["semarize_connector_paused_partitions"] == 0
    assert samples["semarize_connector_circuit_state"] == 0
    assert samples["semarize_connector_producer_queue_messages"] == 0
    deadline = time.monotonic() + 10
    while True:
        summaries = [e for e in connector.logs() if e.get("message") == "summary"]
        if summaries[-1]["finished"] == 51:
            break
        assert time.monotonic() < deadline, summaries[-1]
        time.sleep(0.3)
    assert {"records_per_second", "in_flight", "lag", "dead_letters"} <= summaries[-1].keys()
    assert summaries[-1]["dead_letters"] == 1 and summaries[-1]["in_flight"] == 0
    assert any(e["records_per_second"] > 0 for e in summaries)


def total(samples: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in samples.items() if k.startswith(prefix))


def test_a_partition_stuck_while_the_api_looks_healthy_fails_liveness(
    kafka_bootstrap: str,
    pipeline_topics: Any,
    simulator_factory: Any,
    connector_factory: ConnectorFactory,
) -> None:
    """Requests that hang (no error, so the circuit stays closed) hold the partition: once
    its committable offset has not moved for health.stuck_after_seconds, /healthz fails so
    Kubernetes restarts the pod."""
    topics: Topics = pipeline_topics(1)
    sim = simulator_factory("--run-duration-ms", "50:100", "--retry-after", "0")
    produce(kafka_bootstrap, topics.input, [transcript_event(i) for i in range(5)])
    connector = connector_factory(
        api_url=sim.url,
        topics=topics,
        config={
            "run": {"deadline_seconds": 1},
            "health": {"stuck_after_seconds": 3},
            "semarize": {"read_timeout_seconds": 120},
        },
    )
    connector.wait_ready(60)
    sim.faults(slow_rate=1.0, slow_ms="60000")
    produce(kafka_bootstrap, topics.input, [transcript_event(100 + i) for i in range(5)])
    deadline = time.monotonic() + 30
    while True:
        status, body = connector.get("/healthz")
        if status == 503:
            assert b"stuck_partitions" in body
            break
        assert time.monotonic() < deadline, connector.tail()
        time.sleep(0.5)
    status, _ = connector.get("/readyz")
    assert status == 200  # stuck is a liveness matter: it does not take the pod out of service
