"""Settings: file + `${NAME}` references + environment, validation, secret masking."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from connector.config import (
    ENVIRONMENT,
    MASK,
    InputMapping,
    Secret,
    Settings,
    librdkafka_secrets,
    load_settings,
    masked_dict,
)
from connector.errors import EXIT_CONFIG, ConfigError

REQUIRED = {"SEMARIZE_API_KEY": "smz_test_required_key", "SEMARIZE_KIT_CODE": "A1B2C3D4"}


def load(env: dict[str, str] | None = None, yaml_text: str | None = None, **kw: Any) -> Settings:
    path = kw.pop("path", None)
    if yaml_text is not None:
        path = kw.pop("tmp_path") / "config.yaml"
        path.write_text(yaml_text, encoding="utf-8")
    return load_settings(path, {**REQUIRED, **(env or {})})


def problems_of(env: dict[str, str] | None = None, **kw: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(env, **kw)
    assert caught.value.exit_code == EXIT_CONFIG
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


# --- defaults --------------------------------------------------------------------------------


def test_no_file_gives_the_documented_defaults() -> None:
    s = load_settings(None, REQUIRED)
    k = s.kafka
    assert k.bootstrap_servers == "127.0.0.1:9092"
    assert k.group_id == "semarize-connector"
    assert k.input_topics == ("transcripts",)
    assert k.output_topic == "transcripts.analyzed"
    assert k.dlq_topic == "transcripts.dlq"
    assert k.completions_topic == "transcripts.completions"
    assert k.auto_offset_reset == "earliest"
    assert dict(k.consumer) == {} and dict(k.producer) == {}
    assert s.semarize.api_url == "https://api.semarize.com"
    assert s.semarize.api_key.reveal() == "smz_test_required_key"
    assert (s.semarize.kit_code, s.semarize.kit_version_id) == ("A1B2C3D4", None)
    assert s.semarize.mode == "async"
    assert s.pipeline.max_in_flight == 256
    assert s.pipeline.processing_guarantee == "at_least_once"
    assert s.pipeline.ordering == "none"
    assert s.pipeline.idempotency_salt.reveal() == ""
    assert s.pipeline.input_max_bytes == 1_048_576
    assert s.pipeline.mapping == InputMapping()
    assert s.run.deadline_seconds == 3600
    assert s.rate_limit.requests_per_second == 0
    assert s.rate_limit.scope == "process"
    assert s.shutdown.grace_seconds == 30
    assert s.health.stuck_after_seconds is None
    assert s.stuck_after_seconds == 3600 + 600
    assert s.ops.port == 8000
    assert s.ops.log_level == "info"
    assert s.webhooks.enabled is False
    assert s.webhooks.port == 8080
    assert not s.webhooks.secret
    assert s.webhooks.poll_fallback_seconds == 300
    assert s.instance_id
    assert s.effective_kit == ("A1B2C3D4", None)


def test_empty_file_is_valid(tmp_path: Path) -> None:
    assert load(yaml_text="", tmp_path=tmp_path).kafka.group_id == "semarize-connector"
    assert load(yaml_text="# nothing\n", tmp_path=tmp_path).ops.port == 8000
    assert load(yaml_text="kafka:\n", tmp_path=tmp_path).kafka.dlq_topic == "transcripts.dlq"


def test_instance_id_is_the_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "connector-7f9c-0")
    assert load_settings(None, REQUIRED).instance_id == "connector-7f9c-0"
    monkeypatch.delenv("POD_NAME")
    assert re.match(r"^.+:\d+$", load_settings(None, REQUIRED).instance_id)


# --- the environment -------------------------------------------------------------------------

# DESIGN.md's table, written out again: variable -> (value, where to read it, expected).
GUARANTEED_ENV: dict[str, tuple[str, str, Any]] = {
    "KAFKA_BOOTSTRAP_SERVERS": ("b1:9092,b2:9092", "kafka.bootstrap_servers", "b1:9092,b2:9092"),
    "CONNECTOR_GROUP_ID": ("grp", "kafka.group_id", "grp"),
    "CONNECTOR_INPUT_TOPIC": ("a, b ,c", "kafka.input_topics", ("a", "b", "c")),
    "CONNECTOR_OUTPUT_TOPIC": ("out", "kafka.output_topic", "out"),
    "CONNECTOR_DLQ_TOPIC": ("dead", "kafka.dlq_topic", "dead"),
    "CONNECTOR_COMPLETIONS_TOPIC": ("done", "kafka.completions_topic", "done"),
    "CONNECTOR_AUTO_OFFSET_RESET": ("latest", "kafka.auto_offset_reset", "latest"),
    "SEMARIZE_API_URL": ("http://127.0.0.1:8090", "semarize.api_url", "http://127.0.0.1:8090"),
    "SEMARIZE_API_KEY": ("smz_live_other", "semarize.api_key", Secret("smz_live_other")),
    "SEMARIZE_KIT_CODE": ("Z9Y8X7W6", "semarize.kit_code", "Z9Y8X7W6"),
    "SEMARIZE_KIT_VERSION_ID": ("kv_1", "semarize.kit_version_id", "kv_1"),
    "SEMARIZE_MODE": ("sync", "semarize.mode", "sync"),
    "CONNECTOR_MAX_IN_FLIGHT": ("32", "pipeline.max_in_flight", 32),
    "CONNECTOR_PROCESSING_GUARANTEE": (
        "exactly_once",
        "pipeline.processing_guarantee",
        "exactly_once",
    ),
    "CONNECTOR_ORDERING": ("key", "pipeline.ordering", "key"),
    "CONNECTOR_IDEMPOTENCY_SALT": ("pepper", "pipeline.idempotency_salt", Secret("pepper")),
    "CONNECTOR_INPUT_MAX_BYTES": ("2048", "pipeline.input_max_bytes", 2048),
    "CONNECTOR_RUN_DEADLINE_SECONDS": ("120", "run.deadline_seconds", 120.0),
    "CONNECTOR_RATE_LIMIT_RPS": ("2.5", "rate_limit.requests_per_second", 2.5),
    "CONNECTOR_RATE_LIMIT_SCOPE": ("group", "rate_limit.scope", "group"),
    "CONNECTOR_SHUTDOWN_GRACE_SECONDS": ("5", "shutdown.grace_seconds", 5.0),
    "CONNECTOR_HEALTH_STUCK_AFTER_SECONDS": ("9000", "health.stuck_after_seconds", 9000.0),
    "CONNECTOR_OPS_PORT": ("9100", "ops.port", 9100),
    "CONNECTOR_LOG_LEVEL": ("debug", "ops.log_level", "debug"),
    "CONNECTOR_WEBHOOKS_ENABLED": ("true", "webhooks.enabled", True),
    "CONNECTOR_WEBHOOKS_PORT": ("8181", "webhooks.port", 8181),
    "SEMARIZE_WEBHOOK_SECRET": ("whsec_abcdef", "webhooks.secret", Secret("whsec_abcdef")),
    "CONNECTOR_WEBHOOKS_POLL_FALLBACK_SECONDS": ("60", "webhooks.poll_fallback_seconds", 60.0),
}


def read(settings: Settings, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(settings, section), key)


def test_every_guaranteed_variable_is_known() -> None:
    assert set(GUARANTEED_ENV) <= set(ENVIRONMENT)
    for variable, (_, dotted, _) in GUARANTEED_ENV.items():
        assert ENVIRONMENT[variable] == dotted


@pytest.mark.parametrize("variable", sorted(GUARANTEED_ENV))
def test_each_variable_sets_its_setting(variable: str) -> None:
    value, dotted, expected = GUARANTEED_ENV[variable]
    env = {variable: value}
    if variable == "CONNECTOR_WEBHOOKS_ENABLED":
        env["SEMARIZE_WEBHOOK_SECRET"] = "whsec_abcdef"
    assert read(load(env), dotted) == expected


def test_all_variables_at_once() -> None:
    env = {variable: value for variable, (value, _, _) in GUARANTEED_ENV.items()}
    s = load(env)
    for variable, (_, dotted, expected) in GUARANTEED_ENV.items():
        assert read(s, dotted) == expected, variable


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    text = """
kafka:
  group_id: from-file
  output_topic: file.out
semarize:
  mode: sync
pipeline:
  max_in_flight: 10
"""
    s = load(
        {"CONNECTOR_GROUP_ID": "from-env", "CONNECTOR_MAX_IN_FLIGHT": "20"}, text, tmp_path=tmp_path
    )
    assert s.kafka.group_id == "from-env"
    assert s.pipeline.max_in_flight == 20
    assert s.kafka.output_topic == "file.out"  # not overridden: the file's
    assert s.semarize.mode == "sync"


def test_file_sets_every_section(tmp_path: Path) -> None:
    text = """
kafka:
  bootstrap_servers: kafka-0:9092
  input_topics: [calls-eu, calls-us]
  consumer: {fetch.max.bytes: 1048576, session.timeout.ms: 45000}
  producer: {linger.ms: 20}
semarize:
  api_url: http://sim:8090
  kit_version_id: kv_7
  read_timeout_seconds: 90
pipeline:
  ordering: key
  mapping: {event_id: meta.id, transcript: call.text}
run: {deadline_seconds: 600}
rate_limit: {requests_per_second: 10, scope: group}
shutdown: {grace_seconds: 0}
health: {stuck_after_seconds: 1300}
ops: {port: 0, log_level: WARNING}
webhooks: {enabled: yes, secret: whsec_x1234, port: 8081}
"""
    s = load(yaml_text=text, tmp_path=tmp_path)
    assert s.kafka.input_topics == ("calls-eu", "calls-us")
    assert s.kafka.consumer == {"fetch.max.bytes": 1048576, "session.timeout.ms": 45000}
    assert s.kafka.producer == {"linger.ms": 20}
    assert s.semarize.kit_version_id == "kv_7"
    assert s.semarize.read_timeout_seconds == 90.0
    assert s.pipeline.ordering == "key"
    assert s.pipeline.mapping == InputMapping(event_id="meta.id", transcript="call.text")
    assert s.run.deadline_seconds == 600
    assert s.rate_limit.scope == "group"
    assert s.shutdown.grace_seconds == 0
    assert s.stuck_after_seconds == 1300
    assert s.ops.port == 0
    assert s.ops.log_level == "warning"
    assert s.webhooks.enabled is True
    assert s.webhooks.secret.reveal() == "whsec_x1234"


def test_env_references_are_expanded(tmp_path: Path) -> None:
    text = """
kafka:
  bootstrap_servers: ${BROKER_HOST}:9093
  consumer:
    sasl.password: ${SASL_PASSWORD}
    sasl.username: user-${TEAM}
  input_topics: ["${TEAM}.calls"]
"""
    env = {"BROKER_HOST": "kafka.internal", "SASL_PASSWORD": "hunter22!", "TEAM": "emea"}
    s = load(env, text, tmp_path=tmp_path)
    assert s.kafka.bootstrap_servers == "kafka.internal:9093"
    assert s.kafka.consumer["sasl.password"] == "hunter22!"
    assert s.kafka.consumer["sasl.username"] == "user-emea"
    assert s.kafka.input_topics == ("emea.calls",)


def test_unset_env_reference_is_a_problem(tmp_path: Path) -> None:
    text = "kafka:\n  consumer:\n    sasl.password: ${NOT_SET_ANYWHERE}\n"
    assert problems_of(yaml_text=text, tmp_path=tmp_path) == [
        "kafka.consumer.sasl.password: references ${NOT_SET_ANYWHERE}, which is not set"
    ]


# --- problems --------------------------------------------------------------------------------


def test_required_settings() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {})
    problems = caught.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("semarize.api_key: required")
    assert problems[1].startswith("semarize.kit_code / semarize.kit_version_id: one is required")


def test_kit_version_alone_is_enough() -> None:
    s = load_settings(None, {"SEMARIZE_API_KEY": "k-123456", "SEMARIZE_KIT_VERSION_ID": "kv_1"})
    assert s.effective_kit == (None, "kv_1")


def test_every_problem_is_reported_at_once() -> None:
    env = {
        "SEMARIZE_MODE": "turbo",
        "CONNECTOR_MAX_IN_FLIGHT": "many",
        "CONNECTOR_OUTPUT_TOPIC": "transcripts",
        "SEMARIZE_API_URL": "ftp://x",
        "SEMARIZE_KIT_CODE": "short",
    }
    problems = problems_of(env)
    assert len(problems) == 5, problems
    joined = "\n".join(problems)
    for fragment in (
        "semarize.mode: must be one of async, sync (got 'turbo')",
        "pipeline.max_in_flight: must be a whole number (got 'many')",
        "kafka.output_topic: must differ from the input topics",
        "semarize.api_url: must be an http(s) URL",
        "semarize.kit_code: must be 8 letters or digits (got 'short')",
    ):
        assert fragment in joined


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"CONNECTOR_MAX_IN_FLIGHT": "0"}, "pipeline.max_in_flight: must be 1..100000"),
        ({"CONNECTOR_MAX_IN_FLIGHT": "100001"}, "pipeline.max_in_flight: must be 1..100000"),
        ({"CONNECTOR_MAX_IN_FLIGHT": "2.5"}, "must be a whole number"),
        ({"CONNECTOR_MAX_IN_FLIGHT": "inf"}, "must be a whole number"),
        ({"CONNECTOR_MAX_IN_FLIGHT": "nan"}, "must be a whole number"),
        ({"CONNECTOR_INPUT_MAX_BYTES": "1023"}, "pipeline.input_max_bytes: must be 1024..67108864"),
        ({"CONNECTOR_RUN_DEADLINE_SECONDS": "0"}, "run.deadline_seconds: must be greater than 0"),
        ({"CONNECTOR_RUN_DEADLINE_SECONDS": "soon"}, "run.deadline_seconds: must be a number"),
        ({"CONNECTOR_RUN_DEADLINE_SECONDS": "inf"}, "run.deadline_seconds: must be a number"),
        ({"CONNECTOR_RATE_LIMIT_RPS": "-1"}, "rate_limit.requests_per_second: must be 0 (off)"),
        ({"CONNECTOR_RATE_LIMIT_RPS": "nan"}, "rate_limit.requests_per_second: must be a number"),
        (
            {"CONNECTOR_RATE_LIMIT_SCOPE": "cluster"},
            "rate_limit.scope: must be one of process, group",
        ),
        ({"CONNECTOR_SHUTDOWN_GRACE_SECONDS": "-1"}, "shutdown.grace_seconds: must be 0 or more"),
        (
            {"CONNECTOR_HEALTH_STUCK_AFTER_SECONDS": "3600"},
            "health.stuck_after_seconds: must be longer",
        ),
        ({"CONNECTOR_OPS_PORT": "70000"}, "ops.port: must be 0..65535"),
        ({"CONNECTOR_OPS_PORT": "http"}, "ops.port: must be a whole number"),
        (
            {"CONNECTOR_LOG_LEVEL": "verbose"},
            "ops.log_level: must be one of debug, info, warning, error",
        ),
        ({"CONNECTOR_PROCESSING_GUARANTEE": "at_most_once"}, "pipeline.processing_guarantee"),
        ({"CONNECTOR_ORDERING": "partition"}, "pipeline.ordering: must be one of none, key"),
        (
            {"CONNECTOR_AUTO_OFFSET_RESET": "none"},
            "kafka.auto_offset_reset: must be one of earliest, latest",
        ),
        ({"CONNECTOR_WEBHOOKS_ENABLED": "maybe"}, "webhooks.enabled: must be true or false"),
        (
            {"CONNECTOR_WEBHOOKS_ENABLED": "true"},
            "webhooks.secret: required when webhooks are enabled",
        ),
        (
            {
                "CONNECTOR_WEBHOOKS_ENABLED": "1",
                "SEMARIZE_WEBHOOK_SECRET": "whsec_1",
                "CONNECTOR_WEBHOOKS_PORT": "8000",
            },
            "webhooks.port: must differ from ops.port",
        ),
        (
            {
                "CONNECTOR_WEBHOOKS_ENABLED": "on",
                "SEMARIZE_WEBHOOK_SECRET": "whsec_1",
                "CONNECTOR_COMPLETIONS_TOPIC": "transcripts.dlq",
            },
            "kafka.completions_topic: must differ",
        ),
        (
            {"CONNECTOR_DLQ_TOPIC": "transcripts.analyzed"},
            "kafka.dlq_topic: must differ from kafka.output_topic",
        ),
        (
            {"CONNECTOR_DLQ_TOPIC": "transcripts"},
            "kafka.dlq_topic: must differ from the input topics",
        ),
        ({"CONNECTOR_INPUT_TOPIC": " , "}, "kafka.input_topics: name at least one input topic"),
        ({"KAFKA_BOOTSTRAP_SERVERS": ""}, "kafka.bootstrap_servers: must not be empty"),
        ({"CONNECTOR_GROUP_ID": " "}, "kafka.group_id: must not be empty"),
        ({"SEMARIZE_API_URL": "api.semarize.com"}, "semarize.api_url: must be an http(s) URL"),
        ({"SEMARIZE_API_KEY": "smz live key"}, "semarize.api_key: must not contain white space"),
        ({"SEMARIZE_KIT_CODE": "A1B2C3D4E"}, "semarize.kit_code: must be 8 letters or digits"),
        ({"SEMARIZE_KIT_CODE": "A1B2-3D4"}, "semarize.kit_code: must be 8 letters or digits"),
    ],
)
def test_invalid_values(env: dict[str, str], fragment: str) -> None:
    problems = problems_of(env)
    assert any(fragment in p for p in problems), problems


def test_values_are_normalised() -> None:
    s = load(
        {
            "SEMARIZE_MODE": " SYNC ",
            "CONNECTOR_LOG_LEVEL": "Warning",
            "CONNECTOR_OPS_PORT": "9000.0",
        }
    )
    assert s.semarize.mode == "sync"
    assert s.ops.log_level == "warning"
    assert s.ops.port == 9000


@pytest.mark.parametrize("text", ["false", "0", "no", "off", "FALSE"])
def test_false_spellings(text: str) -> None:
    assert load({"CONNECTOR_WEBHOOKS_ENABLED": text}).webhooks.enabled is False


def test_unknown_section_and_setting_suggest_the_right_name(tmp_path: Path) -> None:
    text = "kafak:\n  group_id: x\nsemarize:\n  kit_cod: A1B2C3D4\n  mystery: 1\n"
    problems = problems_of(yaml_text=text, tmp_path=tmp_path)
    assert problems == [
        "kafak: unknown section (did you mean kafka?)",
        "semarize.kit_cod: unknown setting (did you mean kit_code?)",
        "semarize.mystery: unknown setting",
    ]


def test_non_string_keys_are_reported_not_crashed_on(tmp_path: Path) -> None:
    problems = problems_of(yaml_text="1: x\nkafka:\n  2: y\n", tmp_path=tmp_path)
    assert problems == ["1: unknown section", "kafka.2: unknown setting"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n", "the top level must be a mapping of sections"),
        ("just a string\n", "the top level must be a mapping of sections"),
        ("kafka: [1, 2]\n", "kafka: must be a mapping"),
        ("kafka:\n  consumer: [a]\n", "kafka.consumer: must be a mapping of librdkafka settings"),
        ("kafka:\n  input_topics: {a: 1}\n", "kafka.input_topics: must be a list of names"),
        ("kafka:\n  input_topics: [a, 1]\n", "kafka.input_topics: must be a list of names"),
        ("kafka:\n  group_id: {a: 1}\n", "kafka.group_id: must be a string"),
        ("pipeline:\n  mapping: [a]\n", "pipeline.mapping: must be a mapping"),
        (
            "pipeline:\n  mapping: {event: id}\n",
            "pipeline.mapping.event: unknown setting (did you mean event_id?)",
        ),
        ("ops:\n  port: true\n", "ops.port: must be a whole number"),
        ("run:\n  deadline_seconds: false\n", "run.deadline_seconds: must be a number"),
        (
            "kafka:\n  consumer: {enable.auto.commit: true}\n",
            "kafka.consumer.enable.auto.commit: is set by the connector",
        ),
        (
            "kafka:\n  consumer: {group.id: other}\n",
            "kafka.consumer.group.id: is set by the connector",
        ),
        (
            "kafka:\n  producer: {enable.idempotence: false}\n",
            "kafka.producer.enable.idempotence: is set by the connector",
        ),
        (
            "kafka:\n  producer: {transactional.id: t}\n",
            "kafka.producer.transactional.id: is set by the connector",
        ),
    ],
)
def test_file_problems(tmp_path: Path, text: str, expected: str) -> None:
    problems = problems_of(yaml_text=text, tmp_path=tmp_path)
    assert any(expected in p for p in problems), problems


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    problems = problems_of(
        yaml_text="kafka:\n  group_id: ok\n  bad: [unclosed\n", tmp_path=tmp_path
    )
    assert len(problems) == 1
    assert re.search(r"config file .*config\.yaml: not valid YAML at line \d+$", problems[0])


def test_missing_file_is_a_problem(tmp_path: Path) -> None:
    problems = problems_of(path=tmp_path / "absent.yaml")
    assert len(problems) == 1
    assert "absent.yaml: cannot be read" in problems[0]


def test_problems_never_show_a_secret(tmp_path: Path) -> None:
    secrets = ["smz live with spaces", "whsec_do_not_show", "sasl-password-value"]
    text = (
        "kafka:\n  consumer:\n"
        "    sasl.password: sasl-password-value\n    enable.auto.commit: true\n"
    )
    env = {
        "SEMARIZE_API_KEY": secrets[0],
        "SEMARIZE_WEBHOOK_SECRET": secrets[1],
        "CONNECTOR_WEBHOOKS_ENABLED": "yes",
        "CONNECTOR_WEBHOOKS_PORT": "8000",
    }
    problems = problems_of(env, yaml_text=text, tmp_path=tmp_path)
    assert len(problems) == 3
    for secret in secrets:
        assert secret not in "\n".join(problems)


# --- secrets ---------------------------------------------------------------------------------


def test_secret_never_shows_itself() -> None:
    secret = Secret("smz_live_abcdef")
    assert "abcdef" not in repr(secret)
    assert "abcdef" not in str(secret)
    assert "abcdef" not in f"{secret}"
    assert secret.reveal() == "smz_live_abcdef"
    assert secret == Secret("smz_live_abcdef") and secret != Secret("other")
    assert secret != "smz_live_abcdef"
    assert bool(secret) and not Secret("")
    assert "abcdef" not in repr(load({"SEMARIZE_API_KEY": "smz_live_abcdef"}))


def test_masked_dict_masks_every_secret(tmp_path: Path) -> None:
    text = """
kafka:
  consumer: {sasl.password: "${SASL_PW}", ssl.key.password: kp-123456, sasl.username: alice}
  producer:
    sasl.oauthbearer.client.secret: cs-123456
    sasl.oauthbearer.config: "clientSecret=tk-123456"
"""
    env = {
        "SASL_PW": "sasl-secret-1",
        "SEMARIZE_API_KEY": "smz_live_secret_2",
        "CONNECTOR_IDEMPOTENCY_SALT": "salt-secret-3",
        "CONNECTOR_WEBHOOKS_ENABLED": "true",
        "SEMARIZE_WEBHOOK_SECRET": "whsec_secret_4",
    }
    s = load(env, text, tmp_path=tmp_path)
    data = masked_dict(s)
    dumped = repr(data)
    for value in (
        "sasl-secret-1",
        "smz_live_secret_2",
        "salt-secret-3",
        "whsec_secret_4",
        "kp-123456",
        "cs-123456",
        "tk-123456",
    ):
        assert value not in dumped
    assert data["semarize"]["api_key"] == MASK
    assert data["pipeline"]["idempotency_salt"] == MASK
    assert data["webhooks"]["secret"] == MASK
    assert data["kafka"]["consumer"]["sasl.password"] == MASK
    assert data["kafka"]["consumer"]["ssl.key.password"] == MASK
    assert data["kafka"]["consumer"]["sasl.username"] == "alice"  # not a secret
    assert data["kafka"]["producer"] == {
        "sasl.oauthbearer.client.secret": MASK,
        "sasl.oauthbearer.config": MASK,
    }
    assert data["kafka"]["input_topics"] == ["transcripts"]
    assert data["health"]["stuck_after_seconds"] == 4200
    assert data["semarize"]["kit_code"] == "A1B2C3D4"
    assert sorted(librdkafka_secrets(s)) == sorted(
        ["sasl-secret-1", "kp-123456", "cs-123456", "clientSecret=tk-123456"]
    )


def test_empty_secrets_are_shown_empty() -> None:
    data = masked_dict(load())
    assert data["pipeline"]["idempotency_salt"] == ""
    assert data["webhooks"]["secret"] == ""


def test_a_secret_must_be_a_string_and_is_not_shown(tmp_path: Path) -> None:
    text = "semarize:\n  api_key: [smz_test_listed_secret]\n"
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {"SEMARIZE_KIT_CODE": "A1B2C3D4"})
    problems = caught.value.problems
    assert "semarize.api_key: must be a string" in problems
    assert not any("smz_test_listed_secret" in p for p in problems)


def test_credentials_in_the_api_url_are_refused_and_never_echoed() -> None:
    problems = problems_of({"SEMARIZE_API_URL": "https://user:smz_live_inurl@api.example"})
    assert problems == [
        "semarize.api_url: must not carry credentials (user:password@); the API key goes in "
        "semarize.api_key"
    ]
    assert not any("smz_live_inurl" in p for p in problems)
