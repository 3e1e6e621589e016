"""Logging: one JSON object per line, secrets masked wherever they hide."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from connector.logs import MASK, JsonFormatter, configure_logging

API_KEY = "smz_live_4f8a9c2e71"
SALT = "pepper-and-salt"


def log_record(
    message: str = "hello",
    *args: Any,
    level: int = logging.INFO,
    extra: dict[str, Any] | None = None,
    exc_info: Any = None,
) -> logging.LogRecord:
    record = logging.LogRecord(
        "connector.test", level, __file__, 10, message, args or None, exc_info
    )
    for key, value in (extra or {}).items():
        setattr(record, key, value)
    return record


def formatted(
    record: logging.LogRecord, secrets: list[str] | None = None
) -> tuple[str, dict[str, Any]]:
    line = JsonFormatter(secrets).format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert isinstance(entry, dict)
    return line, entry


def test_one_json_object_per_line_with_the_standard_fields() -> None:
    _, entry = formatted(log_record("run %s created", "run_1", level=logging.WARNING))
    assert entry["message"] == "run run_1 created"
    assert entry["level"] == "warning"
    assert entry["logger"] == "connector.test"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
    assert set(entry) == {"time", "level", "logger", "message"}


def test_extra_fields_are_top_level_fields() -> None:
    extra = {"topic": "transcripts", "partition": 2, "offset": 17, "event_id": "e1", "run_id": None}
    _, entry = formatted(log_record("finished", extra=extra))
    for key, value in extra.items():
        assert entry[key] == value


def test_private_and_standard_attributes_are_not_fields() -> None:
    _, entry = formatted(log_record("x", extra={"_private": 1}))
    assert "_private" not in entry
    for standard in ("args", "msg", "levelno", "pathname", "lineno", "exc_info", "created"):
        assert standard not in entry


def test_values_that_are_not_json_become_strings() -> None:
    class Thing:
        def __str__(self) -> str:
            return "a thing"

    _, entry = formatted(log_record("x", extra={"thing": Thing(), "items": {1, 2}}))
    assert entry["thing"] == "a thing"
    assert entry["items"] in ("{1, 2}", "{2, 1}")


def test_multi_line_message_stays_one_line() -> None:
    line, entry = formatted(log_record("first\nsecond\r\nthird"))
    assert entry["message"] == "first\nsecond\r\nthird"
    assert line.count("\n") == 0


def test_exception_is_a_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    _, entry = formatted(log_record("failed", level=logging.ERROR, exc_info=exc_info))
    assert "Traceback" in entry["exception"]
    assert "ValueError: boom" in entry["exception"]


def test_secrets_are_masked_everywhere() -> None:
    try:
        raise RuntimeError(f"auth failed for {API_KEY}")
    except RuntimeError:
        exc_info = sys.exc_info()
    record = log_record(
        "key %s salt %s",
        API_KEY,
        SALT,
        extra={"header": f"Bearer {API_KEY}", "nested": {"salt": SALT}},
        exc_info=exc_info,
    )
    line, entry = formatted(record, [API_KEY, SALT])
    assert API_KEY not in line
    assert SALT not in line
    assert entry["message"] == f"key {MASK} salt {MASK}"
    assert entry["header"] == f"Bearer {MASK}"
    assert entry["nested"] == {"salt": MASK}
    assert f"auth failed for {MASK}" in entry["exception"]


@pytest.mark.parametrize(
    "secret",
    ['pa"ss"word', "back\\slash\\pw", "line\nbreak-pw", "tab\tand\x01ctrl", "ünïcødé-pässwörd"],
    ids=["quote", "backslash", "newline", "control", "unicode"],
)
def test_secrets_that_json_escapes_are_masked_too(secret: str) -> None:
    line, entry = formatted(log_record("password=%s", secret, extra={"p": secret}), [secret])
    assert secret not in entry["message"]
    assert entry["message"] == f"password={MASK}"
    assert entry["p"] == MASK
    assert json.dumps(secret, ensure_ascii=False)[1:-1] not in line


def test_a_secret_containing_another_is_masked_whole() -> None:
    line, _ = formatted(log_record("token=abcd-efgh-ijkl"), ["abcd", "abcd-efgh-ijkl"])
    assert "efgh" not in line
    assert "ijkl" not in line


def test_nothing_is_masked_without_secrets() -> None:
    _, entry = formatted(log_record(f"key {API_KEY}"), [])
    assert entry["message"] == f"key {API_KEY}"
    _, entry = formatted(log_record(f"key {API_KEY}"), ["", API_KEY[:0]])
    assert entry["message"] == f"key {API_KEY}"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {name: logging.getLogger(name).level for name in ("aiohttp.access", "asyncio")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in noisy.items():
        logging.getLogger(name).setLevel(old)


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_writes_masked_json_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("warning", [API_KEY])
    log = logging.getLogger("connector.somewhere")
    log.info("not shown at warning")
    log.warning("using key %s", API_KEY, extra={"offset": 5})
    logging.getLogger("asyncio").warning("third party warning")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["message"] == f"using key {MASK}"
    assert first["offset"] == 5
    assert first["level"] == "warning"
    assert API_KEY not in out


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_keeps_third_parties_quiet_unless_debugging(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", [])
    logging.getLogger("connector.x").info("mine")
    logging.getLogger("asyncio").info("chatter")
    logging.getLogger("aiohttp.access").info("GET / 200")
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["mine"]
    configure_logging("debug", [])
    logging.getLogger("asyncio").debug("debugging chatter")
    assert "debugging chatter" in capsys.readouterr().out


def test_repeated_librdkafka_lines_are_held_back_and_counted() -> None:
    from connector.logs import RepeatFilter

    now = [0.0]
    repeat = RepeatFilter("librdkafka", interval=30, clock=lambda: now[0])

    def line(name: str, message: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, "", 0, message, None, None)

    fail = "FAIL [c#consumer-1] [thrd:x]: Connect to 127.0.0.1:9092 failed"
    assert repeat.filter(line("librdkafka.consumer", fail))
    assert not any(repeat.filter(line("librdkafka.consumer", fail)) for _ in range(500))
    assert repeat.filter(line("librdkafka.consumer", "SESSTMOUT [c#consumer-1] timed out"))
    assert repeat.filter(line("connector.app", fail))  # only librdkafka's lines are limited
    assert repeat.filter(line("connector.app", fail))
    now[0] = 31
    record = line("librdkafka.consumer", fail)
    assert repeat.filter(record)
    assert record.repeated == 500  # type: ignore[attr-defined]
