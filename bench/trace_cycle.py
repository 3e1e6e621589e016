"""Where a slot's time goes between two runs: a diagnosis for the latency-bound scenario.

    python -m bench.trace_cycle [--in-flight 100] [--run-ms 1000] [--waves 4]

With fixed run durations and every slot busy, records move in waves: C records are created,
their runs end together, and the next C records are created once the slots come back. This
runs the real connector with a few of its methods wrapped at run time (the files in
``connector/`` are not touched) so that it logs when records are delivered, partitions
paused and resumed, commits requested and confirmed and slots released, and prints for each
wave how long each step between "last output appended" and "next wave's first create" took.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from bench import harness
from bench.core import Bench, log
from bench.harness import Simulator
from tests.kafka_broker import KafkaBroker

WRAPPER = """#!{python}
import logging, sys
sys.path.insert(0, {root!r})
import connector.kafka_source as ks
import connector.pipeline as pl
log = logging.getLogger("trace")

def wrap(cls, name, before=None, after=None):
    original = getattr(cls, name)
    def wrapper(self, *args):
        state = before(self, *args) if before else None
        result = original(self, *args)
        if after:
            after(self, state, result, *args)
        return result
    setattr(cls, name, wrapper)

wrap(ks.KafkaSource, "_apply_pauses", before=lambda s: len(s._paused),
     after=lambda s, n, r: n != len(s._paused) and log.warning(
         "trace", extra={{"event": "resume" if len(s._paused) < n else "pause"}}))
wrap(ks.KafkaSource, "_deliver", before=lambda s, m: log.warning(
     "trace", extra={{"event": "deliver", "count": len(m)}}))
wrap(pl.Pipeline, "request_commit", after=lambda s, _, r: r and log.warning(
     "trace", extra={{"event": "commit requested"}}))
wrap(pl.Pipeline, "on_commit", before=lambda s, r, ok: log.warning(
     "trace", extra={{"event": "commit confirmed"}}))

from connector.cli import main
sys.exit(main())
"""


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trace_cycle", description=__doc__)
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--run-ms", type=int, default=1000)
    parser.add_argument("--waves", type=int, default=4)
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="semarize-trace-"))
    wrapper = workdir / "semarize-connector-traced"
    root = str(Path(__file__).resolve().parents[1])
    wrapper.write_text(WRAPPER.format(python=sys.executable, root=root))
    wrapper.chmod(0o755)
    harness.connector_cli = lambda: str(wrapper)  # this process only

    broker = KafkaBroker(workdir / "kafka")
    broker.start()
    simulator = Simulator(workdir, "--seed", "6")
    bench = Bench(
        broker.bootstrap_servers,
        broker.pid or 0,
        simulator,
        workdir,
        quick=False,
        stop_when_idle=60,
    )
    try:
        ex = bench.execute(
            "trace",
            events=args.in_flight * args.waves,
            max_in_flight=args.in_flight,
            sim={"run_duration_ms": args.run_ms, "retry_after": 1},
            expected_seconds=args.waves * args.run_ms / 1000,
        )
    finally:
        simulator.stop()
        broker.stop()
    logs = sorted(workdir.glob("b001-*.log"))
    events: list[tuple[float, str]] = []
    for line in logs[0].read_text().splitlines():
        if line.startswith("{") and '"trace"' in line:
            entry = json.loads(line)
            events.append((_time(entry["time"]), entry["event"]))
    outputs = sorted(ex.outputs, key=lambda o: o.submitted)
    t0 = outputs[0].submitted
    c = args.in_flight
    waves = [outputs[k : k + c] for k in range(0, len(outputs), c)]
    print(f"\nC = {c}, L = {args.run_ms / 1000:g} s; times in s from the first create\n")
    print(
        "wave  creates          noticed          appended    | next: commit req  confirmed"
        "  resume  deliver  create"
    )
    for index, wave in enumerate(waves):
        appended = max(o.appended for o in wave)
        row = (
            f"{index:>4}  {min(o.submitted for o in wave) - t0:6.3f}-"
            f"{max(o.submitted for o in wave) - t0:6.3f}  "
            f"{min(o.completed for o in wave) - t0:6.3f}-{max(o.completed for o in wave) - t0:6.3f}"
            f"  {appended - t0:6.3f}"
        )
        if index + 1 < len(waves):
            nxt = min(o.submitted for o in waves[index + 1])
            steps = []
            for name in ("commit requested", "commit confirmed", "resume", "deliver"):
                at = [t for t, e in events if e == name and appended - 0.5 <= t <= nxt]
                steps.append(f"{at[-1] - appended:+.3f}" if at else "   -  ")
            row += "  |   " + "    ".join(steps) + f"  {nxt - appended:+.3f}"
        print(row)
    spans = sorted(o.completed - o.submitted for o in outputs[c:])
    if spans:
        quantiles = ", ".join(
            f"p{q} {spans[min(len(spans) - 1, len(spans) * q // 100)]:.3f}"
            for q in (0, 10, 50, 80, 90, 95, 99, 100)
        )
        print(f"\ncreate sent to completion noticed, waves 1+ (s): {quantiles}")
    print(
        f"\nslot cycle C / throughput = {c / ex.throughput:.3f} s for runs of "
        f"{args.run_ms / 1000:g} s; connector log: {logs[0]}"
    )
    log(f"work dir {workdir} (kept: {os.path.getsize(logs[0]):,} bytes of log)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
