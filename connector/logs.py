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
