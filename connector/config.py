"""Typed settings: a YAML file (optional) + `${NAME}` references + environment overrides.

`load_settings()` is the only entry point. It collects every problem before failing, so a
user sees all of them at once (one line each), and it never puts a secret in a message.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import re
import socket
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from connector.errors import ConfigError

Mode = Literal["async", "sync"]
Guarantee = Literal["at_least_once", "exactly_once"]
Ordering = Literal["none", "key"]
Scope = Literal["process", "group"]

MASK = "********"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
KIT_CODE_RE = re.compile(r"^[A-Za-z0-9]{8}$")


class Secret:
    """A string that never shows itself in repr, str, logs or config dumps."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret({MASK})" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "semarize-connector"
    input_topics: tuple[str, ...] = ("transcripts",)
    output_topic: str = "transcripts.analyzed"
    dlq_topic: str = "transcripts.dlq"
    completions_topic: str = "transcripts.completions"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    consumer: Mapping[str, Any] = field(default_factory=dict)
    producer: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SemarizeSettings:
    api_url: str = "https://api.semarize.com"
    api_key: Secret = field(default_factory=lambda: Secret(""))
    kit_code: str | None = None
    kit_version_id: str | None = None
    mode: Mode = "async"
    run_type: Literal["api", "sandbox"] = "api"
    connect_timeout_seconds: float = 5.0
    # Sync mode holds the request open while the run executes: allow for the provider's wait.
    read_timeout_seconds: float = 60.0
    max_create_attempts: int = 50
    poll_initial_seconds: float = 1.0
    poll_max_seconds: float = 10.0
    retry_max_seconds: float = 60.0
    halt_probe_seconds: float = 15.0


@dataclass(frozen=True)
class InputMapping:
    """Dotted paths into the input JSON object."""

    event_id: str = "event_id"
    transcript: str = "transcript"
    input: str = "input"
    kit_code: str = "kit_code"
    kit_version_id: str = "kit_version_id"
    metadata: str = "metadata"


@dataclass(frozen=True)
class PipelineSettings:
    max_in_flight: int = 256
    processing_guarantee: Guarantee = "at_least_once"
    ordering: Ordering = "none"
    idempotency_salt: Secret = field(default_factory=lambda: Secret(""))
    input_max_bytes: int = 1_048_576
    commit_interval_seconds: float = 0.2
    mapping: InputMapping = field(default_factory=InputMapping)


@dataclass(frozen=True)
class RunSettings:
    deadline_seconds: float = 3600.0


@dataclass(frozen=True)
class RateLimitSettings:
    requests_per_second: float = 0.0
    scope: Scope = "process"


@dataclass(frozen=True)
class ShutdownSettings:
    grace_seconds: float = 30.0


@dataclass(frozen=True)
class HealthSettings:
    stuck_after_seconds: float | None = None  # None: run.deadline_seconds + 600


@dataclass(frozen=True)
class OpsSettings:
    host: str = "0.0.0.0"
    port: int = 8000
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    summary_interval_seconds: float = 30.0


@dataclass(frozen=True)
class WebhookSettings:
    enabled: bool = False
    host: str = "0.0.0.0"
    port: int = 8080
    secret: Secret = field(default_factory=lambda: Secret(""))
    poll_fallback_seconds: float = 300.0


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    semarize: SemarizeSettings = field(default_factory=SemarizeSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    run: RunSettings = field(default_factory=RunSettings)
    rate_limit: RateLimitSettings = field(default_factory=RateLimitSettings)
    shutdown: ShutdownSettings = field(default_factory=ShutdownSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    ops: OpsSettings = field(default_factory=OpsSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    instance_id: str = ""

    @property
    def stuck_after_seconds(self) -> float:
        configured = self.health.stuck_after_seconds
        return configured if configured is not None else self.run.deadline_seconds + 600

    @property
    def effective_kit(self) -> tuple[str | None, str | None]:
        return self.semarize.kit_code, self.semarize.kit_version_id


# The environment names DESIGN.md guarantees: variable -> YAML path.
ENVIRONMENT = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka.bootstrap_servers",
    "CONNECTOR_GROUP_ID": "kafka.group_id",
    "CONNECTOR_INPUT_TOPIC": "kafka.input_topics",
    "CONNECTOR_OUTPUT_TOPIC": "kafka.output_topic",
    "CONNECTOR_DLQ_TOPIC": "kafka.dlq_topic",
    "CONNECTOR_COMPLETIONS_TOPIC": "kafka.completions_topic",
    "CONNECTOR_AUTO_OFFSET_RESET": "kafka.auto_offset_reset",
    "SEMARIZE_API_URL": "semarize.api_url",
    "SEMARIZE_API_KEY": "semarize.api_key",
    "SEMARIZE_KIT_CODE": "semarize.kit_code",
    "SEMARIZE_KIT_VERSION_ID": "semarize.kit_version_id",
    "SEMARIZE_MODE": "semarize.mode",
    "CONNECTOR_MAX_IN_FLIGHT": "pipeline.max_in_flight",
    "CONNECTOR_PROCESSING_GUARANTEE": "pipeline.processing_guarantee",
    "CONNECTOR_ORDERING": "pipeline.ordering",
    "CONNECTOR_IDEMPOTENCY_SALT": "pipeline.idempotency_salt",
    "CONNECTOR_INPUT_MAX_BYTES": "pipeline.input_max_bytes",
    "CONNECTOR_RUN_DEADLINE_SECONDS": "run.deadline_seconds",
    "CONNECTOR_RATE_LIMIT_RPS": "rate_limit.requests_per_second",
    "CONNECTOR_RATE_LIMIT_SCOPE": "rate_limit.scope",
    "CONNECTOR_SHUTDOWN_GRACE_SECONDS": "shutdown.grace_seconds",
    "CONNECTOR_HEALTH_STUCK_AFTER_SECONDS": "health.stuck_after_seconds",
    "CONNECTOR_OPS_PORT": "ops.port",
    "CONNECTOR_LOG_LEVEL": "ops.log_level",
    "CONNECTOR_WEBHOOKS_ENABLED": "webhooks.enabled",
    "CONNECTOR_WEBHOOKS_PORT": "webhooks.port",
    "SEMARIZE_WEBHOOK_SECRET": "webhooks.secret",
    "CONNECTOR_WEBHOOKS_POLL_FALLBACK_SECONDS": "webhooks.poll_fallback_seconds",
}

_SECTIONS: dict[str, type[Any]] = {
    "kafka": KafkaSettings,
    "semarize": SemarizeSettings,
    "pipeline": PipelineSettings,
    "run": RunSettings,
    "rate_limit": RateLimitSettings,
    "shutdown": ShutdownSettings,
    "health": HealthSettings,
    "ops": OpsSettings,
    "webhooks": WebhookSettings,
}
# librdkafka settings that hold secrets: masked in every dump.
# Anywhere in the name: ssl.key.pem, sasl.oauthbearer.config (may hold a client secret), ...
_SECRET_LIBRDKAFKA = re.compile(
    r"password|secret|token|key|credential|oauthbearer\.config|jaas", re.IGNORECASE
)
# librdkafka settings the connector owns: overriding them would break a guarantee.
_OWNED_CONSUMER = {"enable.auto.commit", "enable.auto.offset.store", "group.id", "isolation.level"}
_OWNED_PRODUCER = {"enable.idempotence", "transactional.id"}


def default_instance_id() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}:{os.getpid()}"


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings from an optional file and the environment; raise ConfigError."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_file(Path(path), problems)
    raw = _expand_env_refs(raw, env, problems, "")
    for variable, dotted in ENVIRONMENT.items():
        if variable in env:
            section, key = dotted.split(".")
            raw.setdefault(section, {})
            if isinstance(raw[section], dict):
                raw[section][key] = env[variable]
    settings = _build(raw, problems)
    if settings is not None:
        settings = dataclasses.replace(settings, instance_id=default_instance_id())
        _validate(settings, problems)
        if not problems:
            _check_librdkafka(settings, problems)
    if problems or settings is None:
        raise ConfigError(problems or ["configuration is invalid"])
    return settings


def _read_file(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problems.append(f"config file {path}: cannot be read ({exc.strerror or exc})")
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problems.append(f"config file {path}: not valid YAML{where}")
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(f"config file {path}: the top level must be a mapping of sections")
        return {}
    return data


def _expand_env_refs(value: Any, env: Mapping[str, str], problems: list[str], where: str) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                problems.append(f"{where}: references ${{{name}}}, which is not set")
                return ""
            return env[name]

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, dict):
        return {
            k: _expand_env_refs(v, env, problems, f"{where}.{k}" if where else str(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_expand_env_refs(v, env, problems, where) for v in value]
    return value


def _build(raw: dict[str, Any], problems: list[str]) -> Settings | None:
    sections: dict[str, Any] = {}
    for name, data in raw.items():
        if name not in _SECTIONS:
            problems.append(f"{name}: unknown section{_suggest(str(name), _SECTIONS)}")
            continue
        if data is None:
            continue
        if not isinstance(data, dict):
            problems.append(f"{name}: must be a mapping")
            continue
        sections[name] = _build_section(name, _SECTIONS[name], data, problems)
    try:
        return Settings(**{k: v for k, v in sections.items() if v is not None})
    except TypeError:
        return None


def _build_section(prefix: str, cls: type[Any], data: dict[str, Any], problems: list[str]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}.{key}"
        if key not in fields:
            problems.append(f"{where}: unknown setting{_suggest(str(key), fields)}")
            continue
        if cls is PipelineSettings and key == "mapping":
            if not isinstance(value, dict):
                problems.append(f"{where}: must be a mapping of field name to dotted path")
                continue
            values[key] = _build_section(where, InputMapping, value, problems)
            continue
        converted = _convert(where, fields[key], value, problems)
        if converted is not _INVALID:
            values[key] = converted
    return cls(**values)


_INVALID = object()


def _convert(where: str, fld: dataclasses.Field[Any], value: Any, problems: list[str]) -> Any:
    annotation = str(fld.type)
    if annotation.startswith("Literal") or annotation in {"Mode", "Guarantee", "Ordering", "Scope"}:
        choices = _literal_choices(fld)
        text = str(value).strip().lower() if value is not None else ""
        if text not in choices:
            problems.append(f"{where}: must be one of {', '.join(choices)} (got {value!r})")
            return _INVALID
        return text
    if annotation == "Secret":
        if isinstance(value, dict | list):
            problems.append(f"{where}: must be a string")  # the value itself is not shown
            return _INVALID
        return Secret("" if value is None else str(value))
    if annotation == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"true", "1", "yes", "on"}:
            return True
        if text in {"false", "0", "no", "off", ""}:
            return False
        problems.append(f"{where}: must be true or false (got {value!r})")
        return _INVALID
    if annotation == "int":
        try:
            if isinstance(value, bool) or float(str(value)) != int(float(str(value))):
                raise ValueError
            return int(float(str(value)))
        except (ValueError, OverflowError):  # OverflowError: "inf"
            problems.append(f"{where}: must be a whole number (got {value!r})")
            return _INVALID
    if annotation in {"float", "float | None"}:
        if value is None and annotation == "float | None":
            return None
        try:
            number = float(str(value))
            if isinstance(value, bool) or not math.isfinite(number):
                raise ValueError
            return number
        except ValueError:
            problems.append(f"{where}: must be a number (got {value!r})")
            return _INVALID
    if annotation == "tuple[str, ...]":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            problems.append(f"{where}: must be a list of names or a comma-separated string")
            return _INVALID
        return tuple(i.strip() for i in items if i.strip())
    if annotation == "Mapping[str, Any]":
        if not isinstance(value, dict):
            problems.append(f"{where}: must be a mapping of librdkafka settings")
            return _INVALID
        return {str(k): v for k, v in value.items()}
    if annotation in {"str", "str | None"}:
        if value is None:
            return None if annotation == "str | None" else ""
        if isinstance(value, dict | list):
            problems.append(f"{where}: must be a string")
            return _INVALID
        text = str(value).strip()
        return text or (None if annotation == "str | None" else "")
    return value


_LITERALS: dict[str, tuple[str, ...]] = {
    "Mode": ("async", "sync"),
    "Guarantee": ("at_least_once", "exactly_once"),
    "Ordering": ("none", "key"),
    "Scope": ("process", "group"),
}


def _literal_choices(fld: dataclasses.Field[Any]) -> tuple[str, ...]:
    annotation = str(fld.type)
    if annotation in _LITERALS:
        return _LITERALS[annotation]
    return tuple(re.findall(r"'([^']*)'", annotation))


def _suggest(name: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _validate(s: Settings, problems: list[str]) -> None:
    k, api, p = s.kafka, s.semarize, s.pipeline
    if not k.bootstrap_servers:
        problems.append("kafka.bootstrap_servers: must not be empty")
    if not k.group_id:
        problems.append("kafka.group_id: must not be empty")
    if not k.input_topics:
        problems.append("kafka.input_topics: name at least one input topic")
    topics = [*k.input_topics, k.output_topic, k.dlq_topic]
    for name, topic in zip(
        ["kafka.output_topic", "kafka.dlq_topic"], [k.output_topic, k.dlq_topic], strict=True
    ):
        if not topic:
            problems.append(f"{name}: must not be empty")
        elif topic in k.input_topics:
            problems.append(f"{name}: must differ from the input topics (it would loop)")
    if k.output_topic and k.output_topic == k.dlq_topic:
        problems.append("kafka.dlq_topic: must differ from kafka.output_topic")
    if s.webhooks.enabled and k.completions_topic in topics:
        problems.append(
            "kafka.completions_topic: must differ from the input, output and DLQ topics"
        )
    for key in sorted(_OWNED_CONSUMER & set(k.consumer)):
        problems.append(f"kafka.consumer.{key}: is set by the connector and cannot be overridden")
    for key in sorted(_OWNED_PRODUCER & set(k.producer)):
        problems.append(f"kafka.producer.{key}: is set by the connector and cannot be overridden")

    if _has_userinfo(api.api_url):
        # Never echoed: the part before the @ may be a password.
        problems.append(
            "semarize.api_url: must not carry credentials (user:password@); the API key "
            "goes in semarize.api_key"
        )
    elif not _valid_url(api.api_url):
        problems.append(f"semarize.api_url: must be an http(s) URL (got {api.api_url!r})")
    if not api.api_key:
        problems.append("semarize.api_key: required (set SEMARIZE_API_KEY)")
    elif any(c.isspace() for c in api.api_key.reveal()):
        problems.append("semarize.api_key: must not contain white space")
    if not api.kit_code and not api.kit_version_id:
        problems.append(
            "semarize.kit_code / semarize.kit_version_id: one is required "
            "(set SEMARIZE_KIT_CODE or SEMARIZE_KIT_VERSION_ID)"
        )
    if api.kit_code and not KIT_CODE_RE.match(api.kit_code):
        problems.append(f"semarize.kit_code: must be 8 letters or digits (got {api.kit_code!r})")
    _positive(problems, "semarize.connect_timeout_seconds", api.connect_timeout_seconds)
    _positive(problems, "semarize.read_timeout_seconds", api.read_timeout_seconds)
    _positive(problems, "semarize.poll_initial_seconds", api.poll_initial_seconds)
    _positive(problems, "semarize.poll_max_seconds", api.poll_max_seconds)
    _positive(problems, "semarize.retry_max_seconds", api.retry_max_seconds)
    _positive(problems, "semarize.halt_probe_seconds", api.halt_probe_seconds)
    if api.max_create_attempts < 1:
        problems.append("semarize.max_create_attempts: must be at least 1")

    if not 1 <= p.max_in_flight <= 100_000:
        problems.append(f"pipeline.max_in_flight: must be 1..100000 (got {p.max_in_flight})")
    if not 1024 <= p.input_max_bytes <= 64 * 1024 * 1024:
        problems.append(
            f"pipeline.input_max_bytes: must be 1024..67108864 (got {p.input_max_bytes})"
        )
    _positive(problems, "pipeline.commit_interval_seconds", p.commit_interval_seconds)
    _positive(problems, "run.deadline_seconds", s.run.deadline_seconds)
    if s.rate_limit.requests_per_second < 0:
        problems.append("rate_limit.requests_per_second: must be 0 (off) or more")
    if s.shutdown.grace_seconds < 0:
        problems.append("shutdown.grace_seconds: must be 0 or more")
    if s.stuck_after_seconds <= s.run.deadline_seconds:
        problems.append(
            "health.stuck_after_seconds: must be longer than run.deadline_seconds "
            "(a slow run would otherwise restart a healthy pod)"
        )
    for name, port in (("ops.port", s.ops.port), ("webhooks.port", s.webhooks.port)):
        if not 0 <= port <= 65535:
            problems.append(f"{name}: must be 0..65535 (got {port})")
    _positive(problems, "ops.summary_interval_seconds", s.ops.summary_interval_seconds)
    if s.webhooks.enabled:
        if not s.webhooks.secret:
            problems.append("webhooks.secret: required when webhooks are enabled")
        if s.webhooks.port == s.ops.port and s.ops.port != 0:
            problems.append("webhooks.port: must differ from ops.port")
        _positive(problems, "webhooks.poll_fallback_seconds", s.webhooks.poll_fallback_seconds)


def _has_userinfo(url: str) -> bool:
    try:
        return "@" in urllib.parse.urlsplit(url).netloc
    except ValueError:
        return "@" in url


def _valid_url(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in url


def _check_librdkafka(settings: Settings, problems: list[str]) -> None:
    """librdkafka validates its settings when a client is built (no connection is made)."""
    from confluent_kafka import Consumer, KafkaException, Producer

    k = settings.kafka
    quiet = logging.getLogger("librdkafka.config-check")
    quiet.setLevel(logging.ERROR)  # its warnings about unused settings are not problems
    for name, extra in (("kafka.consumer", k.consumer), ("kafka.producer", k.producer)):
        if not extra:
            continue
        conf = {
            "bootstrap.servers": k.bootstrap_servers or "127.0.0.1:9092",
            "logger": quiet,
            **extra,
        }
        try:
            if name == "kafka.consumer":
                Consumer({"group.id": k.group_id or "check", **conf}).close()
            else:
                Producer(conf).flush(0)
        except (KafkaException, ValueError, TypeError) as exc:
            detail = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
            for secret in librdkafka_secrets(settings):
                detail = detail.replace(secret, MASK)
            problems.append(f"{name}: librdkafka rejects these settings: {detail}")


def _positive(problems: list[str], name: str, value: float) -> None:
    if not value > 0:
        problems.append(f"{name}: must be greater than 0 (got {value})")


def masked_dict(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, every secret masked (for check-config)."""

    def convert(value: Any, key: str = "") -> Any:
        if isinstance(value, Secret):
            return MASK if value else ""
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {
                f.name: convert(getattr(value, f.name), f.name) for f in dataclasses.fields(value)
            }
        if isinstance(value, Mapping):
            return {
                str(k): MASK if _SECRET_LIBRDKAFKA.search(str(k)) else convert(v, str(k))
                for k, v in value.items()
            }
        if isinstance(value, tuple):
            return list(value)
        return value

    data: dict[str, Any] = convert(settings)
    data["health"]["stuck_after_seconds"] = settings.stuck_after_seconds
    return data


def librdkafka_secrets(settings: Settings) -> list[str]:
    """Secret values from the librdkafka passthrough settings, for log redaction."""
    found = []
    for extra in (settings.kafka.consumer, settings.kafka.producer):
        for key, value in extra.items():
            if _SECRET_LIBRDKAFKA.search(key) and value:
                found.append(str(value))
    return found
