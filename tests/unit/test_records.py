"""Input decoding, output records and dead-letter headers (DESIGN.md section 1)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

import connector
from connector.config import InputMapping
from connector.records import (
    REDRIVE_GENERATION_HEADER,
    DeadLetterContext,
    Decoder,
    InvalidInput,
    RunRequest,
    SourceRecord,
    dead_letter_headers,
    output_record,
    rfc3339,
)

KIT = "A1B2C3D4"
SECRET_WORDS = "the quarterly numbers are confidential"


def make_decoder(**overrides: Any) -> Decoder:
    options: dict[str, Any] = {
        "mapping": InputMapping(),
        "kit_code": KIT,
        "kit_version_id": None,
        "run_type": "api",
        "mode": "async",
        "salt": "",
        "max_bytes": 65536,
    }
    options.update(overrides)
    return Decoder(**options)


def record(
    value: bytes | None,
    *,
    key: bytes | None = b"k-1",
    headers: list[tuple[str, bytes]] | None = None,
    topic: str = "transcripts",
    partition: int = 3,
    offset: int = 41,
    timestamp_ms: int | None = 1_700_000_000_123,
) -> SourceRecord:
    return SourceRecord(topic, partition, offset, timestamp_ms, key, value, headers)


def js(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def decoded(value: bytes | None, **kwargs: Any) -> RunRequest:
    result = make_decoder().decode(record(value, **kwargs))
    assert isinstance(result, RunRequest), result
    return result


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# --- bad records -----------------------------------------------------------------------------

TOO_BIG = js({"transcript": "x" * 65536})

BAD_RECORDS: list[tuple[str, bytes | None, str]] = [
    ("empty value", b"", "empty"),
    ("null value (tombstone)", None, "empty"),
    ("invalid UTF-8 in a string", b'{"transcript": "caf\xe9"}', "not_json"),
    ("invalid UTF-8: lone continuation byte", b'{"transcript": "\x80abc"}', "not_json"),
    ("invalid UTF-8: overlong encoding", b'{"transcript": "\xc0\xaf"}', "not_json"),
    ("invalid UTF-8: encoded surrogate", b'{"transcript": "\xed\xa0\x80"}', "not_json"),
    ("UTF-16 encoded JSON", '{"transcript": "hi"}'.encode("utf-16"), "not_json"),
    ("not JSON at all", b"hello, world", "not_json"),
    ("white space only", b"   \n", "not_json"),
    ("truncated JSON", b'{"transcript": "hi"', "not_json"),
    ("single-quoted JSON", b"{'transcript': 'hi'}", "not_json"),
    ("JSON with a comment", b'{"transcript": "hi" /* c */}', "not_json"),
    ("trailing garbage", b'{"transcript": "hi"} x', "not_json"),
    ("two documents", b'{"transcript": "hi"}{"transcript": "hi"}', "not_json"),
    ("byte order mark", b'\xef\xbb\xbf{"transcript": "hi"}', "not_json"),
    ("NaN literal", b'{"transcript": "hi", "metadata": NaN}', "not_json"),
    ("Infinity literal", b'{"transcript": "hi", "metadata": Infinity}', "not_json"),
    ("number overflowing a double", b'{"transcript": "hi", "metadata": 1e400}', "not_json"),
    ("lone high surrogate escape", b'{"transcript": "a\\ud800b"}', "not_json"),
    ("lone low surrogate escape", b'{"transcript": "a\\udc00b"}', "not_json"),
    ("reversed surrogate pair", b'{"transcript": "\\ude00\\ud83d"}', "not_json"),
    (
        "5000 levels of nesting",
        b'{"transcript": "hi", "metadata": ' + nested(5000) + b"}",
        "not_json",
    ),
    ("input nested too deep to re-encode", b'{"input": {"x": ' + nested(300) + b"}}", "not_json"),
    (
        "metadata nested too deep to write",
        b'{"transcript": "hi", "metadata": ' + nested(300) + b"}",
        "not_json",
    ),
    ("JSON array", b'[{"transcript": "hi"}]', "not_object"),
    ("JSON string", b'"transcript"', "not_object"),
    ("JSON number", b"42", "not_object"),
    ("JSON null", b"null", "not_object"),
    ("JSON true", b"true", "not_object"),
    ("value over input_max_bytes", TOO_BIG, "too_large"),
    ("empty object", b"{}", "no_transcript"),
    ("missing transcript", js({"event_id": "e1", "metadata": {"a": 1}}), "no_transcript"),
    ("transcript is a number", js({"transcript": 42}), "bad_transcript"),
    ("transcript is an object", js({"transcript": {"text": "hi"}}), "bad_transcript"),
    ("transcript is null", js({"transcript": None}), "bad_transcript"),
    ("transcript is a boolean", js({"transcript": True}), "bad_transcript"),
    ("empty transcript", js({"transcript": ""}), "bad_transcript"),
    ("white-space transcript", js({"transcript": " \n\t "}), "bad_transcript"),
    ("empty list of turns", js({"transcript": []}), "bad_transcript"),
    ("turns without text", js({"transcript": [{"speaker": "A"}]}), "bad_transcript"),
    ("turn text is a number", js({"transcript": [{"speaker": "A", "text": 5}]}), "bad_transcript"),
    ("turn text is null", js({"transcript": [{"speaker": "A", "text": None}]}), "bad_transcript"),
    ("turn is a string", js({"transcript": ["hello"]}), "bad_transcript"),
    ("second turn broken", js({"transcript": [{"text": "a"}, []]}), "bad_transcript"),
    ("speaker is a number", js({"transcript": [{"speaker": 1, "text": "a"}]}), "bad_transcript"),
    ("input is an array", js({"input": ["hi"]}), "bad_input"),
    ("input is a string", js({"input": "hi"}), "bad_input"),
    ("input is null", js({"input": None}), "bad_input"),
    ("input is a list with a transcript", js({"transcript": "hi", "input": [1]}), "bad_input"),
    ("event_id is a boolean", js({"event_id": True, "transcript": "hi"}), "bad_event_id"),
    ("event_id is false", js({"event_id": False, "transcript": "hi"}), "bad_event_id"),
    ("event_id is a float", js({"event_id": 1.5, "transcript": "hi"}), "bad_event_id"),
    ("event_id is an object", js({"event_id": {"id": 1}, "transcript": "hi"}), "bad_event_id"),
    ("event_id is a list", js({"event_id": ["e"], "transcript": "hi"}), "bad_event_id"),
    ("event_id is empty", js({"event_id": "", "transcript": "hi"}), "bad_event_id"),
    ("event_id over 1024 chars", js({"event_id": "e" * 1025, "transcript": "hi"}), "bad_event_id"),
    ("kit_code is a number", js({"transcript": "hi", "kit_code": 12345678}), "bad_kit"),
    ("kit_version_id is a list", js({"transcript": "hi", "kit_version_id": ["v"]}), "bad_kit"),
    ("per-event kit is empty", js({"transcript": "hi", "kit_code": ""}), "bad_kit"),
    (
        "per-event kit pair null",
        js({"transcript": "hi", "kit_code": None, "kit_version_id": None}),
        "bad_kit",
    ),
]


@pytest.mark.parametrize(
    ("value", "reason"),
    [pytest.param(value, reason, id=name) for name, value, reason in BAD_RECORDS],
)
def test_bad_record_is_invalid_input(value: bytes | None, reason: str) -> None:
    result = make_decoder().decode(record(value))
    assert isinstance(result, InvalidInput), result
    assert result.reason == reason
    assert result.message


def test_there_are_at_least_30_kinds_of_bad_records() -> None:
    assert len({name for name, _, _ in BAD_RECORDS}) >= 30


@pytest.mark.parametrize(
    "header",
    [b"abc", b"-1", b"1.0", b"", b"\xff", "\u0663".encode(), b"0x2"],
    ids=["word", "negative", "float", "empty", "not-ascii", "arabic-digit", "hex"],
)
def test_bad_redrive_generation_header_is_invalid_input(header: bytes) -> None:
    value = js({"event_id": "e1", "transcript": "hi"})
    result = make_decoder().decode(record(value, headers=[(REDRIVE_GENERATION_HEADER, header)]))
    assert isinstance(result, InvalidInput)
    assert result.reason == "bad_header"
    assert result.event_id == "e1"


def test_messages_never_quote_the_transcript() -> None:
    bad_values = [
        js({"transcript": {"t": SECRET_WORDS}}),
        js({"transcript": [SECRET_WORDS]}),
        js({"transcript": [{"speaker": SECRET_WORDS, "text": 1}]}),
        js({"input": [SECRET_WORDS]}),
        js({"transcript": SECRET_WORDS})[:-3],  # truncated
        js({"transcript": SECRET_WORDS}) + b" " + SECRET_WORDS.encode(),
        js({"transcript": SECRET_WORDS, "event_id": SECRET_WORDS + "x" * 1024}),
    ]
    for value in bad_values:
        result = make_decoder().decode(record(value))
        assert isinstance(result, InvalidInput), value
        assert "quarterly" not in result.message
        assert "quarterly" not in (result.event_id or "")


def test_invalid_input_names_the_event_once_it_is_known() -> None:
    result = make_decoder().decode(record(js({"event_id": "e-7", "transcript": 3})))
    assert isinstance(result, InvalidInput)
    assert result.event_id == "e-7"
    # A value that cannot be read names the event by the key, else by its coordinates.
    for value in (b"[]", b"", None, b"{", b"x" * 70_000):
        result = make_decoder().decode(record(value, key=b"k-1"))
        assert isinstance(result, InvalidInput)
        assert result.event_id == "k-1"
        result = make_decoder().decode(record(value, key=None, partition=1, offset=9))
        assert isinstance(result, InvalidInput)
        assert result.event_id == "transcripts-1-9"


def test_size_limit_is_inclusive() -> None:
    value = js({"transcript": "x"})
    padded = value[:-1] + b" " * (100 - len(value)) + b"}"
    assert len(padded) == 100
    assert isinstance(make_decoder(max_bytes=100).decode(record(padded)), RunRequest)
    over = padded[:-1] + b" }"
    result = make_decoder(max_bytes=100).decode(record(over))
    assert isinstance(result, InvalidInput)
    assert result.reason == "too_large"


def test_bad_records_do_not_break_the_decoder() -> None:
    decoder = make_decoder()
    for _, value, _ in BAD_RECORDS:
        decoder.decode(record(value))
    assert isinstance(decoder.decode(record(js({"transcript": "hi"}))), RunRequest)


# --- good records ----------------------------------------------------------------------------


def body_of(request: RunRequest) -> dict[str, Any]:
    assert request.body is not None
    body: dict[str, Any] = orjson.loads(request.body)
    return body


def test_string_transcript_becomes_input_transcript() -> None:
    request = decoded(js({"event_id": "e1", "transcript": "A: hi\nB: hello"}))
    assert request.event_id == "e1"
    assert body_of(request) == {
        "input": {"transcript": "A: hi\nB: hello"},
        "type": "api",
        "mode": "async",
        "kit_code": KIT,
    }
    assert request.kit_code == KIT
    assert request.kit_version_id is None
    assert request.kit_from_event is False
    assert request.redrive_generation == 0
    assert request.metadata is None


def test_list_of_turns_is_sent_as_is() -> None:
    turns = [
        {"speaker": "Rep", "text": "Hi"},
        {"text": "no speaker"},
        {"speaker": None, "text": ""},
    ]
    request = decoded(js({"transcript": turns}))
    assert body_of(request)["input"] == {"transcript": turns}


def test_input_object_is_sent_as_is_with_context_fields() -> None:
    run_input = {"transcript": "hi", "account_id": "acc_1", "stage": "demo", "metadata": {"x": 1}}
    request = decoded(js({"input": run_input}))
    assert body_of(request)["input"] == run_input


def test_input_and_transcript_are_combined() -> None:
    request = decoded(js({"transcript": "hi", "input": {"account_id": "acc_1"}}))
    assert body_of(request)["input"] == {"account_id": "acc_1", "transcript": "hi"}


def test_input_without_transcript_is_valid() -> None:
    request = decoded(js({"input": {"messages": [{"role": "user", "content": "x"}]}}))
    assert body_of(request)["input"] == {"messages": [{"role": "user", "content": "x"}]}


def test_metadata_passes_through_untouched() -> None:
    metadata = {"crm": {"deal": "d-1", "tags": ["a", "b"]}, "n": 1.25, "none": None}
    request = decoded(js({"transcript": "hi", "metadata": metadata}))
    assert request.metadata == metadata
    assert "metadata" not in body_of(request)["input"]


def test_valid_surrogate_pair_and_unicode_are_accepted() -> None:
    request = decoded(b'{"transcript": "smile \\ud83d\\ude00 caf\xc3\xa9"}')
    assert body_of(request)["input"]["transcript"] == "smile \U0001f600 café"


def test_nesting_orjson_can_write_is_accepted() -> None:
    request = decoded(b'{"transcript": "hi", "metadata": ' + nested(100) + b"}")
    assert request.metadata is not None


def test_body_carries_mode_and_type() -> None:
    decoder = make_decoder(mode="sync", run_type="sandbox")
    request = decoder.decode(record(js({"transcript": "hi"})))
    assert isinstance(request, RunRequest)
    assert body_of(request)["mode"] == "sync"
    assert body_of(request)["type"] == "sandbox"


def test_configured_version_is_sent_with_the_code() -> None:
    decoder = make_decoder(kit_code=KIT, kit_version_id="kv_9")
    request = decoder.decode(record(js({"transcript": "hi"})))
    assert isinstance(request, RunRequest)
    assert body_of(request)["kit_code"] == KIT
    assert body_of(request)["kit_version_id"] == "kv_9"


def test_custom_mapping_with_dotted_paths() -> None:
    mapping = InputMapping(
        event_id="meta.id",
        transcript="call.text",
        input="call.context",
        kit_code="routing.kit",
        kit_version_id="routing.version",
        metadata="meta.extra",
    )
    doc = {
        "meta": {"id": "call-9", "extra": {"team": "emea"}},
        "call": {"text": "hello", "context": {"stage": "won"}},
        "routing": {"kit": "Z9Y8X7W6"},
        "event_id": "ignored",
        "transcript": "ignored",
    }
    request = make_decoder(mapping=mapping).decode(record(js(doc)))
    assert isinstance(request, RunRequest)
    assert request.event_id == "call-9"
    assert request.metadata == {"team": "emea"}
    assert request.kit_code == "Z9Y8X7W6"
    assert request.kit_from_event
    assert body_of(request)["input"] == {"stage": "won", "transcript": "hello"}


def test_custom_mapping_missing_path_is_no_transcript() -> None:
    mapping = InputMapping(transcript="call.text", input="call.context")
    result = make_decoder(mapping=mapping).decode(record(js({"call": "not an object"})))
    assert isinstance(result, InvalidInput)
    assert result.reason == "no_transcript"


# --- event id --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (42, "42"),
        (0, "0"),
        (-7, "-7"),
        (18446744073709551615, "18446744073709551615"),
        ("évènement-1", "évènement-1"),
        ("e" * 1024, "e" * 1024),
    ],
    ids=["int", "zero", "negative", "u64-max", "unicode", "1024-chars"],
)
def test_event_id_numbers_and_strings(raw: Any, expected: str) -> None:
    assert decoded(js({"event_id": raw, "transcript": "hi"})).event_id == expected


def test_event_id_falls_back_to_the_key() -> None:
    assert decoded(js({"transcript": "hi"}), key="clé-1".encode()).event_id == "clé-1"


def test_null_event_id_falls_back_to_the_key() -> None:
    assert decoded(js({"event_id": None, "transcript": "hi"}), key=b"key-2").event_id == "key-2"


def test_event_id_falls_back_to_coordinates_without_a_key() -> None:
    request = decoded(js({"transcript": "hi"}), key=None, topic="calls", partition=2, offset=99)
    assert request.event_id == "calls-2-99"


def test_empty_key_falls_back_to_coordinates() -> None:
    request = decoded(js({"transcript": "hi"}), key=b"", topic="calls", partition=0, offset=5)
    assert request.event_id == "calls-0-5"


def test_key_that_is_not_utf8_is_used_as_hex() -> None:
    assert decoded(js({"transcript": "hi"}), key=b"\xff\x00\x01").event_id == "ff0001"


def test_event_id_wins_over_the_key() -> None:
    assert decoded(js({"event_id": "e1", "transcript": "hi"}), key=b"key").event_id == "e1"


# --- per-event Kit ---------------------------------------------------------------------------


def test_per_event_kit_code_replaces_the_configured_pair() -> None:
    decoder = make_decoder(kit_code=KIT, kit_version_id="kv_conf")
    request = decoder.decode(record(js({"transcript": "hi", "kit_code": "Z9Y8X7W6"})))
    assert isinstance(request, RunRequest)
    assert (request.kit_code, request.kit_version_id) == ("Z9Y8X7W6", None)
    assert request.kit_from_event
    body = body_of(request)
    assert body["kit_code"] == "Z9Y8X7W6"
    assert "kit_version_id" not in body


def test_per_event_version_replaces_the_configured_pair() -> None:
    request = decoded(js({"transcript": "hi", "kit_version_id": "kv_event"}))
    assert (request.kit_code, request.kit_version_id) == (None, "kv_event")
    assert request.kit_from_event
    body = body_of(request)
    assert body["kit_version_id"] == "kv_event"
    assert "kit_code" not in body


def test_per_event_pair_with_one_null_uses_the_other() -> None:
    request = decoded(js({"transcript": "hi", "kit_code": None, "kit_version_id": "kv_1"}))
    assert (request.kit_code, request.kit_version_id) == (None, "kv_1")
    assert request.kit_from_event


def test_without_per_event_kit_the_configured_one_is_used() -> None:
    decoder = make_decoder(kit_code=None, kit_version_id="kv_conf")
    request = decoder.decode(record(js({"transcript": "hi"})))
    assert isinstance(request, RunRequest)
    assert (request.kit_code, request.kit_version_id) == (None, "kv_conf")
    assert not request.kit_from_event


def test_per_event_kit_changes_the_idempotency_key() -> None:
    configured = decoded(js({"event_id": "e", "transcript": "hi"}))
    same_kit = decoded(js({"event_id": "e", "transcript": "hi", "kit_code": KIT}))
    other_kit = decoded(js({"event_id": "e", "transcript": "hi", "kit_code": "Z9Y8X7W6"}))
    assert configured.idempotency_key == same_kit.idempotency_key
    assert other_kit.idempotency_key != configured.idempotency_key


# --- redrive generation ----------------------------------------------------------------------


def test_redrive_generation_header_is_read() -> None:
    value = js({"event_id": "e1", "transcript": "hi"})
    plain = decoded(value)
    zero = decoded(value, headers=[(REDRIVE_GENERATION_HEADER, b"0")])
    two = decoded(value, headers=[("other", b"x"), (REDRIVE_GENERATION_HEADER, b"2")])
    assert (plain.redrive_generation, zero.redrive_generation, two.redrive_generation) == (0, 0, 2)
    assert plain.idempotency_key == zero.idempotency_key
    assert two.idempotency_key != plain.idempotency_key


def test_other_headers_do_not_change_the_key() -> None:
    value = js({"event_id": "e1", "transcript": "hi"})
    assert (
        decoded(value).idempotency_key
        == decoded(value, headers=[("traceparent", b"00-abc"), ("x", b"")]).idempotency_key
    )


# --- output record ---------------------------------------------------------------------------

OUTPUT_FIELDS = {
    "event_id",
    "run_id",
    "status",
    "kit_code",
    "kit_version_id",
    "duration_ms",
    "output",
    "metadata",
    "source",
    "submitted_at",
    "completed_at",
}


def parse_rfc3339_utc(text: str) -> datetime:
    assert text.endswith("Z"), text
    moment = datetime.fromisoformat(text[:-1] + "+00:00")
    assert moment.utcoffset() is not None
    return moment


def test_output_record_format() -> None:
    source = record(
        js({"event_id": "e1", "transcript": "hi", "metadata": {"deal": 7}}),
        key=b"k-1",
        headers=[("traceparent", b"00-1"), ("tenant", b"acme")],
    )
    request = make_decoder().decode(source)
    assert isinstance(request, RunRequest)
    output = {
        "kit_code": KIT,
        "bricks": {"pain": {"value": True, "confidence": 0.9, "reason": "r", "evidence": ["e"]}},
        "future_field": [1, 2],
    }
    run = {
        "run_id": "run_123",
        "status": "succeeded",
        "kit_version_id": "kv_5",
        "duration_ms": 1234,
        "output": output,
        "unknown": "ignored",
    }
    key, value, headers = output_record(
        source, request, run, submitted_at=1_700_000_001.5, completed_at=1_700_000_003.25
    )
    assert key == b"k-1"
    assert headers == [
        ("traceparent", b"00-1"),
        ("tenant", b"acme"),
        ("semarize.run_id", b"run_123"),
        ("semarize.event_id", b"e1"),
    ]
    doc = orjson.loads(value)
    assert set(doc) == OUTPUT_FIELDS
    assert doc["event_id"] == "e1"
    assert doc["run_id"] == "run_123"
    assert doc["status"] == "succeeded"
    assert doc["kit_code"] == KIT
    assert doc["kit_version_id"] == "kv_5"
    assert doc["duration_ms"] == 1234
    assert doc["output"] == output
    assert doc["metadata"] == {"deal": 7}
    assert doc["source"] == {
        "topic": "transcripts",
        "partition": 3,
        "offset": 41,
        "timestamp": "2023-11-14T22:13:20.123Z",
    }
    assert doc["submitted_at"] == "2023-11-14T22:13:21.500Z"
    assert doc["completed_at"] == "2023-11-14T22:13:23.250Z"
    for field in ("submitted_at", "completed_at"):
        parse_rfc3339_utc(doc[field])
    parse_rfc3339_utc(doc["source"]["timestamp"])


def test_output_values_match_the_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema_path = Path(connector.__file__).parent / "schemas" / "output-record.schema.json"
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    bricks = {"pain": {"value": True, "confidence": 0.5, "reason": "r", "evidence": ["e"]}}
    cases = [
        (record(js({"event_id": "e1", "transcript": "hi", "metadata": [1]})), {"bricks": bricks}),
        (record(js({"transcript": "hi"}), key=None, timestamp_ms=None), {"bricks": {}}),
        (record(js({"input": {"transcript": "x"}, "kit_version_id": "kv"})), {"bricks": {}}),
    ]
    for source, output in cases:
        request = make_decoder().decode(source)
        assert isinstance(request, RunRequest)
        run = {"run_id": "run_1", "status": "succeeded", "duration_ms": 10, "output": output}
        _, value, _ = output_record(source, request, run, submitted_at=1.0, completed_at=2.0)
        errors = [e.message for e in validator.iter_errors(orjson.loads(value))]
        assert errors == []


def test_output_key_is_event_id_when_input_has_no_key() -> None:
    source = record(js({"event_id": "e-9", "transcript": "hi"}), key=None, headers=None)
    request = make_decoder().decode(source)
    assert isinstance(request, RunRequest)
    key, value, headers = output_record(
        source, request, {"run_id": "run_1", "output": {}}, submitted_at=0.0, completed_at=1.0
    )
    assert key == b"e-9"
    assert headers == [("semarize.run_id", b"run_1"), ("semarize.event_id", b"e-9")]
    doc = orjson.loads(value)
    assert doc["metadata"] is None
    assert doc["submitted_at"] == "1970-01-01T00:00:00.000Z"


def test_output_without_timestamp_and_completed_at_defaults_to_now() -> None:
    source = record(js({"transcript": "hi"}), timestamp_ms=None)
    request = make_decoder().decode(source)
    assert isinstance(request, RunRequest)
    before = datetime.now(UTC)
    _, value, _ = output_record(source, request, {"run_id": "r", "output": {}}, submitted_at=0.0)
    doc = orjson.loads(value)
    assert doc["source"]["timestamp"] is None
    completed = parse_rfc3339_utc(doc["completed_at"])
    assert (completed - before).total_seconds() > -0.01
    assert (completed - before).total_seconds() < 5


def test_output_kit_falls_back_to_the_request() -> None:
    source = record(js({"transcript": "hi", "kit_version_id": "kv_ev"}))
    request = make_decoder().decode(source)
    assert isinstance(request, RunRequest)
    _, value, _ = output_record(
        source, request, {"run_id": "r", "output": "not an object"}, submitted_at=0.0
    )
    doc = orjson.loads(value)
    assert doc["kit_code"] is None
    assert doc["kit_version_id"] == "kv_ev"
    assert doc["output"] == {}


def test_an_output_too_deep_to_write_becomes_a_dead_letter_not_a_stall() -> None:
    """orjson reads 1024 levels but writes 254: output_record raises on such an answer; the
    pipeline turns it into a run_failed dead letter with the stack trace."""
    import asyncio

    from connector.kafka_source import Capacity, PauseControl
    from connector.pipeline import Pipeline, PipelineSettings
    from connector.tracker import Succeeded

    source = record(js({"transcript": "hi"}))
    deep = orjson.loads(b'{"bricks": {"b": {"value": ' + nested(300) + b"}}}")
    run = {"run_id": "run_deep", "status": "succeeded", "output": deep}
    request = make_decoder().decode(source)
    assert isinstance(request, RunRequest)
    with pytest.raises(TypeError):
        output_record(source, request, run, submitted_at=0.0)

    class Tracker:
        async def track(self, *_: object) -> Succeeded:
            return Succeeded(run, 0.0, 0.0, 0.0, 1)

    pipeline = Pipeline(
        PipelineSettings("out", "dlq", "group", "host:1", False, 0.2),
        decoder=make_decoder(),
        tracker=Tracker(),  # type: ignore[arg-type]
        sink=None,  # type: ignore[arg-type]
        capacity=Capacity(10),
        pauses=PauseControl(),
        healthy_clock=lambda: 0.0,
    )
    _, message, _ = asyncio.run(pipeline._resolve(source, 0.0))
    headers = dict(message.headers or [])
    assert message.topic == "dlq" and message.value == source.value
    assert headers["semarize.error_kind"] == b"run_failed"
    assert headers["semarize.run_id"] == b"run_deep"
    assert headers["semarize.error_code"] == b"connector_error"
    assert b"TypeError" in headers["__connect.errors.exception.stacktrace"]


def test_rfc3339_is_utc_with_milliseconds() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1_600_000_000.9999) == "2020-09-13T12:26:40.999Z"


# --- dead-letter record ----------------------------------------------------------------------

CONNECT_NAMES = [
    "__connect.errors.topic",
    "__connect.errors.partition",
    "__connect.errors.offset",
    "__connect.errors.connector.name",
    "__connect.errors.task.id",
    "__connect.errors.stage",
    "__connect.errors.class.name",
    "__connect.errors.exception.class.name",
    "__connect.errors.exception.message",
]


def as_dict(headers: list[tuple[str, bytes]]) -> dict[str, str]:
    names = [name for name, _ in headers]
    assert len(names) == len(set(names)), f"repeated header names: {names}"
    return {name: value.decode("utf-8") for name, value in headers}


def test_dead_letter_headers_for_invalid_input() -> None:
    source = record(b"[]", headers=[("tenant", b"acme"), ("bin", b"\x00\xff")])
    why = DeadLetterContext(kind="invalid_input", message="the value is JSON an array")
    headers = dead_letter_headers(source, why, group_id="my-group", instance_id="pod-0")
    assert headers[:2] == [("tenant", b"acme"), ("bin", b"\x00\xff")]
    added = as_dict(headers[2:])
    assert list(added) == [*CONNECT_NAMES, "semarize.error_kind"]
    assert added == {
        "__connect.errors.topic": "transcripts",
        "__connect.errors.partition": "3",
        "__connect.errors.offset": "41",
        "__connect.errors.connector.name": "my-group",
        "__connect.errors.task.id": "pod-0",
        "__connect.errors.stage": "VALUE_CONVERTER",
        "__connect.errors.class.name": "semarize_connector",
        "__connect.errors.exception.class.name": "connector.records.InvalidInput",
        "__connect.errors.exception.message": "the value is JSON an array",
        "semarize.error_kind": "invalid_input",
    }


def test_dead_letter_headers_for_a_failed_run_with_every_field() -> None:
    source = record(js({"transcript": "hi"}), headers=None)
    why = DeadLetterContext(
        kind="run_failed",
        message="run run_1 failed: model_error",
        event_id="e1",
        run_id="run_1",
        error_code="model_error",
        error_message="the model failed",
        error_user_message="Try again — later",
        http_status=200,
        attempts=3,
        stacktrace="Traceback ...",
    )
    headers = dead_letter_headers(source, why, group_id="g", instance_id="host:123")
    added = as_dict(headers)
    assert list(added) == [
        *CONNECT_NAMES,
        "__connect.errors.exception.stacktrace",
        "semarize.error_kind",
        "semarize.event_id",
        "semarize.run_id",
        "semarize.error_code",
        "semarize.error_message",
        "semarize.error_user_message",
        "semarize.http_status",
        "semarize.attempts",
    ]
    assert added["__connect.errors.stage"] == "TASK_PUT"
    assert added["__connect.errors.task.id"] == "host:123"
    assert added["__connect.errors.exception.class.name"] == "connector.semarize.errors.RunFailed"
    assert added["__connect.errors.exception.stacktrace"] == "Traceback ..."
    assert added["semarize.error_kind"] == "run_failed"
    assert added["semarize.error_user_message"] == "Try again — later"
    assert added["semarize.http_status"] == "200"
    assert added["semarize.attempts"] == "3"


@pytest.mark.parametrize(
    ("kind", "exception_class"),
    [
        ("run_failed", "connector.semarize.errors.RunFailed"),
        ("run_cancelled", "connector.semarize.errors.RunCancelled"),
        ("request_rejected", "connector.semarize.errors.RequestRejected"),
        ("deadline_exceeded", "connector.semarize.errors.DeadlineExceeded"),
        ("retries_exhausted", "connector.semarize.errors.RetriesExhausted"),
    ],
)
def test_dead_letter_stage_is_task_put_for_run_kinds(kind: Any, exception_class: str) -> None:
    why = DeadLetterContext(kind=kind, message="m", attempts=0)
    added = as_dict(
        dead_letter_headers(record(b"{}", headers=None), why, group_id="g", instance_id="i")
    )
    assert added["__connect.errors.stage"] == "TASK_PUT"
    assert added["semarize.error_kind"] == kind
    assert added["__connect.errors.exception.class.name"] == exception_class
    assert "__connect.errors.exception.stacktrace" not in added
    assert "semarize.run_id" not in added
    assert added["semarize.attempts"] == "0"  # zero is a value, not an absence


def test_a_redriven_record_does_not_carry_two_sets_of_error_headers() -> None:
    old = DeadLetterContext(kind="run_failed", message="old", run_id="run_old", attempts=1)
    first = dead_letter_headers(
        record(b"{}", headers=[("tenant", b"a")]), old, group_id="g", instance_id="i"
    )
    redriven = [*first, (REDRIVE_GENERATION_HEADER, b"1")]
    new = DeadLetterContext(kind="deadline_exceeded", message="new", event_id="e1")
    again = dead_letter_headers(record(b"{}", headers=redriven), new, group_id="g", instance_id="j")
    added = as_dict(again)  # also asserts that no name repeats
    assert added["tenant"] == "a"
    assert added[REDRIVE_GENERATION_HEADER] == "1"
    assert added["semarize.error_kind"] == "deadline_exceeded"
    assert added["__connect.errors.task.id"] == "j"
    assert "semarize.run_id" not in added
    assert "semarize.attempts" not in added
