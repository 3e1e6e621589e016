"""Redrive against the real broker, the real CLI and the simulator (issue 8).

The main scenario: events name a per-event Kit the API does not know, so they become
`kit_not_found` dead letters; the Kit is then published at the simulator, and redriving them
gives each a new run that succeeds. The other tests write dead letters straight into the
dead-letter topic (built by `connector.records.dead_letter_headers`, as the connector does)
to check the filters, resumability, --dry-run and the generation limit precisely.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import Producer

from connector.records import (
    REDRIVE_GENERATION_HEADER,
    REDRIVEN_FROM_HEADER,
    DeadLetterContext,
    DeadLetterKind,
    SourceRecord,
    dead_letter_headers,
    rfc3339,
)
from tests.fixtures_connector import CONNECTOR, TEST_API_KEY, ConnectorFactory, Topics
from tests.fixtures_simulator import FAST_ARGS
from tests.kafka_admin import (
    committed_offsets,
    consume_all,
    create_topic,
    end_offsets,
    header_dict,
    produce,
)

pytestmark = pytest.mark.kafka

NEW_KIT = "NEWKIT01"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def summary(self) -> str:
        lines = [line for line in self.out.splitlines() if line.startswith("redrive")]
        assert lines, (self.out, self.err)
        return lines[-1]

    @property
    def listed(self) -> list[list[str]]:
        """The --dry-run listing: event id, kind, error code, time, coordinates -> target."""
        return [line.split("\t") for line in self.out.splitlines() if "\t" in line]


def redrive(config_path: Path, env: dict[str, str], *args: str, timeout: float = 120) -> Result:
    """`semarize-connector redrive --config FILE ARGS` as a real process."""
    started = time.monotonic()
    done = subprocess.run(
        [CONNECTOR, "redrive", "--config", str(config_path), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert time.monotonic() - started < timeout
    return Result(done.returncode, done.stdout, done.stderr)


def event(i: int, *, prefix: str = "call", **extra: Any) -> tuple[bytes, bytes]:
    doc = {
        "event_id": f"{prefix}-{i:03d}",
        "transcript": [
            {"speaker": "Rep", "text": f"Thanks for joining, call {i}."},
            {"speaker": "Prospect", "text": "We set aside budget for next quarter."},
        ],
        "metadata": {"n": i},
        **extra,
    }
    return f"key-{prefix}-{i:03d}".encode(), orjson.dumps(doc)


def outputs_by_event(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        value = orjson.loads(record["value"])
        found.setdefault(value["event_id"], []).append({**record, "doc": value})
    return found


def test_kit_not_found_dead_letters_get_a_new_run_once_the_kit_exists(
    kafka_bootstrap: str,
    pipeline_topics: Any,
    simulator_factory: Any,
    connector_factory: ConnectorFactory,
) -> None:
    topics: Topics = pipeline_topics(3)
    sim = simulator_factory("--kits", "A1B2C3D4", *FAST_ARGS)
    unknown_kit = [event(i, prefix="newkit", kit_code=NEW_KIT) for i in range(12)]
    ordinary = [event(i) for i in range(6)]
    # Runs that fail whatever happens: a redrive gives them a new run, which fails again.
    failing = [
        event(i, prefix="fails", input={"_sim": {"outcome": "failed", "duration_ms": 50}})
        for i in range(3)
    ]
    trace = [("trace", b"\x00\x01"), ("tenant", b"acme")]
    produce(
        kafka_bootstrap,
        topics.input,
        [(key, value, trace) for key, value in [*unknown_kit, *ordinary, *failing]],
    )
    first = connector_factory(api_url=sim.url, topics=topics, stop_when_idle=2)
    assert first.wait(120) == 0, first.tail()

    dead = consume_all(kafka_bootstrap, topics.dlq)
    assert len(dead) == 15
    by_kind: dict[bytes | None, list[dict[str, Any]]] = {}
    for record in dead:
        headers = header_dict(record["headers"])
        by_kind.setdefault(headers["semarize.error_code"], []).append(record)
    assert len(by_kind[b"kit_not_found"]) == 12
    for record in by_kind[b"kit_not_found"]:
        headers = header_dict(record["headers"])
        assert headers["semarize.error_kind"] == b"request_rejected"
        assert headers["semarize.event_id"].startswith(b"newkit-")
    first_failed_runs = {
        header_dict(r["headers"])["semarize.event_id"]: header_dict(r["headers"])["semarize.run_id"]
        for r in dead
        if header_dict(r["headers"])["semarize.error_kind"] == b"run_failed"
    }
    assert len(first_failed_runs) == 3
    first_outputs = consume_all(kafka_bootstrap, topics.output)
    assert len(first_outputs) == 6
    runs_before = sim.stats()["runs_created"]
    assert runs_before == 9  # 6 succeeded + 3 failed; unknown Kits create no run

    sim.faults(kits=f"A1B2C3D4,{NEW_KIT}")  # the Kit is published
    input_before = consume_all(kafka_bootstrap, topics.input)
    result = redrive(first.config_path, first.env)
    assert result.code == 0, result
    assert result.summary.startswith("redrive: read 15, sent 15 to "), result.summary
    assert "skipped by filter 0, refused 0" in result.summary
    assert result.err == ""

    # Byte for byte: key, value, the input's headers; plus generation 1 and the origin.
    input_after = consume_all(kafka_bootstrap, topics.input)
    redriven = _new(input_before, input_after)
    assert len(redriven) == 15
    dead_by_coordinates = {f"{topics.dlq}/{r['partition']}/{r['offset']}": r for r in dead}
    for record in redriven:
        headers = record["headers"]
        origin = header_dict(headers)[REDRIVEN_FROM_HEADER].decode()
        letter = dead_by_coordinates.pop(origin)
        assert record["key"] == letter["key"]
        assert record["value"] == letter["value"]
        assert headers == [
            *trace,
            (REDRIVE_GENERATION_HEADER, b"1"),
            (REDRIVEN_FROM_HEADER, origin.encode()),
        ]
    assert dead_by_coordinates == {}

    # Running it again sends nothing: the position is committed.
    again = redrive(first.config_path, first.env)
    assert again.code == 0, again
    assert again.summary.startswith("redrive: read 0, sent 0"), again.summary
    assert len(consume_all(kafka_bootstrap, topics.input)) == len(input_after)

    second = connector_factory(api_url=sim.url, topics=topics, stop_when_idle=2)
    assert second.wait(120) == 0, second.tail()
    outputs = outputs_by_event(consume_all(kafka_bootstrap, topics.output))
    earlier_runs = {
        r["doc"]["run_id"] for rs in outputs_by_event(first_outputs).values() for r in rs
    }
    earlier_runs |= {run.decode() for run in first_failed_runs.values()}
    new_runs = set()
    for i in range(12):
        records = outputs[f"newkit-{i:03d}"]
        assert len(records) == 1, records  # a new run, once, and it succeeded
        output = records[0]
        assert output["doc"]["status"] == "succeeded"
        assert output["doc"]["kit_code"] == NEW_KIT
        assert output["doc"]["run_id"] not in earlier_runs
        assert header_dict(output["headers"])[REDRIVE_GENERATION_HEADER] == b"1"
        new_runs.add(output["doc"]["run_id"])
    assert len(new_runs) == 12
    assert all(len(outputs[f"call-{i:03d}"]) == 1 for i in range(6))  # not redriven

    # The failing ones had a fresh run too (another run id), which failed again.
    dead_after = consume_all(kafka_bootstrap, topics.dlq)
    again_failed = [header_dict(r["headers"]) for r in _new(dead, dead_after)]
    assert len(again_failed) == 3
    for headers in again_failed:
        assert headers["semarize.error_kind"] == b"run_failed"
        assert headers[REDRIVE_GENERATION_HEADER] == b"1"
        assert headers["semarize.run_id"] != first_failed_runs[headers["semarize.event_id"]]
        assert headers["semarize.run_id"].decode() not in earlier_runs
    assert sim.stats()["runs_created"] == runs_before + 15

    # Loop breaker: with --max-generation 1 the generation-1 dead letters are refused.
    refused = redrive(first.config_path, first.env, "--max-generation", "1")
    assert refused.code == 0, refused
    assert refused.summary.startswith("redrive: read 3, sent 0"), refused.summary
    assert "refused 3" in refused.summary
    lines = refused.err.splitlines()
    assert len(lines) == 3 and all("--max-generation 1" in line for line in lines), lines


def _new(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records of `after` that `before` did not have (by coordinates)."""
    seen = {(r["partition"], r["offset"]) for r in before}
    return [r for r in after if (r["partition"], r["offset"]) not in seen]


# --- dead letters written straight into the topic ----------------------------------------------


@dataclass(frozen=True)
class Letter:
    """One dead letter the test wrote: what it was built from and where it landed."""

    n: int
    kind: str
    code: str | None
    partition: int
    offset: int
    timestamp_ms: int

    @property
    def event_id(self) -> str:
        return f"ev-{self.n:03d}"


class DeadLetters:
    def __init__(self, bootstrap: str, topics: Topics, tmp_path: Path) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.letters: list[Letter] = []
        document = {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "group_id": f"g-{topics.input}",
                "input_topics": [topics.input],
                "output_topic": topics.output,
                "dlq_topic": topics.dlq,
            },
            "semarize": {"api_url": "http://127.0.0.1:1", "kit_code": "A1B2C3D4"},
        }
        self.config_path = tmp_path / "redrive.yaml"
        self.config_path.write_text(yaml.safe_dump(document))
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("KAFKA_", "CONNECTOR_", "SEMARIZE_"))
        }
        self.env["SEMARIZE_API_KEY"] = TEST_API_KEY

    def write(
        self,
        specs: Iterable[tuple[str, str | None, int, int]],
        *,
        generation: int | None = None,
        tombstone: bool = False,
        pad: int = 0,
    ) -> list[Letter]:
        """Write dead letters (kind, error code, partition, timestamp ms), one at a time."""
        producer = Producer({"bootstrap.servers": self.bootstrap, "acks": "all"})
        written: list[Letter] = []
        for kind, code, partition, stamp in specs:
            n = len(self.letters) + len(written)
            headers: list[tuple[str, bytes | None]] = [("trace", f"t{n}".encode()), ("nul", None)]
            if generation is not None:
                headers.append((REDRIVE_GENERATION_HEADER, str(generation).encode()))
            body = orjson.dumps(
                {"event_id": f"ev-{n:03d}", "transcript": "Rep: hi." + os.urandom(pad).hex()}
            )
            source = SourceRecord(
                topic=self.topics.input,
                partition=partition,
                offset=1000 + n,
                timestamp_ms=stamp,
                key=f"k-{n:03d}".encode(),
                value=None if tombstone else body,
                headers=headers,  # type: ignore[arg-type]  # a null header value is allowed
            )
            why = DeadLetterContext(
                kind=_kind(kind), message="failed", event_id=f"ev-{n:03d}", error_code=code
            )
            reports: list[tuple[Any, Any]] = []
            producer.produce(
                self.topics.dlq,
                source.value,
                key=source.key,
                headers=dead_letter_headers(source, why, group_id="g", instance_id="test"),
                partition=partition,
                timestamp=stamp,
                on_delivery=lambda err, msg, reports=reports: reports.append((err, msg)),
            )
            assert producer.flush(30) == 0
            ((error, message),) = reports
            assert error is None, error
            written.append(Letter(n, kind, code, message.partition(), message.offset(), stamp))
        self.letters.extend(written)
        return written

    def run(self, *args: str) -> Result:
        return redrive(self.config_path, self.env, *args)

    def redriven(self) -> list[tuple[str, dict[str, Any]]]:
        """(event id, record) of every record on the input topic (all are redriven ones)."""
        found = []
        for record in consume_all(self.bootstrap, self.topics.input):
            origin = header_dict(record["headers"])[REDRIVEN_FROM_HEADER].decode()
            match = [
                letter
                for letter in self.letters
                if f"{self.topics.dlq}/{letter.partition}/{letter.offset}" == origin
            ]
            assert len(match) == 1, origin
            found.append((match[0].event_id, record))
        return found

    def input_count(self) -> int:
        return sum(end_offsets(self.bootstrap, self.topics.input).values())


def _kind(text: str) -> DeadLetterKind:
    assert text in (
        "invalid_input",
        "run_failed",
        "run_cancelled",
        "request_rejected",
        "deadline_exceeded",
        "retries_exhausted",
    )
    return text  # type: ignore[return-value]


# Recent times: older records would fall to the topic's retention (7 days) at once.
STEP_MS = 3_600_000
T0 = (int(time.time()) // 3600 - 24) * STEP_MS  # a whole hour, a day ago


@pytest.fixture
def letters(kafka_bootstrap: str, pipeline_topics: Any, tmp_path: Path) -> DeadLetters:
    topics: Topics = pipeline_topics(3)
    dead = DeadLetters(kafka_bootstrap, topics, tmp_path)
    specs = [
        ("request_rejected", "kit_not_found", 0, T0),  # ev-000
        ("request_rejected", "payload_too_large", 1, T0 + STEP_MS),  # ev-001
        ("run_failed", "model_error", 2, T0 + 2 * STEP_MS),  # ev-002
        ("run_failed", "model_timeout", 0, T0 + 3 * STEP_MS),  # ev-003
        ("invalid_input", None, 1, T0 + 4 * STEP_MS),  # ev-004
        ("run_cancelled", "run_cancelled", 2, T0 + 5 * STEP_MS),  # ev-005
        ("deadline_exceeded", None, 0, T0 + 6 * STEP_MS),  # ev-006
        ("retries_exhausted", None, 1, T0 + 7 * STEP_MS),  # ev-007
        ("request_rejected", "kit_not_found", 2, T0 + 8 * STEP_MS),  # ev-008
        ("request_rejected", "kit_not_found", 0, T0 + 9 * STEP_MS),  # ev-009
    ]
    dead.write(specs)
    return dead


def iso(epoch_seconds: float) -> str:
    """The same instant in another spelling: an offset instead of Z, no milliseconds."""
    moment = datetime.fromtimestamp(epoch_seconds, timezone(timedelta(hours=2)))
    return moment.isoformat(timespec="seconds")


def ids(letters: list[Letter]) -> list[str]:
    return sorted(letter.event_id for letter in letters)


Select = Callable[[Letter], bool]

FILTER_CASES: list[tuple[list[str], Select]] = [
    (["--kind", "run_failed"], lambda x: x.kind == "run_failed"),
    (
        ["--kind", "run_cancelled,deadline_exceeded", "--kind", "retries_exhausted"],
        lambda x: x.kind in ("run_cancelled", "deadline_exceeded", "retries_exhausted"),
    ),
    (["--error-code", "kit_not_found"], lambda x: x.code == "kit_not_found"),
    (
        ["--kind", "request_rejected", "--error-code", "payload_too_large,model_error"],
        lambda x: x.kind == "request_rejected" and x.code in ("payload_too_large", "model_error"),
    ),
    (
        ["--since", rfc3339((T0 + 2 * STEP_MS) / 1000), "--until", iso((T0 + 5 * STEP_MS) / 1000)],
        lambda x: T0 + 2 * STEP_MS <= x.timestamp_ms < T0 + 5 * STEP_MS,
    ),
    (["--partition", "1"], lambda x: x.partition == 1),
    (
        ["--partition", "0,2", "--kind", "request_rejected"],
        lambda x: x.partition != 1 and x.kind == "request_rejected",
    ),
    (["--offset", "1-"], lambda x: x.offset >= 1),
    (["--partition", "0", "--offset", "0,2"], lambda x: x.partition == 0 and x.offset in (0, 2)),
    (["--event-id", "ev-004,ev-007", "--event-id", "nope"], lambda x: x.n in (4, 7)),
]


@pytest.mark.parametrize(
    ("argv", "select"), FILTER_CASES, ids=[" ".join(a) for a, _ in FILTER_CASES]
)
def test_filters_select_exactly_the_records_asked_for(
    letters: DeadLetters, argv: list[str], select: Select
) -> None:
    expected = [x for x in letters.letters if select(x)]
    assert 0 < len(expected) < len(letters.letters)  # the case means something

    dry = letters.run("--dry-run", *argv)
    assert dry.code == 0, dry
    assert sorted(row[0] for row in dry.listed) == ids(expected)
    assert letters.input_count() == 0  # a dry run sends nothing ...
    assert (
        committed_offsets(
            letters.bootstrap, f"g-{letters.topics.input}.redrive", letters.topics.dlq
        )
        == {}
    )  # ... and commits nothing

    result = letters.run(*argv)
    assert result.code == 0, result
    sent = letters.redriven()
    assert sorted(event_id for event_id, _ in sent) == ids(expected), (result, dry)
    skipped = "" if "--partition" in argv else f"skipped by filter {10 - len(expected)}"
    assert f"sent {len(expected)} to {letters.topics.input}" in result.summary
    assert skipped in result.summary

    # A second identical run sends nothing: filtered-out records were passed over too.
    again = letters.run(*argv)
    assert again.code == 0, again
    assert "sent 0" in again.summary
    assert letters.input_count() == len(expected)


def test_dry_run_lists_and_sends_nothing(letters: DeadLetters) -> None:
    result = letters.run("--dry-run")
    assert result.code == 0, result
    rows = {row[0]: row for row in result.listed}
    assert sorted(rows) == ids(letters.letters)
    for letter in letters.letters:
        _, kind, code, stamp, where = rows[letter.event_id]
        assert kind == letter.kind
        assert code == (letter.code or "-")
        assert stamp == rfc3339((T0 + letter.n * STEP_MS) / 1000)
        assert where == (
            f"{letters.topics.dlq}/{letter.partition}/{letter.offset} -> "
            f"{letters.topics.input} (generation 1)"
        )
    assert result.summary == (
        f"redrive (dry run): read 10, would send 10 to {letters.topics.input}, "
        "skipped by filter 0, refused 0; nothing sent, nothing committed"
    )
    assert letters.input_count() == 0
    group = f"g-{letters.topics.input}.redrive"
    assert committed_offsets(letters.bootstrap, group, letters.topics.dlq) == {}
    # A dry run after a real one shows what is left: nothing.
    assert letters.run().code == 0
    assert letters.run("--dry-run").listed == []


def test_limit_resumes_and_never_sends_twice(letters: DeadLetters) -> None:
    sent_per_run = []
    for _ in range(4):
        result = letters.run("--limit", "4")
        assert result.code == 0, result
        assert ("stopped at --limit" in result.summary) == (len(sent_per_run) < 2), result
        sent_per_run.append(result.summary.split(", sent ")[1].split(" ")[0])
    assert sent_per_run == ["4", "4", "2", "0"]
    assert sorted(sent_ids(letters)) == ids(letters.letters)  # every one, once

    # A new dead letter is picked up by the next run, and only it.
    new = letters.write([("run_failed", "model_error", 1, T0)])
    before = Counter(sent_ids(letters))
    result = letters.run()
    assert "read 1, sent 1" in result.summary, result.summary
    assert sorted((Counter(sent_ids(letters)) - before).elements()) == ids(new)

    # --from-beginning starts over on purpose.
    before = Counter(sent_ids(letters))
    over = letters.run("--from-beginning", "--kind", "invalid_input")
    assert over.code == 0, over
    assert "read 11, sent 1" in over.summary, over.summary
    assert sorted((Counter(sent_ids(letters)) - before).elements()) == ["ev-004"]

    # Another --group keeps its own position.
    other = letters.run("--group", "someone-else", "--dry-run")
    assert len(other.listed) == 11


def sent_ids(letters: DeadLetters) -> list[str]:
    return [event_id for event_id, _ in letters.redriven()]


def test_generation_limit_is_refused_with_a_clear_line(
    kafka_bootstrap: str, pipeline_topics: Any, tmp_path: Path
) -> None:
    dead = DeadLetters(kafka_bootstrap, pipeline_topics(1), tmp_path)
    dead.write([("run_failed", "model_error", 0, T0)], generation=2)  # ev-000: sent as 3
    at_limit = dead.write([("run_failed", "model_error", 0, T0)], generation=3)[0]  # ev-001
    dead.write([("run_failed", "model_error", 0, T0)])  # ev-002: sent as 1

    result = dead.run()
    assert result.code == 0, result
    assert result.summary.startswith(
        f"redrive: read 3, sent 2 to {dead.topics.input}, skipped by filter 0, refused 1"
    )
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0] == (
        f"redrive: refused {dead.topics.dlq}/0/{at_limit.offset} (event ev-001, run_failed): "
        "generation 3 is at the limit --max-generation 3; it already failed after "
        "3 redrive(s)"
    )
    generations = {
        event_id: header_dict(record["headers"])[REDRIVE_GENERATION_HEADER]
        for event_id, record in dead.redriven()
    }
    assert generations == {"ev-000": b"3", "ev-002": b"1"}

    # A higher limit, on purpose, from the beginning: the refused one goes (as generation 4).
    raised = dead.run("--from-beginning", "--max-generation", "4", "--event-id", "ev-001")
    assert "sent 1" in raised.summary, raised
    # the two other records were left out by --event-id: said once, on stderr
    assert raised.err.splitlines() == [
        f"redrive: note: 2 records left out by the filters were passed over in group "
        f"g-{dead.topics.input}.redrive; a later run in this group will not see them "
        "(use another --group for another selection, or --from-beginning)"
    ], raised
    [(_, record)] = [(e, r) for e, r in dead.redriven() if e == "ev-001"]
    assert header_dict(record["headers"])[REDRIVE_GENERATION_HEADER] == b"4"


def test_refuses_the_dead_letter_topic_as_target_and_unknown_topics(letters: DeadLetters) -> None:
    group = f"g-{letters.topics.input}.redrive"
    into_dlq = letters.run("--to", letters.topics.dlq)
    assert into_dlq.code == 2
    assert "refusing to redrive into the dead-letter topic itself" in into_dlq.err
    assert into_dlq.out == ""
    missing = letters.run("--to", f"{letters.topics.input}.nope")
    assert missing.code == 2
    assert f"topic '{letters.topics.input}.nope' does not exist" in missing.err
    assert committed_offsets(letters.bootstrap, group, letters.topics.dlq) == {}
    assert letters.input_count() == 0

    # --to another topic: byte for byte there, with the generation and the origin.
    other = create_topic(letters.bootstrap, f"{letters.topics.input}.fixed", 2)
    result = letters.run("--to", other, "--kind", "invalid_input")
    assert result.code == 0, result
    records = consume_all(letters.bootstrap, other)
    assert len(records) == 1
    assert records[0]["headers"] == [
        ("trace", b"t4"),
        ("nul", None),
        (REDRIVE_GENERATION_HEADER, b"1"),
        (REDRIVEN_FROM_HEADER, f"{letters.topics.dlq}/1/1".encode()),
    ]
    assert records[0]["key"] == b"k-004"
    assert orjson.loads(records[0]["value"])["event_id"] == "ev-004"


def test_a_null_value_is_redriven_as_is(
    kafka_bootstrap: str, pipeline_topics: Any, tmp_path: Path
) -> None:
    dead = DeadLetters(kafka_bootstrap, pipeline_topics(2), tmp_path)
    dead.write([("invalid_input", None, 1, T0)], tombstone=True)
    result = dead.run()
    assert result.code == 0, result
    (record,) = consume_all(kafka_bootstrap, dead.topics.input)
    assert record["value"] is None and record["key"] == b"k-000"


def test_nothing_is_committed_unless_every_record_sent_was_acknowledged(
    kafka_bootstrap: str, pipeline_topics: Any, tmp_path: Path
) -> None:
    dead = DeadLetters(kafka_bootstrap, pipeline_topics(1), tmp_path)
    dead.write([("run_failed", "model_error", 0, T0)])  # ev-000: small
    # ev-001: too large there (random text: the producer's compression cannot shrink it)
    dead.write([("run_failed", "model_error", 0, T0)], pad=4000)
    small = create_topic(
        kafka_bootstrap, f"{dead.topics.input}.small", 1, {"max.message.bytes": "2048"}
    )
    group = f"g-{dead.topics.input}.redrive"

    refused = dead.run("--to", small)
    assert refused.code == 1, refused
    assert "record(s) refused by the brokers (Broker: Message size too large)" in refused.err
    assert "position committed" not in refused.summary
    assert committed_offsets(kafka_bootstrap, group, dead.topics.dlq) == {}

    # Nothing was committed: the next run sends both (ev-000 again, same generation).
    result = dead.run()
    assert result.code == 0, result
    assert "read 2, sent 2" in result.summary
    assert committed_offsets(kafka_bootstrap, group, dead.topics.dlq) == {0: 2}
