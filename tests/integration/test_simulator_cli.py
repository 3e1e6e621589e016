"""The simulator as users run it: `python -m connector.simulator` in its own process."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.fixtures_simulator import SimulatorFactory, SimulatorProcess

AUTH = {"Authorization": "Bearer smz_test_cli", "Content-Type": "application/json"}


def call(
    url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or AUTH)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def create(url: str, key: str, transcript: str = "Rep: hi. Prospect: hello.") -> tuple[int, Any]:
    body = {"kit_code": "A1B2C3D4", "input": {"transcript": transcript}}
    return call(url + "/v1/runs", "POST", body, {**AUTH, "Idempotency-Key": key})


def test_create_poll_and_stats(simulator: SimulatorProcess) -> None:
    assert simulator.url.startswith("http://127.0.0.1:")
    status, created = create(simulator.url, "event-1")
    assert status == 202 and created["status"] == "queued"
    deadline = time.monotonic() + 5
    while True:
        status, detail = call(f"{simulator.url}/v1/runs/{created['run_id']}")
        if detail["status"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert detail["status"] == "succeeded" and 50 <= detail["duration_ms"] <= 300
    assert detail["output"]["bricks"]
    stats = simulator.stats()
    assert stats["runs_created"] == 1
    assert stats["requests"]["POST /v1/runs"] == {"202": 1}
    assert stats["requests"]["GET /v1/runs/{runId}"]["200"] >= 1


def test_faults_through_the_fixture(simulator: SimulatorProcess) -> None:
    settings = simulator.faults(rate_429=1, retry_after_429=3)
    assert settings["rate_429"] == 1.0
    status, body = create(simulator.url, "event-2")
    assert (status, body) == (429, {"error": "rate_limited", "retry_after_seconds": 3})
    simulator.reset()
    assert simulator.stats()["requests"] == {}


def test_refuse_outage_then_recovery_on_the_same_port(simulator: SimulatorProcess) -> None:
    port = int(simulator.url.rsplit(":", 1)[1])
    simulator.faults(outage="refuse", outage_seconds=1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            break
        except ConnectionRefusedError:
            time.sleep(0.05)
    assert simulator.stats()["runs_created"] == 0  # reachable again, same port


def test_same_seed_same_runs_across_processes(simulator_factory: SimulatorFactory) -> None:
    first, second = simulator_factory("--seed", "5"), simulator_factory("--seed", "5")
    ids = [
        [create(sim.url, f"event-{i}")[1]["run_id"] for i in range(3)] for sim in (first, second)
    ]
    assert ids[0] == ids[1]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_clean_stop_on_signals(simulator_factory: SimulatorFactory, signum: int) -> None:
    sim = simulator_factory("--run-duration-ms", "10:10")
    create(sim.url, "event-3")
    started = time.monotonic()
    sim.proc.send_signal(signum)
    assert sim.proc.wait(10) == 0
    assert time.monotonic() - started < 5


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector.simulator", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_bad_options_exit_2() -> None:
    result = run_cli("--fail-rate", "2")
    assert result.returncode == 2 and "fail-rate" in result.stderr
    result = run_cli("--webhook-url", "http://127.0.0.1:1/x")
    assert result.returncode == 2 and "--webhook-secret" in result.stderr


def test_port_in_use_exits_1(simulator: SimulatorProcess) -> None:
    port = simulator.url.rsplit(":", 1)[1]
    result = run_cli("--port", port)
    assert result.returncode == 1 and "cannot listen" in result.stderr


def test_help_lists_the_options() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ("--rate-429", "--webhook-url", "--outage", "--seed", "--kits"):
        assert option in result.stdout
