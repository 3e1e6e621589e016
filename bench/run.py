"""The benchmark: the connector against its physical limits (issue 6).

    python -m bench.run [--quick] [--only SCENARIO ...] [--no-profile] [--out DIR]

``make bench`` / ``make bench-quick`` call it from the repository root with the venv's bin
first on PATH. It starts a private Kafka broker and the simulator, runs each scenario
(``bench/scenarios.py``), profiles the overhead scenario with py-spy, and writes
``RESULTS.md``, ``results.json``, ``throughput.png`` and ``profiles/`` into ``bench/`` (quick
mode: ``bench/quick/``). Exit 1 when a scenario could not complete, e.g. when it produced
fewer outputs than events.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from bench import profile as profiling
from bench import report, scenarios
from bench.chart import Point, throughput_chart
from bench.core import Bench, Figure, ScenarioResult, ShortfallError, log
from bench.harness import Simulator
from tests import kafka_admin
from tests.kafka_broker import KafkaBroker

BENCH_DIR = Path(__file__).resolve().parent
# A safety net only: the benchmark stops the connector with SIGTERM once every output is
# acknowledged. With a short idle time the connector's idle check (committed offsets and a
# watermark query per partition on the consumer thread, 5 s timeouts) ran right at the end
# and sometimes held the consumer thread ~5 s, delaying the stop.
STOP_WHEN_IDLE = 60
SCENARIOS = (
    "overhead-async",
    "overhead-sync",
    "latency-bound",
    "rate-bound",
    "polling",
    "memory",
    "notice-to-output",
    "profile",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 repetition, smaller workloads (under 2 minutes)"
    )
    parser.add_argument(
        "--only", action="append", choices=SCENARIOS, metavar="SCENARIO", help="repeatable"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument("--out", type=Path, help="output folder (default bench/, or bench/quick/)")
    parser.add_argument("--keep-work", action="store_true", help="keep logs and broker data")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="render RESULTS.md and the chart again from results.json; measure nothing",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.report_only:
        return report_only(args.out or (BENCH_DIR / "quick" if args.quick else BENCH_DIR))
    selected = [
        s
        for s in SCENARIOS
        if (not args.only or s in args.only) and not (s == "profile" and args.no_profile)
    ]
    out = args.out or (BENCH_DIR / "quick" if args.quick else BENCH_DIR)
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="semarize-bench-"))
    command = "python -m bench.run" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    started_at = datetime.now(UTC)
    started = time.monotonic()
    load_before = report.load_average()
    mode = "quick" if args.quick else "full"
    log(f"benchmark ({mode}): {', '.join(selected)}; work dir {workdir}")

    broker = KafkaBroker(workdir / "kafka")
    broker.start()
    _quiet_admin_client(broker.bootstrap_servers)
    log(
        f"Kafka broker on {broker.bootstrap_servers} (started in {broker.last_start_seconds:.1f} s)"
    )
    simulator = Simulator(workdir, "--seed", "6")
    log(f"simulator at {simulator.url}")
    bench = Bench(
        broker.bootstrap_servers,
        broker.pid or 0,
        simulator,
        workdir,
        quick=args.quick,
        stop_when_idle=STOP_WHEN_IDLE,
    )
    results: list[ScenarioResult] = []
    # Quick mode profiles the measured overhead run itself instead of a run of its own.
    quick_profile = out / "profiles" / "overhead-async.collapsed.txt" if args.quick else None
    profile_md = "Not run."
    profile_lines: list[str] = []
    broken = False
    try:
        runners: dict[str, Callable[[], ScenarioResult]] = {
            "overhead-async": lambda: scenarios.overhead(
                bench, "async", quick_profile if "profile" in selected else None
            ),
            "overhead-sync": lambda: scenarios.overhead(bench, "sync"),
            "latency-bound": lambda: scenarios.latency_bound(bench),
            "rate-bound": lambda: scenarios.rate_bound(bench),
            "polling": lambda: scenarios.polling(bench),
            "memory": lambda: scenarios.memory(bench),
            "notice-to-output": lambda: scenarios.notice_to_output(bench),
        }
        for name in selected:
            if name == "profile":
                continue
            log(f"=== {name} ===")
            begun = time.monotonic()
            try:
                result = runners[name]()
            except ShortfallError as exc:
                broken = True
                result = ScenarioResult(name, name, {}, error=f"SHORTFALL: {exc}")
                _loud(str(exc))
            except Exception as exc:  # a scenario that breaks must not hide the others
                broken = True
                result = ScenarioResult(name, name, {}, error=f"{type(exc).__name__}: {exc}")
                _loud(traceback.format_exc())
            result.seconds = time.monotonic() - begun
            _add_contention(result)
            results.append(result)
            _summarise(result)
        if "profile" in selected:
            log("=== profile (py-spy) ===")
            profile_md, profile_lines = _profile(bench, out, quick_profile)
    finally:
        simulator.stop()
        _drop_kafka_clients(broker.bootstrap_servers)
        broker.stop()

    meta: dict[str, Any] = {
        "make_target": "make bench-quick" if args.quick else "make bench",
        "command": command,
        "mode": mode,
        "repetitions": bench.reps,
        "started": started_at.strftime("%Y-%m-%d %H:%M"),
        "seconds": time.monotonic() - started,
        "load_before": load_before,
        "load_after": report.load_average(),
        "machine": report.machine_facts(),
        "profile": profile_lines,
        "profile_markdown": profile_md,
    }
    report.write_json(out / "results.json", meta, results)
    render(out, meta, results)
    if args.keep_work or broken:
        log(f"logs and broker data kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if broken:
        _loud("the benchmark is INCOMPLETE: see the errors above and in RESULTS.md")
        return 1
    return 0


def render(out: Path, meta: dict[str, Any], results: list[ScenarioResult]) -> None:
    """RESULTS.md and the chart from the measurements (also for --report-only)."""
    quick = meta["mode"] == "quick"
    chart = _chart(results, out, meta["repetitions"], meta["mode"])
    report.write_markdown(
        out / "RESULTS.md",
        meta,
        results,
        chart=chart,
        profile_md=meta.get("profile_markdown", "Not recorded."),
        findings=diagnose(results, meta.get("profile") or []),
        analysis=_analysis(quick),
    )
    log(
        f"wrote {out / 'RESULTS.md'}, {out / 'results.json'}"
        + (f", {out / chart}" if chart else "")
    )
    for line in _table(results):
        print(line, flush=True)


def report_only(out: Path) -> int:
    """Render RESULTS.md and the chart again from results.json (e.g. after ANALYSIS.md
    changed); nothing is measured."""
    data = json.loads((out / "results.json").read_text())
    results = [ScenarioResult.from_dict(s) for s in data.pop("scenarios")]
    render(out, data, results)
    return 0


def _analysis(quick: bool) -> str:
    """The hand-written reading of the last full run (bench/ANALYSIS.md), for full runs."""
    path = BENCH_DIR / "ANALYSIS.md"
    if quick or not path.exists():
        return ""
    return path.read_text()


def _add_contention(result: ScenarioResult) -> None:
    """Two figures that say how busy the machine was: CPU used by processes that are not
    part of the benchmark, and time the connector's threads spent waiting for a CPU."""
    runs = [r for r in result.runs if "other_processes_cores" in r]
    if not runs:
        return
    result.figures += [
        Figure(
            "other processes' CPU meanwhile (not the benchmark's)",
            "cores",
            [r["other_processes_cores"] for r in runs],
            digits=2,
        ),
        Figure(
            "connector threads runnable but waiting for a CPU",
            "s per s",
            [r["connector_runqueue_wait_share"] for r in runs],
            digits=2,
        ),
    ]


def _quiet_admin_client(bootstrap: str) -> None:
    """The admin client tests/kafka_admin.py keeps per cluster, made before it would be, with
    librdkafka's notices off: it logged every deleted topic ("partition count changed")."""
    kafka_admin._ADMINS[bootstrap] = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})


def _drop_kafka_clients(bootstrap: str) -> None:
    """Destroy the admin client tests/kafka_admin.py keeps per cluster, so it does not log
    connection failures once the broker is gone (nothing is queued in it by now)."""
    kafka_admin.close_clients()
    kafka_admin._ADMINS.pop(bootstrap, None)
    gc.collect()


def _loud(message: str) -> None:
    bar = "!" * 78
    print(f"\n{bar}\n{message}\n{bar}\n", file=sys.stderr, flush=True)


def _summarise(result: ScenarioResult) -> None:
    if result.error:
        log(f"{result.name}: DID NOT COMPLETE: {result.error[:300]}")
        return
    for figure in result.figures:
        if figure.target is not None:
            verdict = "PASS" if figure.passed else "FAIL"
            log(
                f"{result.name}: {figure.name} = {report.measured(figure)} "
                f"(target {figure.target.text}) {verdict}"
            )


def _table(results: list[ScenarioResult]) -> list[str]:
    lines = ["", "scenario / figure / measured / target / result"]
    for result in results:
        if result.error:
            lines.append(f"{result.name}: did not complete")
            continue
        for figure in result.figures:
            if figure.target is not None:
                lines.append(
                    f"{result.name} / {figure.name} / {report.measured(figure)} / "
                    f"{figure.target.text} / {'PASS' if figure.passed else 'FAIL'}"
                )
    return lines


def _profile(bench: Bench, out: Path, recorded: Path | None) -> tuple[str, list[str]]:
    profiles = out / "profiles"
    parts: list[str] = []
    lines: list[str] = []
    modes = ("async",) if recorded is not None else ("async", "sync")
    for mode in modes:
        if recorded is not None:
            if not recorded.exists():
                parts.append("The overhead-async run did not leave a profile.")
                continue
            title = "Overhead scenario, async mode (the measured quick run)"
            raw = profiling.compress(recorded)
            prof = profiling.parse(raw)
            summary = profiling.summary_markdown(prof, title)
            (profiles / "overhead-async.md").write_text(summary)
            line = f"{mode}: {profiling.dominant(prof)}"
            log(f"profile {line}")
            lines.append(line)
            parts.append(summary + f"\nRaw stacks: [profiles/{raw.name}](profiles/{raw.name}).\n")
            continue
        try:
            result, raw = scenarios.profile(bench, profiles, mode)
        except Exception as exc:
            _loud(traceback.format_exc())
            parts.append(f"Profiling ({mode}) failed: {type(exc).__name__}: {exc}")
            continue
        raw = profiling.compress(raw)
        prof = profiling.parse(raw)
        title = f"Overhead scenario, {mode} mode ({result.params['events']:,} events)"
        summary = profiling.summary_markdown(prof, title)
        (profiles / f"overhead-{mode}.md").write_text(summary)
        line = f"{mode}: {profiling.dominant(prof)}"
        log(f"profile {line}")
        lines.append(line)
        run = result.runs[0]
        parts.append(
            summary + f"\nThis run: {run['events_per_second']:,.0f} events/s with py-spy attached. "
            f"Raw stacks: [profiles/{raw.name}](profiles/{raw.name}) (py-spy's raw format, "
            "gzip-compressed; `zcat | flamegraph.pl` or speedscope read it).\n"
        )
    dominant = "".join(f"- {line}\n" for line in lines)
    text = (f"What dominates:\n\n{dominant}\n" if dominant else "") + "\n".join(parts)
    return text, lines


def _chart(results: list[ScenarioResult], out: Path, reps: int, mode: str) -> str | None:
    bound = next((r for r in results if r.name == "latency-bound" and not r.error), None)
    if bound is None:
        return None
    points = []
    for figure in bound.figures:
        if figure.name.startswith("throughput at C = "):
            c = float(figure.name.removeprefix("throughput at C = "))
            points.append(Point(c, figure.median, min(figure.values), max(figure.values)))
    if not points:
        return None
    name = "throughput.png"
    note = "QUICK MODE: 1 REPETITION" if mode == "quick" else ""
    throughput_chart(out / name, points, float(bound.params["run_seconds"]), reps, note)
    return name


def diagnose(results: list[ScenarioResult], profile_lines: list[str]) -> list[str]:
    """For each missed target, the measurements that say where the time or memory went."""
    found: list[str] = []
    for result in results:
        if result.error:
            continue
        missed = [f for f in result.figures if f.target is not None and not f.passed]
        if not missed:
            continue
        runs = result.runs
        names = ", ".join(f"{f.name} {report.measured(f)}" for f in missed)
        if result.name.startswith("overhead"):
            cores = _median([r["connector_cpu_cores"] for r in runs])
            sim = _median([r["simulator_cpu_cores"] for r in runs])
            mode = result.params.get("mode", "")
            line = next((p for p in profile_lines if p.startswith(f"{mode}:")), "not run")
            found.append(
                f"{result.name}: {names}. The connector used {cores:.2f} cores and the "
                f"simulator {sim:.2f} meanwhile. Profile: {line}."
            )
        elif result.name == "latency-bound":
            for figure in missed:
                c = int(float(figure.name.rsplit("= ", 1)[1]))
                mine = [r for r in runs if r["in_flight"] == c]
                found.append(
                    f"latency-bound C = {c}: {report.measured(figure)} = "
                    f"{100 * _median([r['share_of_ideal'] for r in mine]):.0f} % of C / L. "
                    f"Runs at the API (create sent to completion noticed) averaged "
                    f"{_median([r['mean_runs_at_api'] for r in mine]):,.0f} of {c} slots; "
                    f"mean create-to-output "
                    f"{_median([r['mean_create_to_output_seconds'] for r in mine]):.3f} s for "
                    f"{result.params['run_seconds']:g} s runs (mean notice delay "
                    f"{_median([r['mean_notice_delay_seconds'] for r in mine]):.3f} s); "
                    f"CPU: connector {_median([r['connector_cpu_cores'] for r in mine]):.2f}, "
                    f"simulator {_median([r['simulator_cpu_cores'] for r in mine]):.2f} cores. "
                    "By Little's law throughput = runs at the API / L: a slot spends the "
                    "rest of its time before the create (consume, decode, create latency) or "
                    "after the notice (write, ack, commit, release, refetch)."
                )
        elif result.name == "rate-bound":
            found.append(
                f"rate-bound: {names}; "
                f"{_median([r['run_requests_429'] for r in runs]):,.0f} 429s of "
                f"{_median([r['run_requests'] for r in runs]):,.0f} run requests; the connector "
                f"was configured with rate_limit.requests_per_second = "
                f"{result.params['provider_limit_rps']:g}."
            )
        else:
            found.append(f"{result.name}: {names}.")
    return found


def _median(values: list[float]) -> float:
    clean = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(clean) if clean else math.nan


if __name__ == "__main__":
    raise SystemExit(main())
