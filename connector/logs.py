"""Logging: one JSON object per line on stdout, secrets scrubbed.

Fields: `time`, `level`, `logger`, `message`, plus whatever the call passes in `extra`
(the record's `topic`/`partition`/`offset`, `event_id`, `run_id`, ...). Every known secret
value is replaced by a mask before the line is written, whatever field it hides in.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)
MASK = "********"


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: list[str] | None = None) -> None:
        super().__init__()
        known = [s for s in (secrets or []) if s and len(s) >= 4]
        # A secret with a quote, a backslash or a control character appears JSON-escaped in
        # the line: mask that spelling too.
        escaped = [_json_spelling(s) for s in known]
        # Longest first: a secret that contains another is masked whole.
        self._secrets = sorted(set(known + escaped), key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        line = orjson.dumps(entry, default=str).decode()
        for secret in self._secrets:
            if secret in line:
                line = line.replace(secret, MASK)
        return line


def _json_spelling(secret: str) -> str:
    """How `secret` reads inside a JSON string written by orjson."""
    try:
        return orjson.dumps(secret).decode()[1:-1]
    except TypeError:  # a lone surrogate: orjson cannot write it, so no line holds it
        return secret


class RepeatFilter(logging.Filter):
    """One line per kind of message per `interval`: librdkafka repeats a connection failure
    many times a second while a broker is down. The next line that passes says how many
    were held back (`repeated`)."""

    def __init__(
        self, prefix: str = "librdkafka", interval: float = 30.0, clock: Any = time.monotonic
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefix):
            return True
        message = record.getMessage()
        # librdkafka's lines start with their facility ("FAIL [client#...] ..."): the kind.
        kind = f"{record.name}:{record.levelno}:{message.split(' ', 1)[0]}"
        now = self._clock()
        if now - self._last.get(kind, -1e18) < self._interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        if held:
            record.repeated = held
        if len(self._last) > 1000:
            self._last.clear()
        return True


def configure_logging(level: str, secrets: list[str] | None = None) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter stays at warning unless debugging.
    quiet = root.level if root.level <= logging.DEBUG else max(logging.WARNING, root.level)
    for noisy in ("aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(quiet)
    if root.level > logging.DEBUG:
        handler.addFilter(RepeatFilter("librdkafka"))
