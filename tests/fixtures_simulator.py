"""Simulator fixtures and helpers.

tests/conftest.py loads this module as a plugin (``pytest_plugins``).

- ``simulator_factory`` (function): ``simulator_factory(*extra_args)`` starts
  ``python -m connector.simulator --port 0 <extra_args>`` as a subprocess (the real CLI path),
  waits for its "listening" line and returns a :class:`SimulatorProcess` with ``.url``,
  ``.stats()``, ``.faults(**settings)``, ``.reset()`` and ``.stop()``. Every simulator it
  started is stopped at the end of the test.
- ``simulator`` (function): one simulator with fast runs (``--run-duration-ms 50:300
  --retry-after 0``) and a fixed seed.
- ``in_process(config)``: an async context manager for tests that drive the simulator inside
  their own event loop; it yields a :class:`SimClient` (an aiohttp session bound to it).
  ``run_in_process(scenario, config)`` runs ``await scenario(client)`` with one.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from connector.simulator.options import SimConfig
from connector.simulator.server import RunningSimulator, start_simulator

FAST_ARGS = ("--run-duration-ms", "50:300", "--retry-after", "0", "--seed", "1234")
START_TIMEOUT_S = 20.0
TEST_KEY = "smz_test_simulator"
_LISTENING = re.compile(r"simulator listening on (http://\S+)")


class SimulatorProcess:
    """A simulator subprocess started through the real CLI."""

    def __init__(self, args: tuple[str, ...]) -> None:
        self.args = args
        # a file, not a pipe: a full pipe would block the simulator; closed in stop()
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "connector.simulator", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.url = self._wait_listening()

    def _wait_listening(self) -> str:
        assert self.proc.stdout is not None
        found: list[str] = []

        def read() -> None:
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()
            found.append(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(START_TIMEOUT_S)
        match = _LISTENING.search(found[0]) if found else None
        if match is None:
            self.proc.kill()
            self.proc.wait(10)
            err = self.stderr().strip()
            self.stop()
            raise RuntimeError(f"simulator did not start ({found!r}): {err}")
        return match.group(1)

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_sim/stats")
        return result

    def faults(self, **settings: Any) -> dict[str, Any]:
        """Apply settings (`POST /_sim/faults`); returns the effective settings."""
        result: dict[str, Any] = self._call("POST", "/_sim/faults", settings)
        return result

    def reset(self) -> None:
        self._call("POST", "/_sim/reset", {})

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait, and return the exit code (SIGKILL if it does not stop in time)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if not self._stderr.closed:
            self._stderr.close()
        return self.proc.returncode


SimulatorFactory = Callable[..., SimulatorProcess]


@pytest.fixture(name="simulator_factory")
def simulator_factory_fixture() -> Iterator[SimulatorFactory]:
    started: list[SimulatorProcess] = []

    def start(*extra_args: str) -> SimulatorProcess:
        sim = SimulatorProcess(tuple(extra_args))
        started.append(sim)
        return sim

    try:
        yield start
    finally:
        for sim in started:
            sim.stop()


@pytest.fixture(name="simulator")
def simulator_fixture(simulator_factory: SimulatorFactory) -> SimulatorProcess:
    return simulator_factory(*FAST_ARGS)


# --- in-process -------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    data: Any
    headers: dict[str, str]


class SimClient:
    """An aiohttp session talking to an in-process simulator, with the bearer key set."""

    def __init__(self, sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.session = session

    @property
    def url(self) -> str:
        return self.sim.url

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = None,
        auth: str | None = f"Bearer {TEST_KEY}",
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> Reply:
        all_headers = dict(headers or {})
        if auth is not None:
            all_headers["Authorization"] = auth
        if key is not None:
            all_headers["Idempotency-Key"] = key
        payload = json.dumps(body).encode() if body is not None else data
        if payload is not None:
            all_headers.setdefault("Content-Type", "application/json")
        sent: bytes | io.BytesIO | None = payload
        if payload is not None and len(payload) > 256 * 1024:
            sent = io.BytesIO(payload)  # aiohttp warns about large raw bytes
        async with self.session.request(
            method, self.url + path, data=sent, headers=all_headers
        ) as response:
            raw = await response.read()
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw.decode(errors="replace")
            return Reply(response.status, parsed, dict(response.headers))

    async def create(self, body: dict[str, Any], key: str | None = None, **kw: Any) -> Reply:
        return await self.request("POST", "/v1/runs", body, key=key, **kw)

    async def get_run(self, run_id: str) -> Reply:
        return await self.request("GET", f"/v1/runs/{run_id}")

    async def stats(self) -> dict[str, Any]:
        reply = await self.request("GET", "/_sim/stats", auth=None)
        assert reply.status == 200
        result: dict[str, Any] = reply.data
        return result

    async def faults(self, **settings: Any) -> Reply:
        return await self.request("POST", "/_sim/faults", settings, auth=None)


@asynccontextmanager
async def in_process(config: SimConfig | None = None) -> AsyncIterator[SimClient]:
    """Start a simulator on a free loopback port in this event loop, with a client."""
    sim = await start_simulator(config or SimConfig(seed=1234))
    try:
        async with aiohttp.ClientSession() as session:
            yield SimClient(sim, session)
    finally:
        await sim.stop()


def run_in_process(
    scenario: Callable[[SimClient], Awaitable[None]], config: SimConfig | None = None
) -> None:
    """Run `await scenario(client)` against a fresh in-process simulator (`asyncio.run`)."""

    async def main() -> None:
        async with in_process(config) as client:
            await scenario(client)

    asyncio.run(main())


def run_body(transcript: Any = "Rep: Hello. Prospect: Hi there.", **fields: Any) -> dict[str, Any]:
    """A create-run body for Kit A1B2C3D4 (fields override or extend it)."""
    body: dict[str, Any] = {"kit_code": "A1B2C3D4", "input": {"transcript": transcript}}
    body.update(fields)
    return body
