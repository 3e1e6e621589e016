"""RESULTS.md and results.json from the scenario results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.core import Figure, ScenarioResult

METHOD = """\
- **Set-up.** One private Kafka broker (`tests/kafka_broker.py`, KRaft, one JVM) and one
  simulator process (`semarize-connector simulate --port 0`) run for the whole benchmark, on
  the same machine as the connector. Each run gets fresh topics of 12 partitions (the output
  topic with `message.timestamp.type=LogAppendTime`), a fresh consumer group, the simulator
  reset (`POST /_sim/reset`) and configured (`POST /_sim/faults`), then
  `semarize-connector run --config <generated YAML> --stop-when-idle N` as a subprocess with
  the connector's defaults except what the scenario sets. Events are produced before the
  connector starts, except in the notice-to-output scenario (paced while it runs).
- **Window.** From the first create the connector sent (`submitted_at` of the output
  records) to the broker's append time of the last output record. Throughput = events /
  window.
- **CPU** of the connector process (every thread: utime + stime of `/proc/<pid>/stat`,
  sampled every 0.1 s and interpolated at the window's ends); memory is `VmRSS` / `VmHWM` of
  `/proc/<pid>/status`. The simulator is sampled the same way and shown beside it: on a small
  machine it competes with the connector for the same cores.
- **Requests** come from the simulator's `/_sim/stats` (reset before every run); the
  notice-to-output latency from the connector's `semarize_connector_notice_to_output_seconds`
  histogram (quantiles interpolated within buckets as PromQL's `histogram_quantile`; the
  targets 50 ms and 250 ms are bucket bounds, so pass/fail is exact), with a per-record
  cross-check (broker append time - `completed_at`). The completion-notice delay is per
  record: `completed_at - submitted_at - duration_ms`.
- **Honesty.** Every run must produce one output per event (distinct event ids, no dead
  letters, exit code 0) or the benchmark fails loudly and exits 1. Figures are medians over
  the repetitions with [min - max]; quick mode runs one repetition of smaller workloads.
"""


def _fmt(value: float, digits: int) -> str:
    if value != value:  # NaN
        return "n/a"
    return f"{value:,.{digits}f}"


def measured(figure: Figure) -> str:
    text = f"{_fmt(figure.median, figure.digits)} {figure.unit}".strip()
    if len(figure.values) > 1:
        low, high = min(figure.values), max(figure.values)
        text += f" [{_fmt(low, figure.digits)} - {_fmt(high, figure.digits)}]"
    return text


def verdict(figure: Figure) -> str:
    if figure.passed is None:
        return ""
    return "**PASS**" if figure.passed else "**FAIL**"


def machine_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": "unknown",
        "memory_total_mb": None,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                facts["memory_total_mb"] = int(line.split()[1]) // 1024
    except OSError:
        pass
    import aiohttp
    import confluent_kafka

    facts["confluent_kafka"] = confluent_kafka.version()[0]
    facts["librdkafka"] = confluent_kafka.libversion()[0]
    facts["aiohttp"] = aiohttp.__version__
    from tests.kafka_broker import LIBS_DIR

    jars = sorted(LIBS_DIR.glob("kafka_2.13-*.jar"))
    facts["kafka_broker"] = (
        jars[0].name.removeprefix("kafka_2.13-").removesuffix(".jar") if jars else "?"
    )
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
        facts["java"] = (java.stderr or java.stdout).splitlines()[0]
    except (OSError, IndexError):
        facts["java"] = "?"
    facts["connector_commit"] = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--", "connector")
    facts["connector_tree"] = "modified (uncommitted changes in connector/)" if dirty else "clean"
    return facts


def _git(*args: str) -> str:
    try:
        result = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    except OSError:
        return "?"
    return result.stdout.strip()


def load_average() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def write_json(path: Path, meta: dict[str, Any], results: list[ScenarioResult]) -> None:
    document = {**meta, "scenarios": [r.as_dict() for r in results]}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")


def write_markdown(
    path: Path,
    meta: dict[str, Any],
    results: list[ScenarioResult],
    *,
    chart: str | None,
    profile_md: str,
    findings: list[str],
    analysis: str = "",
) -> None:
    facts = meta["machine"]
    reps = meta["repetitions"]
    lines = ["# Benchmark results", ""]
    lines += [
        f"Command: `{meta['make_target']}`, which runs `{meta['command']}` (repository root, "
        "the venv's `bin` first on `PATH`).",
        "",
        f"Mode: **{meta['mode']}**: "
        + (
            "1 repetition per figure, smaller workloads - a development check, not a result."
            if reps == 1
            else f"every figure is the median of {reps} repetitions, [min - max] beside it."
        ),
        f"Started {meta['started']} UTC, took {meta['seconds'] / 60:.1f} min. "
        f"Load average before / after: {meta['load_before']} / {meta['load_after']}.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPUs (nproc) | {facts['nproc']} |",
        f"| CPU model | {facts['cpu_model']} |",
        f"| memory | {facts['memory_total_mb']:,} MB |",
        f"| kernel | {facts['kernel']} |",
        f"| Python | {facts['python']} |",
        f"| confluent-kafka / librdkafka | {facts['confluent_kafka']} / {facts['librdkafka']} |",
        f"| aiohttp | {facts['aiohttp']} |",
        f"| Kafka broker | {facts['kafka_broker']} ({facts['java']}) |",
        f"| connector | commit {facts['connector_commit']}, {facts['connector_tree']} |",
        "",
        "The broker, the simulator and the connector share these CPUs; the figures below are "
        "the connector process's.",
        "",
        "## Targets",
        "",
        "| scenario | figure | measured | target | result |",
        "|---|---|---|---|---|",
    ]
    passed = failed = 0
    for result in results:
        if result.error:
            lines.append(
                f"| {result.name} | **did not complete** | {result.error[:200]} | | **FAIL** |"
            )
            failed += 1
            continue
        for figure in result.figures:
            if figure.target is None:
                continue
            ok = figure.passed
            passed += bool(ok)
            failed += not ok
            lines.append(
                f"| {result.name} | {figure.name} | {measured(figure)} | {figure.target.text} "
                f"| {verdict(figure)} |"
            )
    lines += ["", f"{passed} targets met, {failed} missed.", ""]
    if findings:
        lines += ["## What stands in the way (measured)", ""]
        lines += [f"- {f}" for f in findings]
        lines.append("")
    if analysis:
        lines += [analysis.strip(), ""]
    if chart:
        lines += [
            "## Throughput against runs in flight",
            "",
            f"![throughput against runs in flight]({chart})",
            "",
            "Red: measured throughput of the latency-bound scenario; blue: the physical limit "
            "C / L (no connector can do better); dashed: the 95 % target.",
            "",
        ]
    lines += ["## Scenarios", ""]
    for result in results:
        lines += [f"### {result.name}: {result.title}", ""]
        params = ", ".join(f"{k}: {_plain(v)}" for k, v in result.params.items())
        lines += [f"Parameters: {params}.", ""]
        if result.error:
            lines += [f"**Did not complete:** {result.error}", ""]
            continue
        lines += ["| figure | measured | target | result |", "|---|---|---|---|"]
        for figure in result.figures:
            target = figure.target.text if figure.target else ""
            lines.append(f"| {figure.name} | {measured(figure)} | {target} | {verdict(figure)} |")
        lines += [""]
        lines += [f"{note}" for note in result.notes]
        lines += [f"Took {result.seconds:.0f} s.", ""]
    lines += ["## Profile of the overhead scenario", "", profile_md, ""]
    lines += ["## Method", "", METHOD]
    lines += [
        "## The chart",
        "",
        "Written by `bench/chart.py` with the standard library only (zlib + struct, a 5x7 "
        "pixel font): matplotlib is not installed here and would be the benchmark's only "
        "third-party dependency (with numpy, pillow, ...) for a single line chart, fetched "
        "from the network by `make bench`.",
        "",
        "Raw repetitions: [results.json](results.json).",
        "",
    ]
    path.write_text("\n".join(lines))


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_plain(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:,}" if isinstance(value, int) else f"{value:g}"
    return str(value)
