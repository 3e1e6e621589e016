"""Record formats: decode an input record, build output and dead-letter records.

The formats are DESIGN.md's contract ("Input record", "Output record", "Dead-letter record").
Nothing here touches Kafka or HTTP; every function is pure and cheap (it runs per record).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from connector.config import InputMapping
from connector.idempotency import canonical_request_digest, idempotency_key

Headers = list[tuple[str, bytes]]
DeadLetterKind = Literal[
    "invalid_input",
    "run_failed",
    "run_cancelled",
    "request_rejected",
    "deadline_exceeded",
    "retries_exhausted",
]
REDRIVE_GENERATION_HEADER = "semarize.redrive_generation"
REDRIVEN_FROM_HEADER = "semarize.redriven_from"
# Headers a dead letter adds; stripped again by redrive so it republishes the original.
CONNECT_PREFIX = "__connect.errors."
DEAD_LETTER_HEADERS = (
    "semarize.error_kind",
    "semarize.event_id",
    "semarize.run_id",
    "semarize.error_code",
    "semarize.error_message",
    "semarize.error_user_message",
    "semarize.http_status",
    "semarize.attempts",
)
_EXCEPTION_CLASSES: dict[str, str] = {
    "invalid_input": "connector.records.InvalidInput",
    "run_failed": "connector.semarize.errors.RunFailed",
    "run_cancelled": "connector.semarize.errors.RunCancelled",
    "request_rejected": "connector.semarize.errors.RequestRejected",
    "deadline_exceeded": "connector.semarize.errors.DeadlineExceeded",
    "retries_exhausted": "connector.semarize.errors.RetriesExhausted",
}


@dataclass(slots=True)
class SourceRecord:
    """One consumed input record, as Kafka gave it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: Headers | None

    @property
    def coordinates(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(slots=True)
class RunRequest:
    """What to send to the API for one record, decided once at decode time."""

    event_id: str
    kit_code: str | None
    kit_version_id: str | None
    body: bytes | None  # the JSON of POST /v1/runs; dropped once the run exists
    idempotency_key: str
    metadata: Any
    redrive_generation: int
    kit_from_event: bool = False  # the record chose its own Kit (kit errors are its fault)
    create_request_id: str | None = None  # X-Request-Id of the accepted create (for support)


@dataclass(slots=True, frozen=True)
class InvalidInput:
    """Why a record cannot be decoded; it becomes an `invalid_input` dead letter."""

    reason: str  # short, bounded: a metric label
    message: str  # for people: names the problem, never quotes the transcript
    event_id: str | None = None


class Decoder:
    """Turns input records into run requests by the configured mapping (built once)."""

    def __init__(
        self,
        *,
        mapping: InputMapping,
        kit_code: str | None,
        kit_version_id: str | None,
        run_type: str,
        mode: str,
        salt: str,
        max_bytes: int,
    ) -> None:
        self._paths = {
            name: tuple(getattr(mapping, name).split("."))
            for name in (
                "event_id",
                "transcript",
                "input",
                "kit_code",
                "kit_version_id",
                "metadata",
            )
        }
        self._kit_code = kit_code
        self._kit_version_id = kit_version_id
        self._run_type = run_type
        self._mode = mode
        self._salt = salt
        self._max_bytes = max_bytes

    def decode(self, record: SourceRecord) -> RunRequest | InvalidInput:
        value = record.value
        if not value:
            return InvalidInput(
                "empty", "the record value is empty or null", fallback_event_id(record)
            )
        if len(value) > self._max_bytes:
            return InvalidInput(
                "too_large",
                f"the value is {len(value)} bytes, over input_max_bytes {self._max_bytes}",
                fallback_event_id(record),
            )
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return InvalidInput(
                "not_json",
                f"the value is not valid UTF-8 JSON ({exc.msg})",
                fallback_event_id(record),
            )
        if not isinstance(doc, dict):
            return InvalidInput(
                "not_object",
                f"the value is {_json_type(doc)}, not a JSON object",
                fallback_event_id(record),
            )

        event_id = self._event_id(record, doc)
        if isinstance(event_id, InvalidInput):
            return event_id
        generation = _redrive_generation(record.headers)
        if generation is None:
            return InvalidInput(
                "bad_header",
                f"header {REDRIVE_GENERATION_HEADER} is not a non-negative integer",
                event_id,
            )

        transcript = _get(doc, self._paths["transcript"])
        extra_input = _get(doc, self._paths["input"])
        if transcript is _MISSING and extra_input is _MISSING:
            return InvalidInput(
                "no_transcript", "the record has neither transcript nor input", event_id
            )
        if extra_input is not _MISSING and not isinstance(extra_input, dict):
            return InvalidInput(
                "bad_input", f"input is {_json_type(extra_input)}, not a JSON object", event_id
            )
        if transcript is not _MISSING:
            problem = _transcript_problem(transcript)
            if problem:
                return InvalidInput("bad_transcript", problem, event_id)
        run_input: dict[str, Any] = dict(extra_input) if extra_input is not _MISSING else {}
        if transcript is not _MISSING:
            run_input.setdefault("transcript", transcript)

        kit_code, kit_version_id = self._kit_code, self._kit_version_id
        kit_from_event = False
        event_kit = _get(doc, self._paths["kit_code"])
        event_version = _get(doc, self._paths["kit_version_id"])
        if event_kit is not _MISSING or event_version is not _MISSING:
            # A per-event Kit replaces the configured pair entirely.
            kit_from_event = True
            kit_code = _optional_str(event_kit)
            kit_version_id = _optional_str(event_version)
            if kit_code is _BAD or kit_version_id is _BAD:
                return InvalidInput(
                    "bad_kit", "kit_code / kit_version_id must be strings", event_id
                )
            if not kit_code and not kit_version_id:
                return InvalidInput("bad_kit", "kit_code / kit_version_id are empty", event_id)
        metadata = _get(doc, self._paths["metadata"])

        body: dict[str, Any] = {"input": run_input, "type": self._run_type, "mode": self._mode}
        if kit_code:
            body["kit_code"] = kit_code
        if kit_version_id:
            body["kit_version_id"] = kit_version_id
        try:
            # orjson reads 1024 levels deep but writes only 254: a value nested in between
            # decodes, then cannot be sent (input) or written to the output (metadata).
            encoded = orjson.dumps(body)
            if metadata is not _MISSING:
                orjson.dumps({"metadata": metadata})
        except orjson.JSONEncodeError:
            return InvalidInput("not_json", "the value is JSON nested too deeply", event_id)
        digest = canonical_request_digest(kit_code, kit_version_id, run_input, self._run_type)
        return RunRequest(
            event_id=event_id,
            kit_code=kit_code,
            kit_version_id=kit_version_id,
            body=encoded,
            idempotency_key=idempotency_key(
                salt=self._salt,
                event_id=event_id,
                kit_code=kit_code,
                kit_version_id=kit_version_id,
                request_digest=digest,
                redrive_generation=generation,
            ),
            metadata=None if metadata is _MISSING else metadata,
            redrive_generation=generation,
            kit_from_event=kit_from_event,
        )

    def _event_id(self, record: SourceRecord, doc: dict[str, Any]) -> str | InvalidInput:
        raw = _get(doc, self._paths["event_id"])
        if raw is not _MISSING and raw is not None:
            if isinstance(raw, bool) or not isinstance(raw, str | int):
                return InvalidInput(
                    "bad_event_id",
                    "event_id must be a string or an integer",
                    fallback_event_id(record),
                )
            text = str(raw)
            if not text or len(text) > MAX_EVENT_ID:
                return InvalidInput(
                    "bad_event_id",
                    f"event_id must be 1..{MAX_EVENT_ID} characters",
                    fallback_event_id(record),
                )
            return text
        return fallback_event_id(record)


MAX_EVENT_ID = 1024


def fallback_event_id(record: SourceRecord) -> str:
    """The record key as UTF-8, else the record's coordinates (DESIGN.md). A key that is
    not UTF-8 is used in hex; one longer than an event id may be gives way to coordinates."""
    if record.key:
        try:
            text = record.key.decode("utf-8")
        except UnicodeDecodeError:
            text = record.key.hex()
        if len(text) <= MAX_EVENT_ID:
            return text
    return f"{record.topic}-{record.partition}-{record.offset}"


class _Missing:
    pass


_MISSING: Any = _Missing()
_BAD: Any = _Missing()


def _get(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    current: Any = doc
    for part in path:
        if not isinstance(current, dict) or part not in current:
            return _MISSING
        current = current[part]
    return current


def _optional_str(value: Any) -> Any:
    if value is _MISSING or value is None:
        return None
    return value if isinstance(value, str) else _BAD


def _transcript_problem(transcript: Any) -> str | None:
    if isinstance(transcript, str):
        return None if transcript.strip() else "transcript is an empty string"
    if isinstance(transcript, list):
        if not transcript:
            return "transcript is an empty list"
        for i, turn in enumerate(transcript):
            if not isinstance(turn, dict):
                return f"transcript[{i}] is {_json_type(turn)}, not a {{speaker, text}} object"
            if not isinstance(turn.get("text"), str):
                return f"transcript[{i}].text is missing or not a string"
            speaker = turn.get("speaker")
            if speaker is not None and not isinstance(speaker, str):
                return f"transcript[{i}].speaker is not a string"
        return None
    return f"transcript is {_json_type(transcript)}, not a string or a list of turns"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _redrive_generation(headers: Headers | None) -> int | None:
    if headers:
        for name, raw in headers:
            if name == REDRIVE_GENERATION_HEADER:
                try:
                    generation = int((raw or b"").decode("ascii"))
                except (UnicodeDecodeError, ValueError):
                    return None
                return generation if generation >= 0 else None
    return 0


def rfc3339(epoch_seconds: float) -> str:
    moment = datetime.fromtimestamp(epoch_seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def output_record(
    record: SourceRecord,
    request: RunRequest,
    run: dict[str, Any],
    *,
    submitted_at: float,
    completed_at: float | None = None,
) -> tuple[bytes, bytes, Headers]:
    """Key, value and headers of the output record for a succeeded run."""
    run_id = str(run.get("run_id", ""))
    output = run.get("output")
    value = {
        "event_id": request.event_id,
        "run_id": run_id,
        "status": "succeeded",
        "kit_code": (output.get("kit_code") if isinstance(output, dict) else None)
        or run.get("kit_code")
        or request.kit_code,
        "kit_version_id": run.get("kit_version_id") or request.kit_version_id,
        "duration_ms": run.get("duration_ms"),
        "output": output if isinstance(output, dict) else {},
        "metadata": request.metadata,
        "source": {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "timestamp": rfc3339(record.timestamp_ms / 1000) if record.timestamp_ms else None,
        },
        "submitted_at": rfc3339(submitted_at),
        "completed_at": rfc3339(completed_at if completed_at is not None else time.time()),
    }
    headers = [
        *(record.headers or ()),
        ("semarize.run_id", run_id.encode()),
        ("semarize.event_id", request.event_id.encode()),
    ]
    key = record.key if record.key is not None else request.event_id.encode()
    return key, orjson.dumps(value), headers


@dataclass(slots=True, frozen=True)
class DeadLetterContext:
    """Everything a dead letter says about why, beyond the record itself."""

    kind: DeadLetterKind
    message: str
    event_id: str | None = None
    run_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_user_message: str | None = None
    http_status: int | None = None
    attempts: int | None = None
    stacktrace: str | None = None
    request_id: str | None = None  # X-Request-Id of the failing request: logged, not a header


def dead_letter_headers(
    record: SourceRecord, why: DeadLetterContext, *, group_id: str, instance_id: str
) -> Headers:
    """The input's headers plus Kafka Connect's error headers and the connector's own."""
    added: Headers = [
        ("__connect.errors.topic", record.topic.encode()),
        ("__connect.errors.partition", str(record.partition).encode()),
        ("__connect.errors.offset", str(record.offset).encode()),
        ("__connect.errors.connector.name", group_id.encode()),
        ("__connect.errors.task.id", instance_id.encode()),
        (
            "__connect.errors.stage",
            b"VALUE_CONVERTER" if why.kind == "invalid_input" else b"TASK_PUT",
        ),
        ("__connect.errors.class.name", b"semarize_connector"),
        ("__connect.errors.exception.class.name", _EXCEPTION_CLASSES[why.kind].encode()),
        ("__connect.errors.exception.message", why.message.encode()),
    ]
    if why.stacktrace:
        added.append(("__connect.errors.exception.stacktrace", why.stacktrace.encode()))
    added.append(("semarize.error_kind", why.kind.encode()))
    optional = (
        ("semarize.event_id", why.event_id),
        ("semarize.run_id", why.run_id),
        ("semarize.error_code", why.error_code),
        ("semarize.error_message", why.error_message),
        ("semarize.error_user_message", why.error_user_message),
        ("semarize.http_status", why.http_status),
        ("semarize.attempts", why.attempts),
    )
    added.extend((name, str(value).encode()) for name, value in optional if value is not None)
    # A record that failed before (a redrive) must not carry two sets of error headers.
    kept = [
        (name, value)
        for name, value in (record.headers or ())
        if not name.startswith(CONNECT_PREFIX) and name not in DEAD_LETTER_HEADERS
    ]
    return kept + added
