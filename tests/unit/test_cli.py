"""Commands: check-config, configuration errors, --version and --help.

In-process calls of `main()` cover the logic; a few real `python -m connector` processes
(started together, once per module) prove the entry point, the exit codes and that bad
configuration stops before any connection.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from connector import __version__
from connector.cli import main
from connector.config import ENVIRONMENT, MASK

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "smz_live_cli_secret_123"
SALT = "cli-salt-secret"
WEBHOOK_SECRET = "whsec_cli_secret"
SASL_PASSWORD = "sasl-cli-secret"


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT and k != "POD_NAME"}
    env.update(extra)
    return env


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [*ENVIRONMENT, "POD_NAME"]:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# --- in process ------------------------------------------------------------------------------


def test_check_config_prints_masked_config_and_exits_0(
    env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "connector.yaml"
    config.write_text(
        "kafka:\n  consumer:\n    sasl.password: ${SASL_PW}\n    sasl.username: bob\n"
        "pipeline:\n  max_in_flight: 64\n",
        encoding="utf-8",
    )
    env.setenv("SASL_PW", SASL_PASSWORD)
    env.setenv("SEMARIZE_API_KEY", API_KEY)
    env.setenv("SEMARIZE_KIT_CODE", "A1B2C3D4")
    env.setenv("CONNECTOR_IDEMPOTENCY_SALT", SALT)
    env.setenv("CONNECTOR_WEBHOOKS_ENABLED", "true")
    env.setenv("SEMARIZE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    assert main(["check-config", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    for secret in (API_KEY, SALT, WEBHOOK_SECRET, SASL_PASSWORD):
        assert secret not in captured.out
        assert secret not in captured.err
    data = json.loads(captured.out)
    assert data["semarize"]["api_key"] == MASK
    assert data["pipeline"]["idempotency_salt"] == MASK
    assert data["webhooks"]["secret"] == MASK
    assert data["kafka"]["consumer"] == {"sasl.password": MASK, "sasl.username": "bob"}
    assert data["pipeline"]["max_in_flight"] == 64
    assert data["semarize"]["kit_code"] == "A1B2C3D4"
    assert captured.err == ""


def test_check_config_without_a_file_uses_defaults_and_environment(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("SEMARIZE_API_KEY", API_KEY)
    env.setenv("SEMARIZE_KIT_VERSION_ID", "kv_1")
    env.setenv("CONNECTOR_INPUT_TOPIC", "a,b")
    assert main(["check-config"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kafka"]["input_topics"] == ["a", "b"]
    assert data["kafka"]["bootstrap_servers"] == "127.0.0.1:9092"
    assert data["semarize"]["kit_version_id"] == "kv_1"


def test_bad_config_exits_2_with_one_line_per_problem(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("SEMARIZE_MODE", "turbo")
    env.setenv("CONNECTOR_MAX_IN_FLIGHT", "0")
    assert main(["check-config"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 4, lines
    assert all(line.startswith("config error: ") for line in lines)
    text = "\n".join(lines)
    assert "semarize.mode: must be one of async, sync (got 'turbo')" in text
    assert "pipeline.max_in_flight: must be 1..100000 (got 0)" in text
    assert "semarize.api_key: required" in text
    assert "semarize.kit_code / semarize.kit_version_id: one is required" in text


def test_bad_config_file_exits_2(
    env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("SEMARIZE_API_KEY", API_KEY)
    env.setenv("SEMARIZE_KIT_CODE", "A1B2C3D4")
    assert main(["check-config", "--config", str(tmp_path / "missing.yaml")]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("config error: config file ")
    assert "missing.yaml: cannot be read" in line


def test_problems_about_secrets_do_not_print_them(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("SEMARIZE_API_KEY", "smz live key with spaces")
    env.setenv("SEMARIZE_KIT_CODE", "A1B2C3D4")
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error: semarize.api_key: must not contain white space")
    assert "key with spaces" not in err


@pytest.mark.timeout(30)
def test_run_with_bad_config_stops_before_connecting(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Static checks come before any connection: the connector is never even built."""
    import connector.app

    def no_connector(*args: object, **kwargs: object) -> None:
        raise AssertionError("the connector was started despite a bad configuration")

    env.setattr(connector.app, "Connector", no_connector)
    env.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{closed_port()}")
    env.setenv("SEMARIZE_MODE", "x")
    env.setenv("CONNECTOR_OPS_PORT", "-5")
    assert main(["run", "--stop-when-idle", "1"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 4, lines  # mode, ops.port, api key, kit
    assert all(line.startswith("config error: ") for line in lines)
    assert any("ops.port: must be 0..65535 (got -5)" in line for line in lines)
    assert captured.out == ""


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"semarize-connector {__version__}"


@pytest.mark.parametrize(
    "argv",
    [[], ["nonsense"], ["run", "--stop-when-idle", "-1"], ["run", "--stop-when-idle", "x"]],
    ids=["no-command", "unknown-command", "negative-idle", "not-a-number"],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert "usage: semarize-connector" in capsys.readouterr().err


# --- real processes --------------------------------------------------------------------------


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
def processes() -> Iterator[dict[str, Result]]:
    """Runs every case at once and waits for all of them."""
    cases: dict[str, list[str]] = {
        "version": ["--version"],
        "help": ["--help"],
        "run-help": ["run", "--help"],
        "check-config-help": ["check-config", "--help"],
        "simulate-help": ["simulate", "--help"],
    }
    running = {
        name: subprocess.Popen(
            [sys.executable, "-m", "connector", *argv],
            cwd=ROOT,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, argv in cases.items()
    }
    results: dict[str, Result] = {}
    try:
        for name, process in running.items():
            out, err = process.communicate(timeout=60)
            results[name] = Result(process.returncode, out, err)
    finally:
        for process in running.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
    yield results


def test_process_version(processes: dict[str, Result]) -> None:
    result = processes["version"]
    assert result.code == 0
    assert result.out.strip() == f"semarize-connector {__version__}"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("help", ["run", "simulate", "check-config", "--version"]),
        ("run-help", ["--config", "--stop-when-idle"]),
        ("check-config-help", ["--config", "masked"]),
        ("simulate-help", ["--host", "--port"]),
    ],
)
def test_process_help_for_each_command(
    processes: dict[str, Result], case: str, expected: list[str]
) -> None:
    result = processes[case]
    assert result.code == 0, result.err
    assert result.out.startswith("usage: semarize-connector")
    for word in expected:
        assert word in result.out
    assert result.err == ""
