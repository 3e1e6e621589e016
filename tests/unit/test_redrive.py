"""Redrive: header rewriting, generations, filter and option parsing, usage errors.

The broker side (reading, sending, committing) is in tests/integration/test_redrive.py.
"""

from __future__ import annotations

import argparse
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from connector.cli import _parser, main
from connector.config import InputMapping, load_settings
from connector.records import (
    REDRIVE_GENERATION_HEADER,
    REDRIVEN_FROM_HEADER,
    DeadLetterContext,
    Decoder,
    Headers,
    RunRequest,
    SourceRecord,
    dead_letter_headers,
)
from connector.redrive import (
    KINDS,
    DeadLetter,
    Filters,
    add_arguments,
    parse_ranges,
    parse_time,
    record_generation,
    redrive_headers,
    run_redrive,
)

ORIGINAL: Headers = [
    ("trace", b"\x00\x01"),
    ("tenant", b"acme"),
    ("trace", b"second value, same name"),
    ("empty", b""),
]


def source(headers: Headers | None = None, **overrides: Any) -> SourceRecord:
    fields: dict[str, Any] = {
        "topic": "transcripts",
        "partition": 2,
        "offset": 41,
        "timestamp_ms": 1_700_000_000_123,
        "key": b"key-1",
        "value": json.dumps({"event_id": "call-1", "transcript": "Rep: hi."}).encode(),
        "headers": list(ORIGINAL) if headers is None else headers,
    }
    fields.update(overrides)
    return SourceRecord(**fields)


def failed(record: SourceRecord, **why: Any) -> Headers:
    context: dict[str, Any] = {
        "kind": "run_failed",
        "message": "run failed",
        "event_id": "call-1",
        "run_id": "run_1",
        "error_code": "model_error",
        "error_message": "the model failed",
        "error_user_message": "try again",
        "http_status": 404,
        "attempts": 3,
        "stacktrace": "Traceback ...",
    }
    context.update(why)
    return dead_letter_headers(
        record, DeadLetterContext(**context), group_id="g", instance_id="pod-0"
    )


# --- headers and generations ------------------------------------------------------------------


def test_redrive_headers_give_back_the_input_headers_plus_generation_and_origin() -> None:
    headers = failed(source())
    assert any(name.startswith("__connect.errors.") for name, _ in headers)
    rewritten = redrive_headers(headers, 1, "transcripts.dlq/0/7")
    assert rewritten == [
        *ORIGINAL,
        (REDRIVE_GENERATION_HEADER, b"1"),
        (REDRIVEN_FROM_HEADER, b"transcripts.dlq/0/7"),
    ]


def test_redrive_headers_replace_old_redrive_headers_and_keep_order_and_nulls() -> None:
    original: Headers = [
        ("a", b"1"),
        (REDRIVE_GENERATION_HEADER, b"2"),
        ("nothing", None),  # type: ignore[list-item]  # Kafka allows a null header value
        (REDRIVEN_FROM_HEADER, b"transcripts.dlq/1/3"),
        ("z", b"26"),
    ]
    headers = failed(source(original), kind="request_rejected", error_code="kit_not_found")
    rewritten = redrive_headers(headers, 3, "transcripts.dlq/2/9")
    assert rewritten == [
        ("a", b"1"),
        ("nothing", None),
        ("z", b"26"),
        (REDRIVE_GENERATION_HEADER, b"3"),
        (REDRIVEN_FROM_HEADER, b"transcripts.dlq/2/9"),
    ]


def test_redrive_headers_of_a_record_without_headers() -> None:
    headers = failed(source([]), kind="invalid_input", run_id=None, error_code=None)
    assert redrive_headers(headers, 1, "d/0/0") == [
        (REDRIVE_GENERATION_HEADER, b"1"),
        (REDRIVEN_FROM_HEADER, b"d/0/0"),
    ]
    assert redrive_headers(None, 1, "d/0/0")[0] == (REDRIVE_GENERATION_HEADER, b"1")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (None, 0),
        ([], 0),
        ([("other", b"5")], 0),
        ([(REDRIVE_GENERATION_HEADER, b"0")], 0),
        ([(REDRIVE_GENERATION_HEADER, b"2")], 2),
        ([(REDRIVE_GENERATION_HEADER, b"2"), (REDRIVE_GENERATION_HEADER, b"7")], 2),
        ([(REDRIVE_GENERATION_HEADER, b"x")], None),
        ([(REDRIVE_GENERATION_HEADER, b"-1")], None),
        ([(REDRIVE_GENERATION_HEADER, b"")], None),
        ([(REDRIVE_GENERATION_HEADER, None)], None),
        ([(REDRIVE_GENERATION_HEADER, b"\xff")], None),
    ],
)
def test_record_generation_reads_like_the_decoder(headers: Any, expected: int | None) -> None:
    assert record_generation(headers) == expected
    decoded = decoder().decode(source(headers))
    if expected is None:
        assert not isinstance(decoded, RunRequest)
    else:
        assert isinstance(decoded, RunRequest)
        assert decoded.redrive_generation == expected


def decoder() -> Decoder:
    return Decoder(
        mapping=InputMapping(),
        kit_code="A1B2C3D4",
        kit_version_id=None,
        run_type="api",
        mode="async",
        salt="",
        max_bytes=65536,
    )


def key_of(record: SourceRecord) -> str:
    decoded = decoder().decode(record)
    assert isinstance(decoded, RunRequest), decoded
    return decoded.idempotency_key


def test_a_redriven_record_gets_a_new_key_and_keeps_it_when_replayed() -> None:
    original = source()
    dead = source(failed(original), topic="transcripts.dlq", offset=7)
    once = source(redrive_headers(dead.headers, 1, dead.coordinates), offset=900)
    # The connector replays it after a crash (another offset, same record): same key.
    replayed = source(redrive_headers(dead.headers, 1, dead.coordinates), offset=901)
    twice = source(redrive_headers(once.headers, 2, "transcripts.dlq/0/8"), offset=950)
    assert key_of(once) != key_of(original)
    assert key_of(once) == key_of(replayed)
    assert len({key_of(original), key_of(once), key_of(twice)}) == 3


# --- dead letters -------------------------------------------------------------------------------


def letter(headers: Headers | None, key: bytes | None = b"k", **overrides: Any) -> DeadLetter:
    fields: dict[str, Any] = {
        "topic": "transcripts.dlq",
        "partition": 1,
        "offset": 5,
        "timestamp_ms": 1_700_000_000_000,
        "key": key,
        "value": b"{}",
        "headers": headers,
    }
    fields.update(overrides)
    return DeadLetter(**fields)


def test_dead_letter_reads_its_headers() -> None:
    dead = letter(failed(source(), kind="request_rejected", error_code="kit_not_found"))
    assert dead.kind == "request_rejected"
    assert dead.error_code == "kit_not_found"
    assert dead.event_id == "call-1"
    assert dead.source_topic == "transcripts"
    assert dead.coordinates == "transcripts.dlq/1/5"
    assert dead.time == "2023-11-14T22:13:20.000Z"


def test_dead_letter_event_id_falls_back_to_the_key_then_the_input_coordinates() -> None:
    headers = failed(source(), kind="invalid_input", event_id=None)
    assert letter(headers, key=b"the-key").event_id == "the-key"
    assert letter(headers, key=b"\xff\x00").event_id == "ff00"
    assert letter(headers, key=None).event_id == "transcripts-2-41"
    assert letter([], key=None, timestamp_ms=None).time == "-"


# --- option parsing -----------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(result)
    return result


def test_parse_ranges() -> None:
    assert parse_ranges("3") == ((3, 3),)
    assert parse_ranges("0,2-4, 7-") == ((0, 0), (2, 4), (7, None))
    assert parse_ranges("10 - 12") == ((10, 12),)
    for bad in ("", "a", "-3", "4-2", "1,,2", "1-2-3", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_ranges(bad)


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_parse_time() -> None:
    assert parse_time("2026-01-02T03:04:05Z") == ms("2026-01-02T03:04:05+00:00")
    assert parse_time("2026-01-02T03:04:05.250z") == ms("2026-01-02T03:04:05.250+00:00")
    assert parse_time("2026-01-02T05:04:05+02:00") == ms("2026-01-02T03:04:05+00:00")
    assert parse_time("2026-01-02") == ms("2026-01-02T00:00:00+00:00")  # no zone: UTC
    assert parse_time("2026-01-02 03:04") == ms("2026-01-02T03:04:00+00:00")
    now = datetime(2026, 1, 2, tzinfo=UTC).timestamp()
    assert parse_time("90m", now) == int((now - 5400) * 1000)
    assert parse_time("2h", now) == int((now - 7200) * 1000)
    assert parse_time("7d", now) == int((now - 7 * 86400) * 1000)
    assert parse_time("30s", now) == int((now - 30) * 1000)
    assert parse_time("1w", now) == int((now - 604800) * 1000)
    for bad in ("", "yesterday", "2h ago", "2026-13-01", "-2h"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_time(bad)


def test_filters_from_arguments_combine_with_and_values_with_or() -> None:
    args = parser().parse_args(
        [
            "--kind",
            "run_failed,request_rejected",
            "--kind",
            "invalid_input",
            "--error-code",
            "kit_not_found",
            "--partition",
            "0-1",
            "--partition",
            "4",
            "--offset",
            "10-",
            "--event-id",
            "a,b",
            "--since",
            "2026-01-01",
            "--until",
            "2026-02-01",
        ]
    )
    filters = Filters.from_args(args)
    assert filters.kinds == {"run_failed", "request_rejected", "invalid_input"}
    assert filters.error_codes == {"kit_not_found"}
    assert filters.partitions == ((0, 1), (4, 4))
    assert filters.offsets == ((10, None),)
    assert filters.event_ids == {"a", "b"}
    assert filters.since_ms == ms("2026-01-01T00:00:00+00:00")
    assert filters.until_ms == ms("2026-02-01T00:00:00+00:00")
    assert [filters.partition_selected(p) for p in range(6)] == [1, 1, 0, 0, 1, 0]

    def dead(**overrides: Any) -> DeadLetter:
        fields: dict[str, Any] = {
            "partition": 4,
            "offset": 10,
            "timestamp_ms": ms("2026-01-15T00:00:00+00:00"),
        }
        fields.update(overrides)
        headers = failed(source(), kind="request_rejected", error_code="kit_not_found")
        headers = [(n, b"a" if n == "semarize.event_id" else v) for n, v in headers]
        return letter(headers, **fields)

    assert filters.matches(dead())
    assert not filters.matches(dead(partition=2))
    assert not filters.matches(dead(offset=9))
    assert not filters.matches(dead(timestamp_ms=filters.until_ms))  # until: exclusive
    assert filters.matches(dead(timestamp_ms=filters.since_ms))  # since: inclusive
    assert not filters.matches(dead(timestamp_ms=None))
    other_code = failed(source(), kind="request_rejected", error_code="payload_too_large")
    assert not filters.matches(letter(other_code, partition=4, offset=10))
    assert Filters().matches(dead(timestamp_ms=None))  # no filter: everything


def test_defaults() -> None:
    args = parser().parse_args([])
    assert args.max_generation == 3
    assert not args.dry_run and not args.from_beginning
    assert args.to is None and args.group is None and args.limit is None
    assert Filters.from_args(args) == Filters()


@pytest.mark.parametrize(
    "argv",
    [
        ["--kind", "bogus"],
        ["--kind", "run_failed,nope"],
        ["--kind", ","],
        ["--partition", "x"],
        ["--offset", "5-1"],
        ["--since", "soon"],
        ["--limit", "0"],
        ["--limit", "-1"],
        ["--max-generation", "-1"],
        ["--max-generation", "two"],
        ["--timeout", "0"],
    ],
)
def test_bad_options_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["redrive", *argv])
    assert exit_info.value.code == 2
    assert "semarize-connector redrive" in capsys.readouterr().err


def test_unknown_kind_names_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["redrive", "--kind", "run_faild"])
    err = capsys.readouterr().err
    assert "run_faild" in err and all(kind in err for kind in KINDS)


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["redrive", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--config", "--to", "--group", "--from-beginning", "--kind", "--error-code"):
        assert option in out
    for option in ("--since", "--until", "--partition", "--offset", "--event-id", "--limit"):
        assert option in out
    assert "--dry-run" in out and "--max-generation" in out


# --- refusals before anything is read -----------------------------------------------------------

ENV = {
    "SEMARIZE_API_KEY": "smz_test_unit",
    "SEMARIZE_KIT_CODE": "A1B2C3D4",
    # Nobody listens there: a refusal must come before any connection attempt.
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--to", "transcripts.dlq"], "refusing to redrive into the dead-letter topic itself"),
        (["--group", "semarize-connector"], "must differ from the connector's own group"),
        (["--since", "2026-02-01", "--until", "2026-01-01"], "--since: must be before --until"),
    ],
)
def test_refusals_exit_2_before_connecting(argv: list[str], message: str) -> None:
    settings = load_settings(None, ENV)
    out, err = io.StringIO(), io.StringIO()
    args = parser().parse_args(argv)
    assert run_redrive(settings, args, out=out, err=err) == 2
    assert message in err.getvalue()
    assert len(err.getvalue().splitlines()) == 1
    assert out.getvalue() == ""


def test_bad_config_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SEMARIZE_API_KEY", raising=False)
    monkeypatch.setenv("SEMARIZE_KIT_CODE", "A1B2C3D4")
    assert main(["redrive", "--dry-run"]) == 2
    assert "config error: semarize.api_key" in capsys.readouterr().err
