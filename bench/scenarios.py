"""The scenarios of issue 6, each a function ``(bench) -> ScenarioResult``.

Every limit a target refers to (C / L, R, the run durations) is a parameter of the scenario
and goes into the report with it; every measured figure comes from ``Execution``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from bench.core import (
    PREFIX,
    RUN_ROUTES,
    Bench,
    Execution,
    Figure,
    ScenarioResult,
    Target,
    log,
    percentile,
)
from bench.harness import Metrics, ProcSampler

MB = 1024 * 1024


def _reps(bench: Bench, label: str, run: Callable[[str], Execution]) -> list[Execution]:
    executions = []
    for rep in range(bench.reps):
        executions.append(run(f"{label} rep {rep + 1}/{bench.reps}"))
    return executions


# --- overhead --------------------------------------------------------------------------------


def overhead(bench: Bench, mode: str, profile: Path | None = None) -> ScenarioResult:
    """``profile``: sample the (first) measured run with py-spy into this file; quick mode
    does so to save a run (py-spy --nonblocking reads the process's memory from outside and
    charges it no CPU time, but it competes for the machine's cores)."""
    events = 1_500 if bench.quick else 20_000
    limit_us = 300.0 if mode == "async" else 200.0
    params = {
        "events": events,
        "mode": mode,
        "max_in_flight": 1000,
        "simulator": {"run_duration_ms": 0, "retry_after": 0},
        "transcript_bytes": 600,
    }
    result = ScenarioResult(
        f"overhead-{mode}",
        f"Overhead ({mode} mode): runs finish instantly",
        params,
    )
    executions = []
    for rep in range(bench.reps):
        executions.append(
            bench.execute(
                f"overhead {mode} rep {rep + 1}/{bench.reps}",
                events=events,
                max_in_flight=1000,
                semarize={"mode": mode},
                sim={"run_duration_ms": 0, "retry_after": 0},
                expected_seconds=events / 200,
                profile=profile if rep == 0 else None,
            )
        )
    if profile is not None:
        result.notes.append(
            f"The first repetition ran with py-spy attached (`{profile.name}`, quick mode)."
        )
    for ex in executions:
        run = ex.common()
        run["cpu_us_per_event"] = ex.connector_cpu() / ex.events * 1e6
        run["cpu_us_per_event_whole_process"] = run["connector_cpu_total_seconds"] / ex.events * 1e6
        run["run_requests_per_event"] = sum(ex.requests(r) for r in RUN_ROUTES) / ex.events
        result.runs.append(run)
    result.figures = [
        Figure(
            "connector CPU per event",
            "us",
            [r["cpu_us_per_event"] for r in result.runs],
            Target("<=", limit_us, f"<= {limit_us:g} us"),
            digits=0,
        ),
        Figure("throughput", "events/s", [r["events_per_second"] for r in result.runs], digits=0),
        Figure(
            "CPU per event incl. start-up, idle wait and shutdown",
            "us",
            [r["cpu_us_per_event_whole_process"] for r in result.runs],
            digits=0,
        ),
        Figure(
            "connector CPU while processing",
            "cores",
            [r["connector_cpu_cores"] for r in result.runs],
            digits=2,
        ),
        Figure(
            "simulator CPU meanwhile",
            "cores",
            [r["simulator_cpu_cores"] for r in result.runs],
            digits=2,
        ),
        Figure(
            "API requests per event",
            "",
            [r["run_requests_per_event"] for r in result.runs],
            digits=2,
        ),
    ]
    return result


# --- latency-bound ---------------------------------------------------------------------------


def latency_bound(bench: Bench) -> ScenarioResult:
    run_seconds = 2.0
    waves = 2 if bench.quick else 6
    sizes = (100, 1000, 2000) if bench.quick else (100, 1000, 4000)
    params = {
        "run_seconds": run_seconds,
        "max_in_flight": list(sizes),
        "events": {str(c): c * waves for c in sizes},
        "simulator": {"run_duration_ms": f"{run_seconds * 1000:g}", "retry_after": 1},
    }
    result = ScenarioResult(
        "latency-bound", "Latency-bound: every run takes L = 2 s, C runs in flight", params
    )
    for in_flight in sizes:
        ideal = in_flight / run_seconds
        executions = _reps(
            bench,
            f"latency-bound C={in_flight}",
            lambda label, c=in_flight: bench.execute(
                label,
                events=c * waves,
                max_in_flight=c,
                sim={"run_duration_ms": f"{run_seconds * 1000:g}", "retry_after": 1},
                expected_seconds=waves * run_seconds,
            ),
        )
        runs = []
        for ex in executions:
            run = ex.common()
            service = [o.appended - o.submitted for o in ex.outputs]
            run.update(
                in_flight=in_flight,
                ideal_events_per_second=ideal,
                share_of_ideal=ex.throughput / ideal,
                mean_in_flight=ex.mean_in_flight(),
                mean_runs_at_api=sum(o.completed - o.submitted for o in ex.outputs) / ex.window,
                slot_overhead_seconds=in_flight / ex.throughput - run_seconds,
                mean_create_to_output_seconds=statistics.fmean(service),
                mean_notice_delay_seconds=statistics.fmean(
                    o.completed - o.submitted - (o.duration or 0) for o in ex.outputs
                ),
            )
            runs.append(run)
        result.runs.extend(runs)
        result.figures += [
            Figure(
                f"throughput at C = {in_flight}",
                "events/s",
                [r["events_per_second"] for r in runs],
                Target(">=", 0.95 * ideal, f">= 95 % of C / L = {0.95 * ideal:g}"),
                digits=1,
            ),
            Figure(
                f"share of C / L at C = {in_flight}",
                "%",
                [100 * r["share_of_ideal"] for r in runs],
                digits=1,
            ),
            Figure(
                f"slot time outside the run per cycle (C / throughput - L) at C = {in_flight}",
                "s",
                [r["slot_overhead_seconds"] for r in runs],
                digits=3,
            ),
            Figure(
                f"mean records held (consumed, not committed) at C = {in_flight}",
                "",
                [r["mean_in_flight"] for r in runs],
                digits=0,
            ),
            Figure(
                f"mean runs at the API (create sent to completion noticed) at C = {in_flight}",
                "",
                [r["mean_runs_at_api"] for r in runs],
                digits=0,
            ),
            Figure(
                f"mean create-to-output time at C = {in_flight}",
                "s",
                [r["mean_create_to_output_seconds"] for r in runs],
                digits=3,
            ),
            Figure(
                f"connector CPU at C = {in_flight}",
                "cores",
                [r["connector_cpu_cores"] for r in runs],
                digits=2,
            ),
            Figure(
                f"simulator CPU at C = {in_flight}",
                "cores",
                [r["simulator_cpu_cores"] for r in runs],
                digits=2,
            ),
        ]
    return result


# --- rate-bound ------------------------------------------------------------------------------


def rate_bound(bench: Bench) -> ScenarioResult:
    rate = 200.0
    events = 400 if bench.quick else 3_000
    sim = {"rate_limit": rate, "run_duration_ms": "1000", "retry_after": 1}
    params = {
        "provider_limit_rps": rate,
        "events": events,
        "max_in_flight": 500,
        "connector rate_limit.requests_per_second": rate,
        "simulator": sim,
    }
    result = ScenarioResult(
        "rate-bound", "Rate-bound: the simulator allows R = 200 requests/s", params
    )
    executions = _reps(
        bench,
        "rate-bound",
        lambda label: bench.execute(
            label,
            events=events,
            max_in_flight=500,
            extra_config={"rate_limit": {"requests_per_second": rate}},
            sim=sim,
            expected_seconds=events * 2 / rate,
        ),
    )
    for ex in executions:
        run = ex.common()
        total = sum(ex.requests(r) for r in RUN_ROUTES)
        limited = sum(ex.requests(r, "429") for r in RUN_ROUTES)
        accepted = total - limited
        per_event = accepted / ex.events
        run.update(
            run_requests=total,
            run_requests_429=limited,
            accepted_per_second=accepted / ex.window,
            share_429=limited / total if total else 0.0,
            accepted_requests_per_event=per_event,
            event_bound=rate / per_event,
        )
        result.runs.append(run)
    runs = result.runs
    result.figures = [
        Figure(
            "accepted requests/s",
            "requests/s",
            [r["accepted_per_second"] for r in runs],
            Target(">=", 0.9 * rate, f">= 90 % of R = {0.9 * rate:g}"),
        ),
        Figure(
            "429 share of all requests",
            "%",
            [100 * r["share_429"] for r in runs],
            Target("<", 5.0, "< 5 %"),
            digits=2,
        ),
        Figure("throughput", "events/s", [r["events_per_second"] for r in runs]),
        Figure(
            "bound R / (accepted requests per event)",
            "events/s",
            [r["event_bound"] for r in runs],
        ),
    ]
    return result


# --- polling cost ----------------------------------------------------------------------------


def polling(bench: Bench) -> ScenarioResult:
    durations = (1.0, 2.0, 3.0)
    in_flight = 100
    events = 200 if bench.quick else 1_000
    params = {
        "run_seconds": list(durations),
        "events": events,
        "max_in_flight": in_flight,
        "simulator": {"retry_after": 1},
        "poll settings": "connector defaults (poll_initial_seconds 1, poll_max_seconds 10)",
    }
    result = ScenarioResult(
        "polling", "Polling cost: run durations fixed at 1 s, 2 s and 3 s", params
    )
    for seconds in durations:
        executions = _reps(
            bench,
            f"polling L={seconds:g}s",
            lambda label, s=seconds: bench.execute(
                label,
                events=events,
                max_in_flight=in_flight,
                sim={"run_duration_ms": f"{s * 1000:g}", "retry_after": 1},
                expected_seconds=events / in_flight * s,
            ),
        )
        runs = []
        for ex in executions:
            run = ex.common()
            delays = [o.completed - o.submitted - (o.duration or 0.0) for o in ex.outputs]
            polls = ex.metrics.histogram(PREFIX + "polls_per_run")
            run.update(
                run_seconds=seconds,
                gets_per_run=ex.requests("GET /v1/runs/{runId}") / ex.sim_stats["runs_created"],
                median_notice_delay_seconds=statistics.median(delays),
                p90_notice_delay_seconds=percentile(delays, 0.9),
                connector_polls_per_run_mean=polls.sum / polls.count if polls.count else None,
            )
            runs.append(run)
        result.runs.extend(runs)
        result.figures += [
            Figure(
                f"GET requests per run, L = {seconds:g} s",
                "",
                [r["gets_per_run"] for r in runs],
                Target("<=", 1.5, "<= 1.5"),
                digits=2,
            ),
            Figure(
                f"median completion-notice delay, L = {seconds:g} s",
                "ms",
                [1000 * r["median_notice_delay_seconds"] for r in runs],
                Target("<=", 100 * seconds, f"<= 10 % of L = {100 * seconds:g} ms"),
                digits=0,
            ),
            Figure(
                f"p90 completion-notice delay, L = {seconds:g} s",
                "ms",
                [1000 * r["p90_notice_delay_seconds"] for r in runs],
                digits=0,
            ),
        ]
    return result


# --- memory ----------------------------------------------------------------------------------


def memory(bench: Bench) -> ScenarioResult:
    """One connector process per repetition, measured at two plateaus: 500 events produced,
    all in flight with their runs created; then 4,500 more, all 5,000 in flight. The runs
    last long enough (and the API's Retry-After holds the first poll back long enough) that
    no run finishes before the second plateau is measured."""
    small, large = 500, 5000
    run_ms, retry_after = (10000, 10) if bench.quick else (15000, 5)
    transcript = 8 * 1024
    samples_per_plateau = 3
    sim = {"run_duration_ms": str(run_ms), "retry_after": retry_after}
    params = {
        "in_flight": [small, large],
        "transcript_bytes": transcript,
        "max_in_flight": large,
        "simulator": sim,
        "measured": (
            f"median VmRSS of {samples_per_plateau} samples 0.5 s apart while all {small:,} "
            f"(then, in the same process, all {large:,}) events are in flight with their runs "
            "created and none finished"
        ),
    }
    result = ScenarioResult(
        "memory", "Memory: 500 and 5,000 runs in flight with 8 KB transcripts", params
    )
    for rep in range(bench.reps):
        plateaus: dict[int, list[int]] = {small: [], large: []}

        def watch(
            metrics: Metrics,
            sampler: ProcSampler,
            release: Callable[[], None],
            seen: dict[int, list[int]] = plateaus,
        ) -> None:
            held = metrics.total(PREFIX + "in_flight_records")
            created = metrics.total(PREFIX + "runs_created_total")
            done = metrics.total(PREFIX + "records_finished_total")
            if done or not sampler.samples:
                return
            for size in (small, large):
                if held == size and created == size and len(seen[size]) < samples_per_plateau:
                    seen[size].append(sampler.samples[-1].rss)
            if len(seen[small]) >= samples_per_plateau:
                release()

        ex = bench.execute(
            f"memory rep {rep + 1}/{bench.reps}",
            events=large,
            staged=small,
            transcript_bytes=transcript,
            max_in_flight=large,
            sim=sim,
            expected_seconds=run_ms / 1000 + retry_after + 10,
            on_metrics=watch,
            scrape_every=0.5,
        )
        for size, seen in plateaus.items():
            if len(seen) < samples_per_plateau:
                raise RuntimeError(
                    f"memory: only {len(seen)} samples with all {size:,} events in flight and "
                    "none finished (the runs ended before the plateau was measured)"
                )
        run = ex.common()
        run.update(
            rss_small_bytes=statistics.median(plateaus[small]),
            rss_large_bytes=statistics.median(plateaus[large]),
            rss_samples={str(k): v for k, v in plateaus.items()},
            hwm_bytes=ex.connector.peak_hwm,
        )
        run["bytes_per_in_flight_run"] = (run["rss_large_bytes"] - run["rss_small_bytes"]) / (
            large - small
        )
        result.runs.append(run)
    runs = result.runs
    result.figures = [
        Figure(
            f"resident memory at {large:,} in flight",
            "MB",
            [r["rss_large_bytes"] / MB for r in runs],
            Target("<=", 250, "<= 250 MB"),
        ),
        Figure(
            f"resident memory at {small:,} in flight",
            "MB",
            [r["rss_small_bytes"] / MB for r in runs],
        ),
        Figure(
            f"growth from {small:,} to {large:,} in flight, per run",
            "KB",
            [r["bytes_per_in_flight_run"] / 1024 for r in runs],
        ),
        Figure(
            "peak resident memory (VmHWM) of the process",
            "MB",
            [r["hwm_bytes"] / MB for r in runs],
        ),
    ]
    return result


# --- notice-to-output latency ----------------------------------------------------------------


def notice_to_output(bench: Bench) -> ScenarioResult:
    in_flight, run_seconds = 1000, 2.0
    rate = 0.5 * in_flight / run_seconds
    seconds = 4 if bench.quick else 20
    events = int(rate * seconds)
    sim = {"run_duration_ms": f"{run_seconds * 1000:g}", "retry_after": 1}
    params = {
        "max_in_flight": in_flight,
        "run_seconds": run_seconds,
        "input_rate": f"{rate:g} events/s = half of C / L",
        "events": events,
        "simulator": sim,
        "measured": "semarize_connector_notice_to_output_seconds (noticed -> broker ack)",
    }
    result = ScenarioResult(
        "notice-to-output", "Notice-to-output latency at half the latency-bound throughput", params
    )
    executions = _reps(
        bench,
        "notice-to-output",
        lambda label: bench.execute(
            label,
            events=events,
            max_in_flight=in_flight,
            sim=sim,
            paced_rate=rate,
            expected_seconds=seconds + run_seconds,
        ),
    )
    for ex in executions:
        run = ex.common()
        hist = ex.metrics.histogram(PREFIX + "notice_to_output_seconds")
        appended = [o.appended - o.completed for o in ex.outputs]
        run.update(
            p50_seconds=hist.quantile(0.5),
            p99_seconds=hist.quantile(0.99),
            share_within_50ms=hist.fraction_at_most(0.05),
            share_within_250ms=hist.fraction_at_most(0.25),
            histogram_count=hist.count,
            p50_noticed_to_appended_seconds=percentile(appended, 0.5),
            p99_noticed_to_appended_seconds=percentile(appended, 0.99),
        )
        result.runs.append(run)
    runs = result.runs
    result.figures = [
        Figure(
            "p50 notice-to-output",
            "ms",
            [1000 * r["p50_seconds"] for r in runs],
            Target("<=", 50, "<= 50 ms"),
        ),
        Figure(
            "p99 notice-to-output",
            "ms",
            [1000 * r["p99_seconds"] for r in runs],
            Target("<=", 250, "<= 250 ms"),
        ),
        Figure(
            "share within 50 ms",
            "%",
            [100 * r["share_within_50ms"] for r in runs],
        ),
        Figure("share within 250 ms", "%", [100 * r["share_within_250ms"] for r in runs]),
        Figure(
            "p50 noticed -> broker append (from the records)",
            "ms",
            [1000 * r["p50_noticed_to_appended_seconds"] for r in runs],
        ),
        Figure(
            "p99 noticed -> broker append (from the records)",
            "ms",
            [1000 * r["p99_noticed_to_appended_seconds"] for r in runs],
        ),
        Figure("throughput", "events/s", [r["events_per_second"] for r in runs]),
    ]
    return result


# --- profile ---------------------------------------------------------------------------------


def profile(bench: Bench, out_dir: Path, mode: str = "async") -> tuple[ScenarioResult, Path]:
    events = 2_000 if bench.quick else 10_000
    raw = out_dir / f"overhead-{mode}.collapsed.txt"
    params = {"events": events, "mode": mode, "sampler": "py-spy record --nonblocking 250 Hz"}
    result = ScenarioResult(f"profile-{mode}", f"Profile of the overhead scenario ({mode})", params)
    started = time.monotonic()
    ex = bench.execute(
        f"profile overhead {mode}",
        events=events,
        max_in_flight=1000,
        semarize={"mode": mode},
        sim={"run_duration_ms": 0, "retry_after": 0},
        expected_seconds=events / 150,
        profile=raw,
    )
    log(f"profile {mode}: {raw} written in {time.monotonic() - started:.0f} s")
    result.runs.append(ex.common())
    return result, raw
