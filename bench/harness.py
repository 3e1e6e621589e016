"""The benchmark's moving parts: the simulator and connector processes, /proc sampling, and the
connector's Prometheus text.

Nothing here knows about scenarios; ``bench/scenarios.py`` composes these pieces.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CLK_TCK = os.sysconf("SC_CLK_TCK")
API_KEY = "smz_test_benchmark_key_0123456789"
KIT_CODE = "A1B2C3D4"
_LISTENING = re.compile(r"simulator listening on (http://\S+)")


def connector_cli() -> str:
    """The ``semarize-connector`` script: on PATH (the Makefile puts the venv first), else
    next to this interpreter."""
    found = shutil.which("semarize-connector")
    if found:
        return found
    return str(Path(sys.executable).parent / "semarize-connector")


def http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 10) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


# --- /proc ---------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of every thread of ``pid`` (seconds), or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_memory(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in bytes, or None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    if "VmRSS" not in values:
        return None  # a zombie: no memory left to report
    return values["VmRSS"], values.get("VmHWM", values["VmRSS"])


def proc_runqueue_wait(pid: int) -> float:
    """Seconds the threads of ``pid`` spent runnable but waiting for a CPU (schedstat), summed
    over the threads alive now."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


@dataclass
class Sample:
    wall: float
    cpu: float
    rss: int
    hwm: int
    wait: float = 0.0


class ProcSampler:
    """Samples a process's CPU time and memory every ``interval`` seconds on a thread."""

    def __init__(self, pid: int, interval: float = 0.1, *, waits: bool = False) -> None:
        self.pid = pid
        self.interval = interval
        self.waits = waits
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"sampler-{pid}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.sample():
                return
            self._stop.wait(self.interval)

    def sample(self) -> Sample | None:
        wall = time.time()
        cpu = proc_cpu_seconds(self.pid)
        memory = proc_memory(self.pid)
        if cpu is None or memory is None:
            return None
        wait = proc_runqueue_wait(self.pid) if self.waits else 0.0
        sample = Sample(wall, cpu, memory[0], memory[1], wait)
        self.samples.append(sample)
        return sample

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def cpu_at(self, wall: float, attribute: str = "cpu") -> float:
        """CPU seconds used by ``wall`` (linear between the two samples around it)."""
        samples = self.samples
        if not samples:
            raise ValueError("no samples")
        if wall <= samples[0].wall:
            return float(getattr(samples[0], attribute))
        for before, after in itertools.pairwise(samples):
            if before.wall <= wall <= after.wall:
                span = after.wall - before.wall
                share = (wall - before.wall) / span if span > 0 else 1.0
                low, high = getattr(before, attribute), getattr(after, attribute)
                return float(low + share * (high - low))
        return float(getattr(samples[-1], attribute))

    def cpu_between(self, start: float, end: float) -> float:
        return self.cpu_at(end) - self.cpu_at(start)

    def wait_between(self, start: float, end: float) -> float:
        return self.cpu_at(end, "wait") - self.cpu_at(start, "wait")

    @property
    def peak_hwm(self) -> int:
        return max((s.hwm for s in self.samples), default=0)


class MachineSampler(ProcSampler):
    """The whole machine's busy CPU seconds (``cpu``), sampled like a process."""

    def __init__(self, interval: float = 0.25) -> None:
        super().__init__(0, interval)

    def sample(self) -> Sample | None:
        busy, _total = machine_busy_seconds()
        sample = Sample(time.time(), busy, 0, 0)
        self.samples.append(sample)
        return sample


# --- Prometheus text -----------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Histogram:
    buckets: list[tuple[float, float]]  # (upper bound, cumulative count), +Inf last
    count: float
    sum: float

    def quantile(self, q: float) -> float:
        """As PromQL's histogram_quantile: linear within the bucket that holds the rank."""
        if self.count <= 0:
            return math.nan
        rank = q * self.count
        lower, below = 0.0, 0.0
        for upper, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(upper):
                    return lower  # the highest finite bound: all PromQL can say
                inside = cumulative - below
                share = (rank - below) / inside if inside > 0 else 1.0
                return lower + (upper - lower) * share
            lower, below = upper, cumulative
        return lower

    def fraction_at_most(self, bound: float) -> float:
        """Share of observations <= ``bound`` (``bound`` must be a bucket boundary)."""
        for upper, cumulative in self.buckets:
            if math.isclose(upper, bound):
                return cumulative / self.count if self.count else math.nan
        raise ValueError(f"{bound} is not a bucket boundary")


class Metrics:
    """One scrape of /metrics."""

    def __init__(self, text: str, wall: float | None = None) -> None:
        self.wall = time.time() if wall is None else wall
        self.samples: list[tuple[str, dict[str, str], float]] = []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            match = _SAMPLE.match(line)
            if match is None:
                continue
            name, _, labels, value = match.groups()
            self.samples.append((name, dict(_LABEL.findall(labels or "")), float(value)))

    def total(self, name: str, **labels: str) -> float:
        return sum(
            value
            for n, lab, value in self.samples
            if n == name and all(lab.get(k) == v for k, v in labels.items())
        )

    def histogram(self, name: str) -> Histogram:
        buckets: dict[float, float] = {}
        for n, labels, value in self.samples:
            if n == f"{name}_bucket":
                upper = float(labels["le"])
                buckets[upper] = buckets.get(upper, 0.0) + value
        return Histogram(
            sorted(buckets.items()), self.total(f"{name}_count"), self.total(f"{name}_sum")
        )


PREFIX = "semarize_connector_"


def finished(metrics: Metrics) -> int:
    return int(metrics.total(PREFIX + "records_finished_total"))


# --- the simulator -------------------------------------------------------------------------


class Simulator:
    """``semarize-connector simulate --port 0`` as a subprocess, controlled over HTTP."""

    def __init__(self, workdir: Path, *args: str) -> None:
        self.log_path = workdir / "simulator.log"
        self._log = self.log_path.open("w")
        self.command = [connector_cli(), "simulate", "--port", "0", *args]
        self.proc = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.url = self._wait_listening()

    def _wait_listening(self, timeout: float = 30) -> str:
        lines: list[str] = []

        def read() -> None:
            assert self.proc.stdout is not None
            lines.append(self.proc.stdout.readline())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        match = _LISTENING.search(lines[0]) if lines else None
        if match is None:
            self.stop()
            raise RuntimeError(
                f"the simulator did not start ({lines!r}): {self.log_path.read_text()[-2000:]}"
            )
        return match.group(1)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = http_json(self.url + "/_sim/stats")
        return result

    def faults(self, **settings: Any) -> dict[str, Any]:
        result: dict[str, Any] = http_json(self.url + "/_sim/faults", settings)
        return result

    def reset(self) -> None:
        http_json(self.url + "/_sim/reset", {})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def request_counts(stats: dict[str, Any]) -> dict[str, dict[str, int]]:
    """``requests`` of /_sim/stats: {route: {status: count}}."""
    return {route: dict(statuses) for route, statuses in stats.get("requests", {}).items()}


# --- the connector -------------------------------------------------------------------------


@dataclass
class ConnectorConfig:
    bootstrap: str
    group: str
    input_topic: str
    output_topic: str
    dlq_topic: str
    api_url: str
    ops_port: int
    pipeline: dict[str, Any] = field(default_factory=dict)
    semarize: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "kafka": {
                "bootstrap_servers": self.bootstrap,
                "group_id": self.group,
                "input_topics": [self.input_topic],
                "output_topic": self.output_topic,
                "dlq_topic": self.dlq_topic,
            },
            "semarize": {
                "api_url": self.api_url,
                "api_key": "${SEMARIZE_API_KEY}",
                "kit_code": KIT_CODE,
                **self.semarize,
            },
            "pipeline": dict(self.pipeline),
            "ops": {"port": self.ops_port},
        }
        for section, values in self.extra.items():
            doc.setdefault(section, {}).update(values)
        return doc


class ConnectorProcess:
    """``semarize-connector run --config FILE --stop-when-idle N`` with its samplers."""

    def __init__(
        self,
        config: ConnectorConfig,
        workdir: Path,
        name: str,
        stop_when_idle: float,
        sample_interval: float = 0.1,
    ) -> None:
        self.config = config
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config.document(), sort_keys=False))
        self.log_path = workdir / f"{name}.log"
        self.args = [
            connector_cli(),
            "run",
            "--config",
            str(self.config_path),
            "--stop-when-idle",
            f"{stop_when_idle:g}",
        ]
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("KAFKA_", "CONNECTOR_", "SEMARIZE_"))
        }
        env.update({"SEMARIZE_API_KEY": API_KEY, "POD_NAME": name, "PYTHONUNBUFFERED": "1"})
        self._log = self.log_path.open("wb")
        self.started_wall = time.time()
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.sampler = ProcSampler(self.proc.pid, sample_interval, waits=True)
        self.base = f"http://127.0.0.1:{config.ops_port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def scrape(self, timeout: float = 5) -> Metrics | None:
        try:
            with urllib.request.urlopen(self.base + "/metrics", timeout=timeout) as response:
                return Metrics(response.read().decode())
        except (OSError, urllib.error.URLError):
            return None

    def readiness(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.base + "/readyz", timeout=2) as response:
                result: dict[str, Any] = json.loads(response.read())
                return result
        except urllib.error.HTTPError as exc:
            body: dict[str, Any] = json.loads(exc.read() or b"{}")
            return body
        except (OSError, ValueError):
            return None

    def wait_assigned(self, partitions: int, timeout: float = 60) -> None:
        """Until /readyz shows ``partitions`` assigned partitions."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"the connector exited early:\n{self.tail()}")
            ready = self.readiness()  # not "ok" yet: it waits for the first broker stats
            if ready and ready.get("assigned_partitions") == partitions:
                return
            time.sleep(0.1)
        raise RuntimeError(f"the connector was not assigned its partitions:\n{self.tail()}")

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(
                f"the connector did not stop within {timeout:g} s:\n{self.tail()}"
            ) from None
        self.sampler.stop()
        self._log.close()
        return code

    def terminate(self) -> None:
        """SIGTERM: a graceful stop (drain, commit, close)."""
        if self.proc.poll() is None:
            self.proc.terminate()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.sampler.stop()
        if not self._log.closed:
            self._log.close()

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def watch(
        self,
        expected: int,
        progress: Callable[[Metrics, float], None],
        timeout: float,
        every: float = 1.0,
    ) -> Metrics:
        """Scrape /metrics every ``every`` s until ``expected`` records are finished (the last
        scrape is returned: every histogram then holds every record), calling ``progress``.
        Raises if the process exits first or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            metrics = self.scrape()
            if metrics is not None:
                progress(metrics, time.time() - self.started_wall)
                if finished(metrics) >= expected:
                    return metrics
            if not self.running():
                raise RuntimeError(
                    f"the connector exited (code {self.proc.returncode}) before finishing "
                    f"{expected} records:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"fewer than {expected} records finished within {timeout:g} s:\n{self.tail()}"
                )
            time.sleep(every)
