"""Webhooks end to end: real broker, real CLI replicas, the simulator delivering signed events.

- three replicas in one group, deliveries round-robin over their receivers: every event
  finished once, and (webhooks healthy) at most 0.1 GET per run;
- 20 % of the events never delivered: everything still finishes, through polling;
- forged, wrongly signed, expired, replayed, oversized and malformed deliveries: each
  rejected or deduped and counted, and none completes a run;
- the completions reader on its own: every partition, from `poll_fallback_seconds` ago.

The measured GET polls per run are reported (`WEBHOOK-TEST polls_per_run=...`, listed at the
end of the session).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import socket
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from connector.webhooks import PATH, Completion, CompletionsReader, reader_config
from tests.figures import report_figure
from tests.fixtures_connector import TEST_API_KEY, ConnectorFactory, ConnectorProcess, Topics
from tests.kafka_admin import consume_all, create_topic, header_dict, produce, unique_name
from tests.kafka_broker import free_port

pytestmark = pytest.mark.kafka

SECRET = "whsec_integration_0123456789abcdef"


def transcript_event(i: int, **input_extra: Any) -> tuple[bytes, bytes]:
    event: dict[str, Any] = {
        "event_id": f"call-{i:05d}",
        "input": {
            "transcript": [
                {"speaker": "Rep", "text": f"Call {i}: what budget do you have?"},
                {"speaker": "Prospect", "text": "We set aside budget for next quarter."},
            ],
            **input_extra,
        },
        "metadata": {"call_number": i},
    }
    return f"key-{i:05d}".encode(), orjson.dumps(event)


def webhook_replicas(
    connector_factory: ConnectorFactory,
    sim_url: str,
    topics: Topics,
    count: int,
    *,
    fallback: float,
) -> tuple[list[ConnectorProcess], list[str]]:
    replicas, urls = [], []
    for index in range(count):
        port = free_port()
        replicas.append(
            connector_factory(
                api_url=sim_url,
                topics=topics,
                group=f"g-{topics.input}",
                name=f"replica-{index}",
                config={
                    "webhooks": {"host": "127.0.0.1"},
                    "shutdown": {"grace_seconds": 10},
                },
                env={
                    "CONNECTOR_WEBHOOKS_ENABLED": "true",
                    "CONNECTOR_WEBHOOKS_PORT": str(port),
                    "SEMARIZE_WEBHOOK_SECRET": SECRET,
                    "CONNECTOR_WEBHOOKS_POLL_FALLBACK_SECONDS": str(fallback),
                },
            )
        )
        urls.append(f"http://127.0.0.1:{port}{PATH}")
    for replica in replicas:
        replica.wait_ready()
    return replicas, urls


def wait_for_outputs(bootstrap: str, topic: str, wanted: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(consume_all(bootstrap, topic)) >= wanted:
            return
        time.sleep(1)
    raise AssertionError(f"fewer than {wanted} outputs within {timeout} s")


def stop_all(replicas: list[ConnectorProcess]) -> None:
    for replica in replicas:
        replica.send(signal.SIGTERM)
    for replica in replicas:
        assert replica.wait(60) == 0, replica.tail()


def get_polls(stats: dict[str, Any]) -> int:
    return sum(stats["requests"].get("GET /v1/runs/{runId}", {}).values())


def metric_sum(replicas: list[ConnectorProcess], name: str) -> float:
    total = 0.0
    for replica in replicas:
        for sample, value in replica.metrics().items():
            if sample == name or sample.startswith(name + "{"):
                total += value
    return total


def assert_each_event_once(outputs: list[dict[str, Any]], events: int) -> None:
    seen = Counter(orjson.loads(record["value"])["event_id"] for record in outputs)
    duplicates = {event_id: n for event_id, n in seen.items() if n > 1}
    assert not duplicates, f"duplicate outputs: {duplicates}"
    assert sorted(seen) == [f"call-{i:05d}" for i in range(events)]
    for record in outputs:
        value = orjson.loads(record["value"])
        assert value["status"] == "succeeded" and value["output"]["bricks"], value


def test_three_replicas_webhooks_round_robin(
    kafka_bootstrap: str,
    pipeline_topics: Any,
    simulator_factory: Any,
    connector_factory: ConnectorFactory,
) -> None:
    events = 300
    topics: Topics = pipeline_topics(6, completions=True)
    sim = simulator_factory("--run-duration-ms", "200:1500", "--retry-after", "0", "--seed", "21")
    # A long fallback: with webhooks healthy, nothing needs a poll.
    replicas, urls = webhook_replicas(connector_factory, sim.url, topics, 3, fallback=60)
    sim.faults(
        webhook_url=urls,
        webhook_secret=SECRET,
        webhook_backoff_ms=200,
        webhook_duplicate_rate=0.3,  # the same event twice, often to two replicas
        webhook_delay_ms="0:300",
    )
    time.sleep(3)  # let the group settle on three members
    produce(kafka_bootstrap, topics.input, [transcript_event(i) for i in range(events)])
    wait_for_outputs(kafka_bootstrap, topics.output, events, timeout=120)
    time.sleep(3)  # time for a late duplicate completion to (wrongly) produce a second output
    stats = sim.stats()
    accepted = metric_sum(replicas, "semarize_connector_webhook_deliveries_total")
    by_webhook = sum(
        r.metrics().get('semarize_connector_completions_noticed_total{via="webhook"}', 0)
        for r in replicas
    )
    per_replica = [
        r.metrics().get('semarize_connector_webhook_deliveries_total{result="accepted"}', 0)
        for r in replicas
    ]
    stop_all(replicas)

    outputs = consume_all(kafka_bootstrap, topics.output)
    assert consume_all(kafka_bootstrap, topics.dlq) == []
    assert_each_event_once(outputs, events)
    polls_per_run = get_polls(stats) / stats["runs_created"]
    report_figure(
        f"WEBHOOK-TEST webhooks=healthy replicas=3 events={events} "
        f"runs={stats['runs_created']} get_polls={get_polls(stats)} "
        f"polls_per_run={polls_per_run:.3f} noticed_by_webhook={by_webhook:.0f} "
        f"deliveries={accepted:.0f} accepted_per_replica={per_replica} "
        f"sim_webhooks={stats['webhooks']}"
    )
    assert stats["runs_created"] == events
    assert stats["webhooks"]["duplicated"] > 0
    assert all(n > 0 for n in per_replica), per_replica  # every receiver took its share
    assert polls_per_run <= 0.1


def test_polling_baseline_without_webhooks(
    kafka_bootstrap: str,
    pipeline_topics: Any,
    simulator_factory: Any,
    connector_factory: ConnectorFactory,
) -> None:
    """The same workload with webhooks off, for the polls-per-run comparison."""
    events = 300
    topics: Topics = pipeline_topics(6)
    sim = simulator_factory("--run-duration-ms", "200:1500", "--retry-after", "0", "--seed", "21")
    produce(kafka_bootstrap, topics.input, [transcript_event(i) for i in range(events)])
    connector = connector_factory(api_url=sim.url, topics=topics, stop_when_idle=2)
    assert connector.wait(180) == 0, connector.tail()
    stats = sim.stats()
    assert_each_event_once(consume_all(kafka_bootstrap, topics.output), events)
    polls_per_run = get_polls(stats) / stats["runs_created"]
    report_figure(
        f"WEBHOOK-TEST webhooks=off replicas=1 events={events} runs={stats['runs_created']} "
        f"get_polls={get_polls(stats)} polls_per_run={polls_per_run:.3f}"
    )
    assert polls_per_run >= 1


@pytest.mark.slow
def test_dropped_webhooks_finish_through_polling(
    kafka_bootstrap: str,
    pipeline_topics: Any,
    simulator_factory: Any,
    connector_factory: ConnectorFactory,
) -> None:
    events = 200
    topics: Topics = pipeline_topics(6, completions=True)
    sim = simulator_factory("--run-duration-ms", "200:1500", "--retry-after", "0", "--seed", "33")
    replicas, urls = webhook_replicas(connector_factory, sim.url, topics, 3, fallback=4)
    sim.faults(
        webhook_url=urls,
        webhook_secret=SECRET,
        webhook_backoff_ms=200,
        webhook_drop_rate=0.2,
        webhook_thin_rate=0.1,
        webhook_duplicate_rate=0.2,
        # Some deliveries arrive after the fallback poll already finished the run.
        webhook_delay_ms="0:6000",
    )
    time.sleep(3)
    produce(kafka_bootstrap, topics.input, [transcript_event(i) for i in range(events)])
    wait_for_outputs(kafka_bootstrap, topics.output, events, timeout=180)
    time.sleep(8)  # every delayed delivery has arrived: none may add an output
    stats = sim.stats()
    via_poll = sum(
        r.metrics().get('semarize_connector_completions_noticed_total{via="poll"}', 0)
        for r in replicas
    )
    via_webhook = sum(
        r.metrics().get('semarize_connector_completions_noticed_total{via="webhook"}', 0)
        for r in replicas
    )
    stop_all(replicas)

    outputs = consume_all(kafka_bootstrap, topics.output)
    assert consume_all(kafka_bootstrap, topics.dlq) == []
    assert_each_event_once(outputs, events)
    polls_per_run = get_polls(stats) / stats["runs_created"]
    report_figure(
        f"WEBHOOK-TEST webhooks=20%-dropped replicas=3 events={events} "
        f"runs={stats['runs_created']} get_polls={get_polls(stats)} "
        f"polls_per_run={polls_per_run:.3f} noticed_by_poll={via_poll:.0f} "
        f"noticed_by_webhook={via_webhook:.0f} sim_webhooks={stats['webhooks']}"
    )
    assert stats["runs_created"] == events
    assert stats["webhooks"]["dropped"] > 0
    assert via_poll >= stats["webhooks"]["dropped"]  # each dropped one was found by polling
    # More polled than dropped: runs whose webhook came after the fallback poll had finished
    # them, and still one output each (assert_each_event_once above).
    assert via_poll > stats["webhooks"]["dropped"]
    assert via_webhook > 0


def test_exactly_once_with_webhooks(
    kafka_bootstrap: str,
    pipeline_topics: Any,
    simulator_factory: Any,
    connector_factory: ConnectorFactory,
) -> None:
    """Completions are published outside the output transactions (their own producer)."""
    events = 60
    topics: Topics = pipeline_topics(3, completions=True)
    sim = simulator_factory("--run-duration-ms", "200:800", "--retry-after", "0", "--seed", "8")
    port = free_port()
    connector = connector_factory(
        api_url=sim.url,
        topics=topics,
        config={
            "webhooks": {"host": "127.0.0.1"},
            "pipeline": {"processing_guarantee": "exactly_once"},
        },
        env={
            "CONNECTOR_WEBHOOKS_ENABLED": "true",
            "CONNECTOR_WEBHOOKS_PORT": str(port),
            "SEMARIZE_WEBHOOK_SECRET": SECRET,
            "CONNECTOR_WEBHOOKS_POLL_FALLBACK_SECONDS": "60",
        },
    )
    connector.wait_ready()
    sim.faults(webhook_url=[f"http://127.0.0.1:{port}{PATH}"], webhook_secret=SECRET)
    produce(kafka_bootstrap, topics.input, [transcript_event(i) for i in range(events)])
    deadline = time.monotonic() + 90
    while (
        len(consume_all(kafka_bootstrap, topics.output, isolation_level="read_committed")) < events
    ):
        assert time.monotonic() < deadline, connector.tail()
        time.sleep(1)
    stats = sim.stats()
    connector.send(signal.SIGTERM)
    assert connector.wait(60) == 0, connector.tail()
    outputs = consume_all(kafka_bootstrap, topics.output, isolation_level="read_committed")
    assert_each_event_once(outputs, events)
    report_figure(
        f"WEBHOOK-TEST webhooks=healthy exactly_once replicas=1 events={events} "
        f"get_polls={get_polls(stats)} polls_per_run={get_polls(stats) / events:.3f}"
    )
    assert get_polls(stats) / events <= 0.1


def test_a_webhook_port_in_use_stops_the_start(
    pipeline_topics: Any, simulator: Any, connector_factory: ConnectorFactory
) -> None:
    topics: Topics = pipeline_topics(1, completions=True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        connector = connector_factory(
            api_url=simulator.url,
            topics=topics,
            config={"webhooks": {"host": "127.0.0.1"}},
            env={
                "CONNECTOR_WEBHOOKS_ENABLED": "true",
                "CONNECTOR_WEBHOOKS_PORT": str(port),
                "SEMARIZE_WEBHOOK_SECRET": SECRET,
            },
        )
        assert connector.wait(60) == 1
    assert any("cannot listen" in str(entry.get("message")) for entry in connector.logs())


# --- security ------------------------------------------------------------------------------------


def signature(secret: str, t: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def sim_get(url: str, path: str) -> Any:
    request = urllib.request.Request(
        url + path, headers={"Authorization": f"Bearer {TEST_API_KEY}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def forged_event(run_id: str, event_id: str) -> bytes:
    return orjson.dumps(
        {
            "id": event_id,
            "type": "run.succeeded",
            "created_at": "2026-01-01T00:00:00.000Z",
            "data": {
                "run_id": run_id,
                "status": "succeeded",
                "duration_ms": 1,
                "output": {"kit_code": "A1B2C3D4", "bricks": {"forged": {"value": True}}},
            },
        }
    )


def test_forged_expired_replayed_oversized_and_malformed_deliveries(
    kafka_bootstrap: str,
    pipeline_topics: Any,
    simulator_factory: Any,
    connector_factory: ConnectorFactory,
) -> None:
    topics: Topics = pipeline_topics(1, completions=True)
    sim = simulator_factory("--run-duration-ms", "200:400", "--retry-after", "0", "--seed", "5")
    (connector,), (url,) = webhook_replicas(connector_factory, sim.url, topics, 1, fallback=120)
    sim.faults(webhook_url=[url], webhook_secret=SECRET, webhook_backoff_ms=200)
    # One run that takes 20 s: the attacks below target it while it is tracked.
    produce(kafka_bootstrap, topics.input, [transcript_event(0, _sim={"duration_ms": 20000})])
    deadline = time.monotonic() + 30
    while sim.stats()["runs_created"] < 1:
        assert time.monotonic() < deadline, connector.tail()
        time.sleep(0.2)
    run_id = sim_get(sim.url, "/v1/runs?limit=1")["data"][0]["run_id"]

    def count(result: str) -> float:
        return connector.metrics().get(
            f'semarize_connector_webhook_deliveries_total{{result="{result}"}}', 0.0
        )

    now = int(time.time())
    body = forged_event(run_id, "evt_forged")
    base = {"Content-Type": "application/json", "Semarize-Event-Id": "evt_forged"}
    attacks = {
        "no signature": (body, base),
        "forged signature": (body, base | {"Semarize-Signature": f"t={now},v1={'ab' * 32}"}),
        "wrong secret": (body, base | {"Semarize-Signature": signature("whsec_x", now, body)}),
        "expired timestamp": (
            body,
            base | {"Semarize-Signature": signature(SECRET, now - 301, body)},
        ),
        "body changed after signing": (
            body.replace(b"forged", b"forgex"),
            base | {"Semarize-Signature": signature(SECRET, now, body)},
        ),
    }
    for name, (payload, headers) in attacks.items():
        assert post(url, payload, headers) == 401, name
    assert count("bad_signature") == len(attacks)

    oversized = b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    assert (
        post(url, oversized, base | {"Semarize-Signature": signature(SECRET, now, oversized)})
        == 413
    )
    assert count("too_large") == 1

    malformed = b'{"id": "evt_bad", "data": '
    assert (
        post(url, malformed, base | {"Semarize-Signature": signature(SECRET, now, malformed)})
        == 400
    )
    assert count("malformed") == 1

    # A genuine delivery for a run nobody tracks, then the same delivery replayed.
    other = forged_event("run_nobody_tracks_this", "evt_other")
    replay = base | {"Semarize-Signature": signature(SECRET, now, other)}
    assert post(url, other, replay) == 200
    assert post(url, other, replay) == 200
    assert post(url, other, replay) == 200
    assert count("duplicate") == 2

    time.sleep(2)
    assert consume_all(kafka_bootstrap, topics.output) == []  # nothing completed the run
    # Only the genuine event reached the completions topic.
    published = consume_all(kafka_bootstrap, topics.completions)
    assert [header_dict(r["headers"])["semarize.event_id"] for r in published] == [b"evt_other"]

    # The real completion arrives from the simulator and finishes the run, with its output.
    wait_for_outputs(kafka_bootstrap, topics.output, 1, timeout=60)
    # A late, genuinely signed completion of the finished run changes nothing.
    late = forged_event(run_id, "evt_late")
    assert (
        post(url, late, base | {"Semarize-Signature": signature(SECRET, int(time.time()), late)})
        == 200
    )
    time.sleep(2)
    stats = sim.stats()
    connector.send(signal.SIGTERM)
    assert connector.wait(60) == 0, connector.tail()

    outputs = consume_all(kafka_bootstrap, topics.output)
    assert len(outputs) == 1
    value = orjson.loads(outputs[0]["value"])
    assert value["run_id"] == run_id
    assert value["output"] == sim_get(sim.url, f"/v1/runs/{run_id}")["output"]
    assert "forged" not in value["output"]["bricks"]
    assert get_polls(stats) == 0  # finished by the webhook, not by a poll
    logs = "\n".join(str(entry) for entry in connector.logs())
    assert SECRET not in logs


# --- the reader on its own -----------------------------------------------------------------------


def test_completions_reader_reads_every_partition_from_the_lookback(
    kafka_bootstrap: str,
) -> None:
    topic = unique_name("completions")
    create_topic(kafka_bootstrap, topic, 3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    now_ms = int(time.time() * 1000)

    def send(run_id: str, partition: int, timestamp_ms: int) -> None:
        value = orjson.dumps(
            {"id": f"evt_{run_id}", "data": {"run_id": run_id, "status": "failed"}}
        )
        producer.produce(
            topic, value, key=run_id.encode(), partition=partition, timestamp=timestamp_ms
        )

    for partition in range(3):
        send(f"old_{partition}", partition, now_ms - 600_000)  # before the lookback
        send(f"recent_{partition}", partition, now_ms - 30_000)
    producer.produce(topic, b"not json", partition=0)
    assert producer.flush(10) == 0

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        received: list[Completion] = []
        reader = CompletionsReader(
            reader_config(
                bootstrap_servers=kafka_bootstrap, group_id="g", instance_id="test", extra={}
            ),
            topic,
            lookback_seconds=120,
            on_completions=received.extend,
        )
        reader.start(loop)
        try:
            deadline = loop.time() + 20
            while len(received) < 3:
                assert loop.time() < deadline, received
                await asyncio.sleep(0.1)
            assert reader.partitions == 3 and reader.alive
            for partition in range(3):  # records after the start are read too
                send(f"new_{partition}", partition, int(time.time() * 1000))
            await asyncio.to_thread(producer.flush, 10)
            while len(received) < 6:
                assert loop.time() < deadline, received
                await asyncio.sleep(0.1)
        finally:
            reader.stop()
            await asyncio.to_thread(reader.closed.wait, 10)
        return sorted(c.run_id for c in received)

    assert asyncio.run(main()) == sorted(
        [f"recent_{p}" for p in range(3)] + [f"new_{p}" for p in range(3)]
    )
