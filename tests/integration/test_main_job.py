"""The main job end to end: real broker, real CLI, the simulator over real HTTP."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

import connector as connector_package
from tests.fixtures_connector import TEST_API_KEY, ConnectorFactory, Topics
from tests.kafka_admin import committed_offsets, consume_all, end_offsets, header_dict, produce

pytestmark = pytest.mark.kafka


def transcript_event(i: int, **extra: Any) -> tuple[bytes, bytes]:
    event = {
        "event_id": f"call-{i:05d}",
        "transcript": [
            {"speaker": "Rep", "text": f"Thanks for joining, call {i}. What budget do you have?"},
            {"speaker": "Prospect", "text": "We set aside budget for next quarter."},
        ],
        "metadata": {"call_number": i},
        **extra,
    }
    return f"key-{i:05d}".encode(), orjson.dumps(event)


def sim_get(url: str, path: str) -> Any:
    request = urllib.request.Request(
        url + path, headers={"Authorization": f"Bearer {TEST_API_KEY}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_2000_events_on_6_partitions(
    kafka_bootstrap: str,
    pipeline_topics: Any,
    simulator_factory: Any,
    connector_factory: ConnectorFactory,
) -> None:
    events = 2000
    topics: Topics = pipeline_topics(6)
    sim = simulator_factory(
        "--run-duration-ms", "50:500", "--fail-rate", "0.1", "--retry-after", "0", "--seed", "7"
    )
    produce(kafka_bootstrap, topics.input, [transcript_event(i) for i in range(events)])

    connector = connector_factory(api_url=sim.url, topics=topics, stop_when_idle=2)
    assert connector.wait(240) == 0, connector.tail()

    outputs = consume_all(kafka_bootstrap, topics.output)
    dead = consume_all(kafka_bootstrap, topics.dlq)
    stats = sim.stats()
    # One run per event, no more.
    assert stats["runs_created"] == events
    assert stats["runs_by_status"]["failed"] > 0
    assert len(outputs) == stats["runs_by_status"]["succeeded"]
    assert len(dead) == stats["runs_by_status"]["failed"]

    schema = json.loads(
        (
            Path(connector_package.__file__).parent / "schemas" / "output-record.schema.json"
        ).read_text()
    )
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    seen: Counter[str] = Counter()
    run_ids: Counter[str] = Counter()
    for record in outputs:
        value = orjson.loads(record["value"])
        validator.validate(value)  # the documented output contract holds for real output
        headers = header_dict(record["headers"])
        seen[value["event_id"]] += 1
        number = int(value["event_id"].split("-")[1])
        assert record["key"] == f"key-{number:05d}".encode()
        assert value["status"] == "succeeded"
        assert value["metadata"] == {"call_number": number}
        assert value["source"]["topic"] == topics.input
        assert value["output"]["bricks"], value
        assert headers["semarize.run_id"] == value["run_id"].encode()
        assert headers["semarize.event_id"] == value["event_id"].encode()
        # The run id belongs to this event's run and that run succeeded.
        run = sim_get(sim.url, f"/v1/runs/{value['run_id']}")
        assert run["status"] == "succeeded"
        assert value["output"] == run["output"] and value["duration_ms"] == run["duration_ms"]
        run_ids[value["run_id"]] += 1
    for record in dead:
        headers = header_dict(record["headers"])
        assert headers["semarize.error_kind"] == b"run_failed"
        seen[headers["semarize.event_id"].decode()] += 1
        run = sim_get(sim.url, f"/v1/runs/{headers['semarize.run_id'].decode()}")
        assert run["status"] == "failed"
        assert headers["semarize.error_code"] == run["error_code"].encode()
        assert headers["__connect.errors.stage"] == b"TASK_PUT"
        run_ids[run["run_id"]] += 1
    assert len(seen) == events and set(seen.values()) == {1}
    assert len(run_ids) == events and set(run_ids.values()) == {1}  # one run per event

    ends = end_offsets(kafka_bootstrap, topics.input)
    assert committed_offsets(kafka_bootstrap, f"g-{topics.input}", topics.input) == ends


def bad_records() -> list[tuple[str, bytes | None, bytes | None]]:
    """(name, key, value) of records that must become invalid_input dead letters."""
    deep = b"[" * 5000 + b"]" * 5000
    deep_object = b'{"transcript": "x", "a": ' + b'{"b": ' * 3000 + b"1" + b"}" * 3000 + b"}"
    cases: list[tuple[str, bytes | None, bytes | None]] = [
        ("invalid utf-8", b"k", b'{"transcript": "caf\xe9"}'),
        ("invalid utf-8 raw", b"k", b"\xff\xfe\xfd"),
        ("not json", b"k", b"hello world"),
        ("json array", b"k", b'[{"transcript": "x"}]'),
        ("json string", b"k", b'"transcript"'),
        ("json number", b"k", b"42"),
        ("json null", b"k", b"null"),
        ("json true", b"k", b"true"),
        ("empty value", b"k", b""),
        ("null value", b"k", None),
        ("missing transcript", b"k", b'{"event_id": "x"}'),
        ("empty object", b"k", b"{}"),
        ("transcript number", b"k", b'{"transcript": 12}'),
        ("transcript object", b"k", b'{"transcript": {"text": "hi"}}'),
        ("transcript null", b"k", b'{"transcript": null}'),
        ("transcript empty", b"k", b'{"transcript": ""}'),
        ("transcript blank", b"k", b'{"transcript": "   "}'),
        ("transcript empty list", b"k", b'{"transcript": []}'),
        ("turn not object", b"k", b'{"transcript": ["hi"]}'),
        ("turn without text", b"k", b'{"transcript": [{"speaker": "Rep"}]}'),
        ("turn text number", b"k", b'{"transcript": [{"speaker": "Rep", "text": 3}]}'),
        ("input not object", b"k", b'{"input": "transcript"}'),
        ("input list", b"k", b'{"input": [1, 2]}'),
        ("too large", b"k", b'{"transcript": "' + b"a" * (5 * 1024 * 1024) + b'"}'),
        ("deeply nested array", b"k", deep),
        ("deeply nested object", b"k", deep_object),
        ("truncated json", b"k", b'{"transcript": "hello'),
        ("trailing garbage", b"k", b'{"transcript": "hi"} trailing'),
        ("nan literal", b"k", b'{"transcript": "hi", "x": NaN}'),
        ("lone surrogate", b"k", b'{"transcript": "\\ud800"}'),
        ("bom", b"k", b'\xef\xbb\xbf{"transcript": "hi"}'),
        ("event_id object", b"k", b'{"event_id": {"a": 1}, "transcript": "hi"}'),
        ("event_id bool", b"k", b'{"event_id": true, "transcript": "hi"}'),
        ("kit_code number", b"k", b'{"transcript": "hi", "kit_code": 12345678}'),
        ("single quotes", b"k", b"{'transcript': 'hi'}"),
        ("no key either", None, b"{]"),
    ]
    return cases


def test_bad_records_become_dead_letters_and_the_rest_flows(
    kafka_bootstrap: str,
    pipeline_topics: Any,
    simulator_factory: Any,
    connector_factory: ConnectorFactory,
) -> None:
    topics: Topics = pipeline_topics(1)  # one partition: good records after every bad one
    sim = simulator_factory("--run-duration-ms", "20:100", "--retry-after", "0")
    cases = bad_records()
    assert len(cases) >= 30
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]] | None]] = []
    for index, (name, key, value) in enumerate(cases):
        records.append((key, value, [("case", name.encode()), ("trace", b"\x00\x01")]))
        good_key, good_value = transcript_event(index)
        records.append((good_key, good_value, None))
    produce(kafka_bootstrap, topics.input, records, config={"message.max.bytes": 10 * 1024 * 1024})
    connector = connector_factory(api_url=sim.url, topics=topics, stop_when_idle=2)
    assert connector.wait(180) == 0, connector.tail()

    dead = consume_all(kafka_bootstrap, topics.dlq, config={"fetch.max.bytes": 20 * 1024 * 1024})
    by_case = {header_dict(r["headers"])["case"].decode(): r for r in dead}
    inputs = consume_all(
        kafka_bootstrap, topics.input, config={"fetch.max.bytes": 20 * 1024 * 1024}
    )
    input_timestamps = {r["offset"]: r["timestamp"] for r in inputs}
    assert sorted(by_case) == sorted(name for name, _, _ in cases)
    assert len(dead) == len(cases)
    for name, key, value in cases:
        record = by_case[name]
        headers = header_dict(record["headers"])
        assert record["key"] == key, name
        assert record["value"] == value, name  # byte for byte
        assert headers["trace"] == b"\x00\x01"
        assert headers["semarize.error_kind"] == b"invalid_input", name
        assert headers["__connect.errors.stage"] == b"VALUE_CONVERTER"
        assert headers["__connect.errors.topic"] == topics.input.encode()
        assert headers["__connect.errors.exception.message"], name
        assert int(headers["__connect.errors.offset"]) == record_offset(records, name)
        offset = record_offset(records, name)
        assert record["timestamp"] == input_timestamps[offset], name  # unchanged
    outputs = consume_all(kafka_bootstrap, topics.output)
    assert len(outputs) == len(cases)
    assert sim.stats()["runs_created"] == len(cases)
    metrics_ok = connector.logs()
    assert any(entry.get("outcome") == "invalid_input" for entry in metrics_ok)


def record_offset(records: list[Any], name: str) -> int:
    for offset, (_, _, headers) in enumerate(records):
        if headers and headers[0][1] == name.encode():
            return offset
    raise AssertionError(name)


def test_429_and_5xx_storm_changes_nothing(
    kafka_bootstrap: str,
    pipeline_topics: Any,
    simulator_factory: Any,
    connector_factory: ConnectorFactory,
) -> None:
    events = 400
    topics: Topics = pipeline_topics(4)
    sim = simulator_factory(
        "--run-duration-ms",
        "50:300",
        "--retry-after",
        "0",
        "--retry-after-429",
        "0",
        "--rate-429",
        "0.3",
        "--rate-5xx",
        "0.1",
        "--seed",
        "11",
    )
    produce(kafka_bootstrap, topics.input, [transcript_event(i) for i in range(events)])
    connector = connector_factory(api_url=sim.url, topics=topics, stop_when_idle=2)
    assert connector.wait(240) == 0, connector.tail()

    outputs = consume_all(kafka_bootstrap, topics.output)
    dead = consume_all(kafka_bootstrap, topics.dlq)
    stats = sim.stats()
    assert dead == []
    assert sorted(orjson.loads(r["value"])["event_id"] for r in outputs) == [
        f"call-{i:05d}" for i in range(events)
    ]
    assert stats["runs_created"] == events
    create_statuses = stats["requests"]["POST /v1/runs"]
    assert create_statuses.get("429", 0) > 0 and any(s.startswith("5") for s in create_statuses)
