"""One measured connector run (``Bench.execute``) and the figures built from repetitions.

A run: fresh topics (input, output with broker-side LogAppendTime, dead letters), the
simulator reset and configured, the events produced (before the start, or paced while it
runs), ``semarize-connector run --stop-when-idle`` started, its /metrics scraped until every
event is finished, its exit awaited, then the output topic read back. Every figure comes
from those measurements: output records (``submitted_at``, ``completed_at``, ``duration_ms``
and the broker's append time), /proc samples of the connector and the simulator, the
connector's last /metrics scrape, and the simulator's /_sim/stats.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka.admin import NewTopic

from bench.harness import (
    PREFIX,
    ConnectorConfig,
    ConnectorProcess,
    MachineSampler,
    Metrics,
    ProcSampler,
    Simulator,
    finished,
)
from bench.workload import PacedProducer, event_values
from tests.kafka_admin import admin_client, consume_all, end_offsets, produce, topic_partitions
from tests.kafka_broker import free_port

PARTITIONS = 12
BIG_TOPIC = {"max.message.bytes": str(8 * 1024 * 1024)}
SIM_DEFAULTS: dict[str, Any] = {
    "run_duration_ms": "200:2000",
    "retry_after": 1,
    "rate_limit": 0,
    "sync_wait_ms": 30000,
}
RUN_ROUTES = ("POST /v1/runs", "GET /v1/runs/{runId}")


def create_topics(bootstrap: str, topics: list[NewTopic], timeout: float = 30) -> None:
    """Create ``topics`` in one request and wait until each shows every partition."""
    futures = admin_client(bootstrap).create_topics(
        topics, operation_timeout=timeout, request_timeout=timeout
    )
    for future in futures.values():
        future.result()
    deadline = time.monotonic() + timeout
    for topic in topics:
        while True:
            try:
                if len(topic_partitions(bootstrap, topic.topic)) == topic.num_partitions:
                    break
            except Exception:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic.topic} not in metadata")
            time.sleep(0.05)


# Called after every scrape with the connector's sampler and ``release``, which produces the
# events held back by ``staged`` (see Bench.execute).
OnMetrics = Callable[[Metrics, ProcSampler, Callable[[], None]], None]
_BULK = {"linger.ms": 20, "batch.size": 1_000_000}


class ShortfallError(RuntimeError):
    """A run produced fewer outputs than events: its figures would be meaningless."""


def log(message: str) -> None:
    elapsed = time.monotonic() - _START
    print(f"[{elapsed:7.1f}s] {message}", flush=True)


_START = time.monotonic()


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class Output:
    event_id: str
    submitted: float  # the connector's clock when it sent the create that succeeded
    completed: float  # the connector's clock when it noticed the terminal run
    appended: float  # the broker's LogAppendTime of the output record
    duration: float | None  # the run's duration as the API reported it


@dataclass
class Execution:
    label: str
    events: int
    outputs: list[Output]
    distinct: int
    dead_letters: int
    metrics: Metrics  # the last scrape, taken once every event was finished
    connector: ProcSampler
    simulator: ProcSampler
    others: dict[str, ProcSampler]  # the broker and this process
    machine: MachineSampler
    sim_stats: dict[str, Any]
    exit_code: int
    gauges: list[tuple[float, float]] = field(default_factory=list)  # (wall, in flight)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def start(self) -> float:
        """First create sent (about when the first record was consumed)."""
        return min(o.submitted for o in self.outputs)

    @property
    def end(self) -> float:
        """Last output appended by the broker."""
        return max(o.appended for o in self.outputs)

    @property
    def window(self) -> float:
        return self.end - self.start

    @property
    def throughput(self) -> float:
        return self.events / self.window

    def connector_cpu(self) -> float:
        return self.connector.cpu_between(self.start, self.end)

    def simulator_cpu(self) -> float:
        return self.simulator.cpu_between(self.start, self.end)

    def other_processes_cores(self) -> float:
        """CPU the rest of the machine used during the window: everything but the connector,
        the simulator, the broker and this benchmark process."""
        ours = self.connector_cpu() + self.simulator_cpu()
        ours += sum(s.cpu_between(self.start, self.end) for s in self.others.values())
        return (self.machine.cpu_between(self.start, self.end) - ours) / self.window

    def requests(self, route: str, status: str | None = None) -> int:
        statuses = self.sim_stats.get("requests", {}).get(route, {})
        if status is None:
            return int(sum(statuses.values()))
        return int(statuses.get(status, 0))

    def mean_in_flight(self) -> float:
        inside = [v for wall, v in self.gauges if self.start <= wall <= self.end]
        return statistics.fmean(inside) if inside else math.nan

    def common(self) -> dict[str, Any]:
        """Measurements every run reports (results.json keeps them all)."""
        return {
            "events": self.events,
            "outputs": len(self.outputs),
            "distinct_outputs": self.distinct,
            "dead_letters": self.dead_letters,
            "window_seconds": round(self.window, 3),
            "events_per_second": round(self.throughput, 2),
            "connector_cpu_seconds": round(self.connector_cpu(), 3),
            "connector_cpu_cores": round(self.connector_cpu() / self.window, 3),
            "connector_cpu_total_seconds": round(self.connector.samples[-1].cpu, 3),
            "connector_peak_rss_bytes": self.connector.peak_hwm,
            "simulator_cpu_cores": round(self.simulator_cpu() / self.window, 3),
            "broker_cpu_cores": round(
                self.others["broker"].cpu_between(self.start, self.end) / self.window, 3
            ),
            "machine_busy_cores": round(
                self.machine.cpu_between(self.start, self.end) / self.window, 3
            ),
            "other_processes_cores": round(self.other_processes_cores(), 3),
            "connector_runqueue_wait_share": round(
                self.connector.wait_between(self.start, self.end) / self.window, 3
            ),
            "runs_created_by_simulator": self.sim_stats.get("runs_created"),
            "requests": self.sim_stats.get("requests"),
            "connector_exit_code": self.exit_code,
            **self.extra,
        }


class Bench:
    def __init__(
        self,
        bootstrap: str,
        broker_pid: int,
        simulator: Simulator,
        workdir: Path,
        *,
        quick: bool,
        stop_when_idle: float,
    ) -> None:
        self.bootstrap = bootstrap
        self.broker_pid = broker_pid
        self.sim = simulator
        self.workdir = workdir
        self.quick = quick
        self.stop_when_idle = stop_when_idle
        self.reps = 1 if quick else 3
        self._runs = 0

    def execute(
        self,
        label: str,
        *,
        events: int,
        transcript_bytes: int = 600,
        max_in_flight: int,
        semarize: dict[str, Any] | None = None,
        extra_config: dict[str, dict[str, Any]] | None = None,
        sim: dict[str, Any] | None = None,
        paced_rate: float | None = None,
        expected_seconds: float = 30,
        on_metrics: OnMetrics | None = None,
        staged: int | None = None,
        scrape_every: float = 1.0,
        profile: Path | None = None,
    ) -> Execution:
        self._runs += 1
        name = f"b{self._runs:03d}-{os.urandom(3).hex()}"
        topics = {kind: f"bench-{name}.{kind}" for kind in ("in", "out", "dlq")}
        configs = {
            "in": BIG_TOPIC,
            "out": {**BIG_TOPIC, "message.timestamp.type": "LogAppendTime"},
            "dlq": BIG_TOPIC,
        }
        create_topics(
            self.bootstrap,
            [NewTopic(topics[k], PARTITIONS, 1, config=configs[k]) for k in topics],
        )
        try:
            return self._execute(
                label,
                name,
                topics,
                events=events,
                transcript_bytes=transcript_bytes,
                max_in_flight=max_in_flight,
                semarize=semarize or {},
                extra_config=extra_config or {},
                sim=sim or {},
                paced_rate=paced_rate,
                expected_seconds=expected_seconds,
                on_metrics=on_metrics,
                staged=staged,
                scrape_every=scrape_every,
                profile=profile,
            )
        finally:
            futures = admin_client(self.bootstrap).delete_topics(
                list(topics.values()), operation_timeout=30, request_timeout=30
            )
            for future in futures.values():
                future.result()

    def _execute(
        self,
        label: str,
        name: str,
        topics: dict[str, str],
        *,
        events: int,
        transcript_bytes: int,
        max_in_flight: int,
        semarize: dict[str, Any],
        extra_config: dict[str, dict[str, Any]],
        sim: dict[str, Any],
        paced_rate: float | None,
        expected_seconds: float,
        on_metrics: OnMetrics | None,
        staged: int | None,
        scrape_every: float,
        profile: Path | None,
    ) -> Execution:
        phases = {"begin": time.monotonic()}
        self.sim.reset()
        self.sim.faults(**{**SIM_DEFAULTS, **sim})
        producer: PacedProducer | None = None
        held_back: list[tuple[bytes, bytes]] = []
        late: list[threading.Thread] = []
        if paced_rate is None:
            started = time.monotonic()
            records = list(event_values(name, events, transcript_bytes))
            if staged is not None:
                records, held_back = records[:staged], records[staged:]
            produce(self.bootstrap, topics["in"], records, config=_BULK)
            log(f"{label}: {len(records):,} events produced in {time.monotonic() - started:.1f} s")
        else:
            producer = PacedProducer(
                self.bootstrap, topics["in"], name, events, transcript_bytes, paced_rate
            )
        config = ConnectorConfig(
            bootstrap=self.bootstrap,
            group=f"bench-{name}",
            input_topic=topics["in"],
            output_topic=topics["out"],
            dlq_topic=topics["dlq"],
            api_url=self.sim.url,
            ops_port=free_port(),
            pipeline={"max_in_flight": max_in_flight},
            semarize=semarize,
            extra=extra_config,
        )
        phases["produced"] = time.monotonic()
        process = ConnectorProcess(config, self.workdir, name, self.stop_when_idle)
        sim_sampler = ProcSampler(self.sim.pid, 0.1, waits=True)
        others = {
            "broker": ProcSampler(self.broker_pid, 0.25),
            "bench": ProcSampler(os.getpid(), 0.25),
        }
        machine = MachineSampler()
        spy: subprocess.Popen[bytes] | None = None
        try:
            if profile is not None:
                spy = start_py_spy(process.pid, profile)
            if producer is not None:
                process.wait_assigned(PARTITIONS)
                producer.start()
                log(f"{label}: producing {events:,} events at {paced_rate:g}/s")
            gauges: list[tuple[float, float]] = []
            progress = Progress(label, events, process.sampler, sim_sampler)

            def release() -> None:
                """Produce the held-back events (once), beside the running connector."""
                if held_back and not late:
                    thread = threading.Thread(
                        target=produce,
                        args=(self.bootstrap, topics["in"], held_back),
                        kwargs={"config": _BULK},
                        daemon=True,
                    )
                    late.append(thread)
                    thread.start()
                    log(f"{label}: producing the other {len(held_back):,} events")

            def observe(metrics: Metrics, elapsed: float) -> None:
                gauges.append((metrics.wall, metrics.total(PREFIX + "in_flight_records")))
                if on_metrics is not None:
                    on_metrics(metrics, process.sampler, release)
                progress.show(metrics, elapsed)

            final = process.watch(
                events,
                observe,
                timeout=expected_seconds * 3 + 90,
                every=min(scrape_every, 0.5) if self.quick else scrape_every,
            )
            progress.show(final, time.time() - process.started_wall, force=True)
            phases["all finished"] = time.monotonic()
            # Every output is acknowledged: stop it now rather than wait for --stop-when-idle,
            # which took 5-13 s per run on a busy machine (it waits for quiet commit checks).
            process.terminate()
            exit_code = process.wait(60)
            phases["exited"] = time.monotonic()
        finally:
            process.kill()
            for sampler in (sim_sampler, machine, *others.values()):
                sampler.stop()
            if producer is not None:
                producer.join(120)
            for thread in late:
                thread.join(120)
            if spy is not None:
                stop_py_spy(spy)
        if producer is not None and producer.errors:
            raise RuntimeError(f"{label}: the paced producer failed: {producer.errors[:3]}")
        messages = consume_all(self.bootstrap, topics["out"], timeout=180)
        phases["read back"] = time.monotonic()
        outputs = [_output(m) for m in messages]
        distinct = len({o.event_id for o in outputs})
        dead = sum(end_offsets(self.bootstrap, topics["dlq"]).values())
        execution = Execution(
            label=label,
            events=events,
            outputs=outputs,
            distinct=distinct,
            dead_letters=dead,
            metrics=final,
            connector=process.sampler,
            simulator=sim_sampler,
            others=others,
            machine=machine,
            sim_stats=self.sim.stats(),
            exit_code=exit_code,
            gauges=gauges,
        )
        execution.extra["start_to_first_create_seconds"] = round(
            execution.start - process.started_wall, 3
        )
        execution.extra["graceful_stop_seconds"] = round(
            phases["exited"] - phases["all finished"], 3
        )
        if producer is not None:
            execution.extra["producer_late_seconds"] = round(producer.late_seconds, 3)
        if distinct < events or exit_code != 0:
            raise ShortfallError(
                f"{label}: {distinct:,} distinct outputs for {events:,} events "
                f"({dead:,} dead letters, connector exit code {exit_code}); "
                f"log: {process.log_path}"
            )
        first = min(o.submitted for o in outputs) - process.started_wall
        log(
            f"{label}: {len(outputs):,} outputs in {execution.window:.2f} s "
            f"({execution.throughput:,.0f} events/s), connector exited {exit_code}; "
            f"set-up {phases['produced'] - phases['begin']:.1f} s, start to first create "
            f"{first:.1f} s, stop {phases['exited'] - phases['all finished']:.1f} s, read back "
            f"{phases['read back'] - phases['exited']:.1f} s"
        )
        return execution


def _output(message: dict[str, Any]) -> Output:
    value = orjson.loads(message["value"])
    duration = value.get("duration_ms")
    return Output(
        event_id=value["event_id"],
        submitted=parse_time(value["submitted_at"]),
        completed=parse_time(value["completed_at"]),
        appended=message["timestamp"] / 1000,
        duration=duration / 1000 if isinstance(duration, int | float) else None,
    )


class Progress:
    """A progress line every few seconds while a run is going."""

    def __init__(
        self, label: str, events: int, connector: ProcSampler, simulator: ProcSampler
    ) -> None:
        self.label = label
        self.events = events
        self.connector = connector
        self.simulator = simulator
        self.last_shown = 0.0
        self.last_finished = 0
        self.last_wall = time.time()

    def show(self, metrics: Metrics, elapsed: float, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_shown < 3.0:
            return
        done = finished(metrics)
        rate = (done - self.last_finished) / max(1e-6, metrics.wall - self.last_wall)
        self.last_finished, self.last_wall, self.last_shown = done, metrics.wall, now
        log(
            f"  {self.label}: t={elapsed:5.1f}s {done:,}/{self.events:,} finished"
            f" ({rate:,.0f}/s), in flight {metrics.total(PREFIX + 'in_flight_records'):,.0f},"
            f" CPU connector {_recent_cores(self.connector):.0%}"
            f" simulator {_recent_cores(self.simulator):.0%}"
        )


def _recent_cores(sampler: ProcSampler, span: float = 2.0) -> float:
    samples = sampler.samples
    if len(samples) < 2:
        return 0.0
    last = samples[-1]
    first = next((s for s in samples if s.wall >= last.wall - span), samples[0])
    if last.wall <= first.wall:
        return 0.0
    return (last.cpu - first.cpu) / (last.wall - first.wall)


# --- py-spy ------------------------------------------------------------------------------


def py_spy() -> str:
    return str(Path(sys.executable).parent / "py-spy")


def start_py_spy(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """``py-spy record --pid PID --nonblocking --format raw`` until the process exits."""
    output.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            py_spy(),
            "record",
            "--pid",
            str(pid),
            "--nonblocking",
            "--rate",
            "250",
            "--format",
            "raw",
            "--function",
            "--threads",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_py_spy(spy: subprocess.Popen[bytes]) -> None:
    try:
        spy.wait(30)  # it writes its output and exits once the process it samples is gone
    except subprocess.TimeoutExpired:
        spy.terminate()
        spy.wait(10)


# --- figures -------------------------------------------------------------------------------


@dataclass
class Target:
    op: str  # "<=", ">=" or "<"
    value: float
    text: str  # how the report states it, e.g. ">= 95 % of C / L = 47.5 events/s"

    def met(self, measured: float) -> bool:
        if math.isnan(measured):
            return False
        if self.op == "<=":
            return measured <= self.value
        if self.op == ">=":
            return measured >= self.value
        if self.op == "<":
            return measured < self.value
        raise ValueError(self.op)


@dataclass
class Figure:
    name: str
    unit: str
    values: list[float]  # one per repetition
    target: Target | None = None
    digits: int = 1

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    @property
    def passed(self) -> bool | None:
        return None if self.target is None else self.target.met(self.median)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "median": self.median,
            "min": min(self.values) if self.values else None,
            "max": max(self.values) if self.values else None,
            "repetitions": self.values,
            "target": None
            if self.target is None
            else {"op": self.target.op, "value": self.target.value, "text": self.target.text},
            "passed": self.passed,
            "digits": self.digits,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Figure:
        target = data.get("target")
        return cls(
            data["name"],
            data["unit"],
            list(data["repetitions"]),
            Target(target["op"], target["value"], target["text"]) if target else None,
            digits=data.get("digits", 1),
        )


@dataclass
class ScenarioResult:
    name: str
    title: str
    params: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "params": self.params,
            "figures": [f.as_dict() for f in self.figures],
            "runs": self.runs,
            "notes": self.notes,
            "error": self.error,
            "seconds": round(self.seconds, 1),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScenarioResult:
        return cls(
            data["name"],
            data["title"],
            data["params"],
            [Figure.from_dict(f) for f in data["figures"]],
            data["runs"],
            data["notes"],
            data["error"],
            data["seconds"],
        )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[index]
