"""Helpers of `make demo` (scripts/demo.sh): topics, sample records, and the closing summary.

    python scripts/demo_tools.py create-topics --config config/demo.yaml
    python scripts/demo_tools.py produce --config config/demo.yaml --samples config/samples \\
        --manifest .local/demo/manifest.json
    python scripts/demo_tools.py summary --config config/demo.yaml \\
        --manifest .local/demo/manifest.json [--log .local/demo/connector.log] [--sim-url URL]

Topics, bootstrap servers and Kit come from the connector's own effective configuration (the
file plus the environment, as `semarize-connector run` reads it), so the demo can never look
at other topics than the connector uses. `summary` reads the output and dead-letter topics
from the beginning with all partitions assigned (not as a group member, committing nothing)
and exits 1 if a produced sample has neither an output nor a dead letter.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from connector.config import Settings, load_settings
from connector.errors import ConfigError

TIMEOUT = 30.0
SAMPLE_HEADER = "demo.sample"


# --- configuration ---------------------------------------------------------------------------


def settings_from(path: str | None, *, kafka_only: bool = False) -> Settings:
    """The effective settings; with `kafka_only` (topic creation), the API settings need not
    be there: placeholders stand in for a missing key and Kit."""
    env = dict(os.environ)
    if kafka_only:
        env.setdefault("SEMARIZE_API_KEY", "smz_placeholder_for_topic_creation")
        if not env.get("SEMARIZE_KIT_VERSION_ID"):
            env.setdefault("SEMARIZE_KIT_CODE", "A1B2C3D4")
    try:
        return load_settings(path, env)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def admin_for(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})


# --- create-topics ---------------------------------------------------------------------------


def create_topics(settings: Settings, partitions: int, *, keep_existing: bool = False) -> None:
    """Delete the demo topics if they exist, then create them empty; with `keep_existing`,
    only create the missing ones."""
    k = settings.kafka
    topics = [*k.input_topics, k.output_topic, k.dlq_topic]
    if settings.webhooks.enabled:
        topics.append(k.completions_topic)
    admin = admin_for(settings)
    existing = set(admin.list_topics(timeout=TIMEOUT).topics)
    if keep_existing:
        topics = [t for t in topics if t not in existing]
        if not topics:
            print("topics exist already")
            return
    stale = [t for t in topics if t in existing]
    if stale:
        futures = admin.delete_topics(stale, operation_timeout=TIMEOUT, request_timeout=TIMEOUT)
        for future in futures.values():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
        _wait(lambda: not set(stale) & set(admin.list_topics(timeout=TIMEOUT).topics), "deletion")
    deadline = time.monotonic() + TIMEOUT
    pending = list(topics)
    while pending:
        new = [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in pending]
        futures = admin.create_topics(new, operation_timeout=TIMEOUT, request_timeout=TIMEOUT)
        retry = []
        for name, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                # A topic that is still being deleted reports TOPIC_ALREADY_EXISTS for a moment.
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
                if time.monotonic() > deadline:
                    raise
                retry.append(name)
        pending = retry
        if pending:
            time.sleep(0.5)
    _wait(lambda: _all_led(admin, topics, partitions), "leaders for the new topics")
    what = "deleted and recreated" if stale else "created"
    print(f"topics {what} ({partitions} partitions each): {', '.join(topics)}")


def _all_led(admin: AdminClient, topics: Sequence[str], partitions: int) -> bool:
    md = admin.list_topics(timeout=TIMEOUT)
    for name in topics:
        tmd = md.topics.get(name)
        if tmd is None or tmd.error is not None or len(tmd.partitions) != partitions:
            return False
        if not all(p.leader >= 0 and p.error is None for p in tmd.partitions.values()):
            return False
    return True


def _wait(condition: Any, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


# --- produce ---------------------------------------------------------------------------------


@dataclass
class Sample:
    key: str
    file: str  # relative to the samples directory
    shape: str  # "string", "turns" or "raw" (sent byte for byte)
    value: bytes
    kit: str | None = None


def load_samples(directory: Path) -> list[Sample]:
    """calls/*.json (re-serialised compactly, key = event_id) and malformed/* (raw bytes,
    key = file name without extension)."""
    samples = []
    for path in sorted((directory / "calls").glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        transcript = doc.get("transcript")
        samples.append(
            Sample(
                key=str(doc["event_id"]),
                file=str(path.relative_to(directory)),
                shape="string" if isinstance(transcript, str) else "turns",
                value=json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode(),
                kit=doc.get("kit_code"),
            )
        )
    malformed = directory / "malformed"
    for path in sorted(malformed.iterdir() if malformed.is_dir() else []):
        if path.is_file() and not path.name.startswith("."):
            samples.append(
                Sample(path.stem, str(path.relative_to(directory)), "raw", path.read_bytes())
            )
    if not samples:
        raise SystemExit(f"no samples under {directory}/calls or {directory}/malformed")
    return samples


def produce(settings: Settings, samples: Sequence[Sample], manifest: Path) -> None:
    topic = settings.kafka.input_topics[0]
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "partitioner": "murmur2_random",
            # A broker that has just started answers "coordinator load in progress" for a
            # moment; librdkafka retries by itself, delivery reports still catch any failure.
            "log_level": 3,
        }
    )
    delivered: dict[int, tuple[int, int]] = {}
    errors: list[str] = []

    def report(index: int) -> Any:
        def callback(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                errors.append(f"{samples[index].key}: {err.str()}")
            else:
                delivered[index] = (msg.partition(), msg.offset())

        return callback

    for index, sample in enumerate(samples):
        producer.produce(
            topic,
            key=sample.key.encode(),
            value=sample.value,
            headers=[(SAMPLE_HEADER, sample.file.encode())],
            on_delivery=report(index),
        )
    remaining = producer.flush(TIMEOUT)
    if remaining or errors or len(delivered) != len(samples):
        raise SystemExit(f"producing failed: {remaining} undelivered; {'; '.join(errors)}")
    entries = [
        {
            "key": s.key,
            "file": s.file,
            "shape": s.shape,
            "kit": s.kit,
            "topic": topic,
            "partition": delivered[i][0],
            "offset": delivered[i][1],
        }
        for i, s in enumerate(samples)
    ]
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
    shapes = Counter(s.shape for s in samples)
    print(
        f"produced {len(samples)} records to {topic} (keys = event ids):"
        f" {shapes['string']} transcripts as strings, {shapes['turns']} as speaker turns,"
        f" {shapes['raw']} malformed"
    )


# --- summary ---------------------------------------------------------------------------------


def read_topic(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """Every record of ``topic`` up to its current end, all partitions assigned, no group."""
    conf = {
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "group.id": "demo-summary",  # required by librdkafka; never joined nor committed to
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    }
    consumer = Consumer(conf)
    try:
        md = consumer.list_topics(topic, timeout=TIMEOUT).topics[topic]
        if md.error is not None:
            raise KafkaException(md.error)
        assignment, pending = [], {}
        for partition in sorted(md.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=TIMEOUT
            )
            if high > low:
                assignment.append(TopicPartition(topic, partition, low))
                pending[partition] = high
        records: list[dict[str, Any]] = []
        if not assignment:
            return records
        consumer.assign(assignment)
        deadline = time.monotonic() + TIMEOUT
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: did not reach the end of {sorted(pending)}")
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    if msg.offset() >= pending.get(msg.partition(), 0):
                        pending.pop(msg.partition(), None)
                    continue
                raise KafkaException(err)
            if msg.offset() < pending.get(msg.partition(), 0):
                records.append(
                    {
                        "partition": msg.partition(),
                        "offset": msg.offset(),
                        "key": msg.key(),
                        "value": msg.value(),
                        "headers": {
                            name: (value or b"").decode("utf-8", "replace")
                            for name, value in msg.headers() or []
                        },
                    }
                )
            if msg.offset() >= pending.get(msg.partition(), 0) - 1:
                pending.pop(msg.partition(), None)
        return records
    finally:
        consumer.close()


@dataclass
class Outcome:
    kind: str  # "succeeded" or a dead-letter kind
    run_id: str
    detail: str
    record: dict[str, Any]
    doc: dict[str, Any] | None = None


def _bricks(doc: dict[str, Any]) -> dict[str, Any]:
    output = doc.get("output")
    bricks = output.get("bricks") if isinstance(output, dict) else None
    return bricks if isinstance(bricks, dict) else {}


def _brick_value(bricks: dict[str, Any], key: str) -> Any:
    brick = bricks.get(key)
    return brick.get("value") if isinstance(brick, dict) else None


def _short(value: Any, width: int = 70) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:.2f}"
    elif isinstance(value, list):
        text = "; ".join(_short(v, width) for v in value) if value else "(none)"
    else:
        text = str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def output_outcome(
    record: dict[str, Any], kit: str | None
) -> tuple[tuple[int, int] | None, Outcome]:
    doc = json.loads(record["value"])
    source = doc.get("source") or {}
    bricks = _bricks(doc)
    seconds = (doc.get("duration_ms") or 0) / 1000
    parts = [
        f"{seconds:.1f} s",
        f"sentiment {_short(_brick_value(bricks, 'sentiment'))}",
        f"next steps {len(_brick_value(bricks, 'next_steps') or [])}",
    ]
    competitor = _brick_value(bricks, "competitor_mentioned")
    if competitor:
        parts.append(f"competitor {competitor}")
    if doc.get("kit_code") and doc.get("kit_code") != kit:
        parts.append(f"Kit {doc['kit_code']} (the record's own)")
    coordinates = (source.get("partition"), source.get("offset"))
    return (
        coordinates if None not in coordinates else None,
        Outcome(str(doc.get("status")), str(doc.get("run_id")), ", ".join(parts), record, doc=doc),
    )


def dlq_outcome(record: dict[str, Any], _kit: str | None) -> tuple[tuple[int, int] | None, Outcome]:
    h = record["headers"]
    reason = h.get("__connect.errors.exception.message", "")
    code = h.get("semarize.error_code")
    if code and code not in reason:
        reason = f"{code}: {reason}"
    message = h.get("semarize.error_message")
    if message and message not in reason:
        reason = f"{reason} ({message})"
    try:
        coordinates: tuple[int, int] | None = (
            int(h["__connect.errors.partition"]),
            int(h["__connect.errors.offset"]),
        )
    except (KeyError, ValueError):
        coordinates = None
    kind = h.get("semarize.error_kind", "?")
    return coordinates, Outcome(kind, h.get("semarize.run_id", "-"), reason, record)


def summarize(
    settings: Settings, manifest: Path, log: Path | None, sim_url: str | None, sample_key: str
) -> int:
    k = settings.kafka
    entries = json.loads(manifest.read_text(encoding="utf-8"))
    found: dict[tuple[int, int], list[Outcome]] = {}
    unmatched: list[Outcome] = []
    outputs = read_topic(settings, k.output_topic)
    dead = read_topic(settings, k.dlq_topic)
    for record, convert in [(r, output_outcome) for r in outputs] + [
        (r, dlq_outcome) for r in dead
    ]:
        coordinates, outcome = convert(record, settings.semarize.kit_code)
        if coordinates is None:
            unmatched.append(outcome)
        else:
            found.setdefault(coordinates, []).append(outcome)

    print(f"\nPer record ({k.input_topics[0]} -> {k.output_topic} | {k.dlq_topic}):\n")
    width = max(len(e["key"]) for e in entries)
    print(f"  {'EVENT ID':<{width}}  {'SENT AS':<7}  {'RUN ID':<28}  {'OUTCOME':<17}  DETAIL")
    kinds: Counter[str] = Counter()
    missing, duplicated = [], []
    for entry in entries:
        outcomes = found.pop((entry["partition"], entry["offset"]), [])
        if not outcomes:
            missing.append(entry["key"])
            outcome_text, run_id, detail = "MISSING", "-", "no output and no dead letter"
        else:
            if len(outcomes) > 1:
                duplicated.append(entry["key"])
            first = outcomes[0]
            kinds[first.kind] += 1
            outcome_text, run_id, detail = first.kind, first.run_id, first.detail
            if len(outcomes) > 1:
                detail += f" (written {len(outcomes)} times)"
            if first.record["key"] != entry["key"].encode():
                detail += f" (key {first.record['key']!r}, expected {entry['key']!r})"
        print(
            f"  {entry['key']:<{width}}  {entry['shape']:<7}  {run_id:<28}  {outcome_text:<17}"
            f"  {detail}"
        )
    strays = unmatched + [o for rest in found.values() for o in rest]
    for outcome in strays:
        print(f"  (not from this demo run) {outcome.kind} {outcome.run_id}: {outcome.detail}")

    example = _example(outputs, sample_key)
    if example is not None:
        _print_example(example)

    succeeded = kinds.pop("succeeded", 0)
    dead_total = sum(kinds.values())
    by_kind = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    print("\nTotals:")
    print(f"  produced      {len(entries)} records to {k.input_topics[0]}")
    print(f"  analysed      {succeeded} ({len(outputs)} records on {k.output_topic})")
    print(
        f"  dead letters  {dead_total}: {by_kind or 'none'} ({len(dead)} records on {k.dlq_topic})"
    )
    print(f"  missing       {len(missing)}; written more than once: {len(duplicated)}")
    if sim_url:
        _print_sim_stats(sim_url)
    if log is not None:
        _print_log_digest(log)
    if missing:
        print(f"\nERROR: no output and no dead letter for: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def _example(outputs: Iterable[dict[str, Any]], key: str) -> dict[str, Any] | None:
    chosen = None
    for record in outputs:
        if chosen is None or record["key"] == key.encode():
            chosen = record
    return chosen


def _print_example(record: dict[str, Any]) -> None:
    doc = json.loads(record["value"])
    bricks = _bricks(doc)
    print(
        f"\nWhat a result looks like: {doc.get('event_id')}"
        f" (partition {record['partition']}, offset {record['offset']})"
    )
    print(
        f"  run {doc.get('run_id')}, kit {doc.get('kit_code')}, {doc.get('duration_ms')} ms,"
        f" submitted {doc.get('submitted_at')}, completed {doc.get('completed_at')}"
    )
    headers = ", ".join(f"{n}={v}" for n, v in record["headers"].items())
    print(f"  headers:  {headers}")
    print(f"  metadata: {json.dumps(doc.get('metadata'), ensure_ascii=False)}")
    print("  bricks (value, confidence):")
    for name, brick in bricks.items():
        if not isinstance(brick, dict):
            continue
        confidence = brick.get("confidence")
        shown = f"{confidence:.2f}" if isinstance(confidence, int | float) else "-"
        print(f"    {name:<24} {_short(brick.get('value'), 66):<66}  {shown}")


def _print_sim_stats(url: str) -> None:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/_sim/stats", timeout=5) as response:
            stats = json.load(response)
    except (OSError, ValueError) as exc:
        print(f"  simulator     stats not available ({exc})")
        return
    requests = "; ".join(
        f"{route} " + " ".join(f"{status}x{n}" for status, n in sorted(codes.items()))
        for route, codes in stats.get("requests", {}).items()
    )
    runs = ", ".join(f"{n} {s}" for s, n in stats.get("runs_by_status", {}).items() if n)
    print(
        f"  simulator     {stats.get('runs_created')} runs created ({runs}),"
        f" {stats.get('runs_replayed', 0)} replayed"
    )
    print(f"                requests: {requests}")


def _print_log_digest(path: Path) -> None:
    if not path.is_file():
        print(f"  connector log {path} not found")
        return
    levels: Counter[str] = Counter()
    notable: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
            level = str(entry.get("level", "?"))
        except ValueError:
            entry, level = {}, "not JSON"
        levels[level] += 1
        if level in {"warning", "error", "critical", "not JSON"}:
            message = entry.get("message", line) if entry else line
            notable[f"{level}: {_short(message, 110)}"] += 1
    counts = ", ".join(f"{n} {level}" for level, n in sorted(levels.items()))
    print(f"  connector log {sum(levels.values())} lines ({counts}) in {path}")
    for message, n in notable.most_common(6):
        print(f"    {f'{n}x ' if n > 1 else ''}{message}")


# --- command line ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("create-topics", "produce", "summary"):
        sub = commands.add_parser(name)
        sub.add_argument("--config", help="the connector's YAML configuration (env overrides)")
        if name == "create-topics":
            sub.add_argument("--partitions", type=int, default=3)
            sub.add_argument(
                "--keep-existing",
                action="store_true",
                help="create only missing topics (default: delete and recreate them)",
            )
        if name in ("produce", "summary"):
            sub.add_argument("--manifest", type=Path, required=True)
        if name == "produce":
            sub.add_argument("--samples", type=Path, required=True)
        if name == "summary":
            sub.add_argument("--log", type=Path, help="the connector's log (JSON lines)")
            sub.add_argument("--sim-url", help="the simulator, for its /_sim/stats")
            sub.add_argument(
                "--example", default="call-2026-0002", help="event id of the result to show"
            )
    args = parser.parse_args(argv)
    settings = settings_from(args.config, kafka_only=args.command == "create-topics")
    if args.command == "create-topics":
        create_topics(settings, args.partitions, keep_existing=args.keep_existing)
    elif args.command == "produce":
        produce(settings, load_samples(args.samples), args.manifest)
    else:
        return summarize(settings, args.manifest, args.log, args.sim_url, args.example)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
