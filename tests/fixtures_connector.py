"""Fixtures that run the real connector CLI against the session broker and a simulator.

- `pipeline_topics(partitions=...)`: fresh input / output / dead-letter (/ completions) topics.
- `connector_factory(...)`: starts `semarize-connector run` as a subprocess with a generated
  config file; returns a `ConnectorProcess` (wait, signal, kill, metrics, logs). Every
  process it started is killed at the end of the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.kafka_admin import create_topic
from tests.kafka_broker import free_port

CONNECTOR = str(Path(sys.executable).parent / "semarize-connector")
BIG_TOPIC = {"max.message.bytes": str(8 * 1024 * 1024)}
TEST_API_KEY = "smz_test_integration_key_0123456789"


@dataclass(frozen=True)
class Topics:
    input: str
    output: str
    dlq: str
    completions: str
    partitions: int


class ConnectorProcess:
    def __init__(self, config_path: Path, log_path: Path, env: dict[str, str], args: list[str]):
        self.config_path = config_path
        self.log_path = log_path
        self.env = env
        self.args = args
        self.ops_port = int(env["CONNECTOR_OPS_PORT"])
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [CONNECTOR, "run", "--config", str(config_path), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"connector did not exit within {timeout} s; log tail:\n{self.tail()}"
            ) from None

    def send(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def running(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        self.kill()
        self._log.close()

    def logs(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.log_path.read_bytes().splitlines():
            if line.startswith(b"{"):
                with contextlib.suppress(orjson.JSONDecodeError):
                    entries.append(orjson.loads(line))
        return entries

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def get(self, path: str, timeout: float = 5) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.ops_port}{path}", timeout=timeout
            ) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def metrics(self) -> dict[str, float]:
        """Samples of /metrics as {'name{labels}': value}."""
        _, body = self.get("/metrics")
        samples = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise AssertionError(f"connector exited early:\n{self.tail()}")
            try:
                status, _ = self.get("/readyz", timeout=1)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"connector not ready within {timeout} s:\n{self.tail()}")


ConnectorFactory = Callable[..., ConnectorProcess]


@pytest.fixture
def pipeline_topics(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Callable[..., Topics]:
    def make(partitions: int = 3, *, completions: bool = False) -> Topics:
        base = f"{request.node.name[:40]}-{os.urandom(4).hex()}".replace("[", "-").replace("]", "")
        topics = Topics(
            input=f"{base}.in",
            output=f"{base}.out",
            dlq=f"{base}.dlq",
            completions=f"{base}.completions",
            partitions=partitions,
        )
        create_topic(kafka_bootstrap, topics.input, partitions, BIG_TOPIC)
        create_topic(kafka_bootstrap, topics.output, partitions, BIG_TOPIC)
        create_topic(kafka_bootstrap, topics.dlq, partitions, BIG_TOPIC)
        if completions:
            create_topic(kafka_bootstrap, topics.completions, 3)
        return topics

    return make


@pytest.fixture
def connector_factory(kafka_bootstrap: str, tmp_path: Path) -> Iterator[ConnectorFactory]:
    started: list[ConnectorProcess] = []

    def start(
        *,
        api_url: str,
        topics: Topics,
        group: str | None = None,
        config: dict[str, Any] | None = None,
        stop_when_idle: float | None = None,
        env: dict[str, str] | None = None,
        name: str | None = None,
    ) -> ConnectorProcess:
        index = len(started)
        document: dict[str, Any] = {
            "kafka": {
                "bootstrap_servers": kafka_bootstrap,
                "group_id": group or f"g-{topics.input}",
                "input_topics": [topics.input],
                "output_topic": topics.output,
                "dlq_topic": topics.dlq,
                "completions_topic": topics.completions,
                "consumer": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
            },
            "semarize": {
                "api_url": api_url,
                "api_key": "${SEMARIZE_API_KEY}",
                "kit_code": "A1B2C3D4",
                "poll_initial_seconds": 0.1,
                "poll_max_seconds": 1.0,
                "retry_max_seconds": 2.0,
            },
            "ops": {"log_level": "info", "summary_interval_seconds": 5},
        }
        for section, values in (config or {}).items():
            document.setdefault(section, {}).update(values)
        config_path = tmp_path / f"connector-{index}.yaml"
        config_path.write_text(yaml.safe_dump(document))
        process_env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("KAFKA_", "CONNECTOR_", "SEMARIZE_"))
        }
        process_env.update(
            {
                "SEMARIZE_API_KEY": TEST_API_KEY,
                "CONNECTOR_OPS_PORT": str(free_port()),
                "POD_NAME": name or f"connector-{index}",
                "PYTHONUNBUFFERED": "1",
            }
        )
        process_env.update(env or {})
        args = [] if stop_when_idle is None else ["--stop-when-idle", str(stop_when_idle)]
        process = ConnectorProcess(
            config_path, tmp_path / f"connector-{index}.log", process_env, args
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()
