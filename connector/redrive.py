"""Dead-letter redrive: put fixed records back through the pipeline.

`semarize-connector redrive` reads the dead-letter topic up to the end offsets it finds at
start and republishes the chosen records to the input topic (or `--to`), key and value byte
for byte, with the headers the input had. Each one carries a bumped
`semarize.redrive_generation` and `semarize.redriven_from`, so the connector gives it a new
idempotency key and therefore a new run (DESIGN.md, "Idempotency key").

Safe to re-run: the positions on the dead-letter topic are committed to a consumer group of
its own (`<group>.redrive` by default), and only after every record sent was acknowledged by
the broker. A record a filter leaves out is read all the same and its position advances, so
a second identical run sends nothing; `--from-beginning` starts over on purpose. Records
whose generation would exceed `--max-generation` are refused (a loop breaker).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO, get_args

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from connector.config import Settings
from connector.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from connector.kafka_sink import producer_config
from connector.records import (
    CONNECT_PREFIX,
    DEAD_LETTER_HEADERS,
    REDRIVE_GENERATION_HEADER,
    REDRIVEN_FROM_HEADER,
    DeadLetterKind,
    Headers,
    rfc3339,
)

KINDS: tuple[str, ...] = get_args(DeadLetterKind)
DEFAULT_MAX_GENERATION = 3
CHECKPOINT_RECORDS = 1000  # flush + commit at least this often (records sent) ...
CHECKPOINT_SECONDS = 5.0  # ... and this often (seconds), so an interruption resends little
_OFFSET_INVALID = -1001  # librdkafka: no committed offset
_COORDINATOR_BUSY = frozenset(
    {
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
    }
)

_LIBRDKAFKA_LOG = logging.getLogger("librdkafka.redrive")

# (first, last) inclusive; last None = open-ended.
Range = tuple[int, int | None]


# --- arguments ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The redrive-specific options (`--config` is added by the CLI)."""
    where = parser.add_argument_group("where to")
    where.add_argument(
        "--to",
        metavar="TOPIC",
        help="republish to TOPIC (default: the input topic each dead letter came from; "
        "the dead-letter topic itself is refused)",
    )
    where.add_argument(
        "--group",
        metavar="GROUP",
        help="consumer group that keeps redrive's position on the dead-letter topic "
        "(default: <kafka.group_id>.redrive)",
    )
    where.add_argument(
        "--from-beginning",
        action="store_true",
        help="start over from the beginning of the dead-letter topic, ignoring the "
        "group's committed position (records already redriven are sent again)",
    )
    which = parser.add_argument_group(
        "which records (options combine with AND, values of one option with OR)"
    )
    which.add_argument(
        "--kind",
        dest="kinds",
        type=parse_kinds,
        action="append",
        metavar="KIND[,KIND]",
        help=f"dead-letter kind(s): {', '.join(KINDS)}",
    )
    which.add_argument(
        "--error-code",
        dest="error_codes",
        type=parse_names,
        action="append",
        metavar="CODE[,CODE]",
        help="semarize.error_code value(s), e.g. kit_not_found",
    )
    which.add_argument(
        "--since",
        type=parse_time,
        metavar="TIME",
        help="records with a timestamp (a dead letter keeps its input record's) at or after "
        "TIME: RFC 3339 / ISO 8601 "
        "(2026-01-02T03:04:05Z, 2026-01-02; no zone = UTC) or an age (90m, 2h, 7d)",
    )
    which.add_argument(
        "--until",
        type=parse_time,
        metavar="TIME",
        help="records with a timestamp before TIME (same forms as --since)",
    )
    which.add_argument(
        "--partition",
        dest="partitions",
        type=parse_ranges,
        action="append",
        metavar="RANGES",
        help="dead-letter topic partitions, e.g. 0,2-4 (others are not read at all)",
    )
    which.add_argument(
        "--offset",
        dest="offsets",
        type=parse_ranges,
        action="append",
        metavar="RANGES",
        help="dead-letter topic offsets, inclusive ranges, e.g. 100-199,250,300-",
    )
    which.add_argument(
        "--event-id",
        dest="event_ids",
        type=parse_names,
        action="append",
        metavar="ID[,ID]",
        help="event id(s) (the semarize.event_id header)",
    )
    which.add_argument(
        "--limit",
        type=_positive_int,
        metavar="N",
        help="send at most N records, then stop (the rest stays for the next run)",
    )
    how = parser.add_argument_group("how")
    how.add_argument(
        "--max-generation",
        type=_non_negative_int,
        default=DEFAULT_MAX_GENERATION,
        metavar="N",
        help="refuse records that would reach a redrive generation above N (default "
        f"{DEFAULT_MAX_GENERATION}): a record that keeps failing is not redriven for ever",
    )
    how.add_argument(
        "--dry-run",
        action="store_true",
        help="list what would be sent (event id, kind, error code, time); send and commit nothing",
    )
    how.add_argument(
        "--timeout",
        type=_positive_float,
        default=60.0,
        metavar="SECONDS",
        help="give up (exit 1) when the broker makes no progress for SECONDS (default 60)",
    )


def parse_kinds(text: str) -> tuple[str, ...]:
    kinds = parse_names(text)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown kind {unknown[0]!r} (one of {', '.join(KINDS)})")
    return kinds


def parse_names(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise argparse.ArgumentTypeError("must name at least one value")
    return names


_RANGE = re.compile(r"^(\d+)(?:\s*(-)\s*(\d+)?)?$")


def parse_ranges(text: str) -> tuple[Range, ...]:
    """`0`, `2-4`, `100-` (open-ended), comma-separated; inclusive."""
    ranges: list[Range] = []
    for part in text.split(","):
        part = part.strip()
        match = _RANGE.match(part)
        if not match:
            raise argparse.ArgumentTypeError(
                f"not a range: {part!r} (use N, FIRST-LAST or FIRST-, comma-separated)"
            )
        first = int(match.group(1))
        if match.group(2) is None:
            last: int | None = first
        else:
            last = int(match.group(3)) if match.group(3) is not None else None
        if last is not None and last < first:
            raise argparse.ArgumentTypeError(f"empty range: {part!r} (last before first)")
        ranges.append((first, last))
    return tuple(ranges)


_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now: float | None = None) -> int:
    """An instant as epoch milliseconds: RFC 3339 / ISO 8601 (no zone = UTC) or an age."""
    text = text.strip()
    age = _AGE.match(text.lower())
    if age:
        seconds = float(age.group(1)) * _AGE_UNITS[age.group(2)]
        return int(((time.time() if now is None else now) - seconds) * 1000)
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (use 2026-01-02T03:04:05Z, 2026-01-02 or an age: 90m, 2h, 7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


# --- one dead letter ----------------------------------------------------------------------------


def _header(headers: Headers | None, name: str, *, last: bool = True) -> bytes | None:
    found: bytes | None = None
    for key, value in headers or ():
        if key == name:
            if not last:
                return value
            found = value
    return found


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", errors="replace")


def record_generation(headers: Headers | None) -> int | None:
    """The record's redrive generation as the connector reads it: 0 without the header,
    None when the header is not a non-negative integer."""
    if not headers or not any(name == REDRIVE_GENERATION_HEADER for name, _ in headers):
        return 0
    raw = _header(headers, REDRIVE_GENERATION_HEADER, last=False)
    try:
        generation = int((raw or b"").decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return generation if generation >= 0 else None


def redrive_headers(headers: Headers | None, generation: int, redriven_from: str) -> Headers:
    """The input record's headers back (the dead letter's own and old redrive headers
    removed), plus the new generation and where it was redriven from."""
    kept = [
        (name, value)
        for name, value in (headers or ())
        if not name.startswith(CONNECT_PREFIX)
        and name not in DEAD_LETTER_HEADERS
        and name not in (REDRIVE_GENERATION_HEADER, REDRIVEN_FROM_HEADER)
    ]
    return [
        *kept,
        (REDRIVE_GENERATION_HEADER, str(generation).encode()),
        (REDRIVEN_FROM_HEADER, redriven_from.encode()),
    ]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic, with what its headers say."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: Headers | None

    @property
    def coordinates(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def kind(self) -> str | None:
        return _text(_header(self.headers, "semarize.error_kind"))

    @property
    def error_code(self) -> str | None:
        return _text(_header(self.headers, "semarize.error_code"))

    @property
    def source_topic(self) -> str | None:
        return _text(_header(self.headers, f"{CONNECT_PREFIX}topic"))

    @property
    def event_id(self) -> str:
        """The semarize.event_id header; else the key; else the input coordinates."""
        header = _text(_header(self.headers, "semarize.event_id"))
        if header:
            return header
        if self.key:
            try:
                return self.key.decode("utf-8")
            except UnicodeDecodeError:
                return self.key.hex()
        partition = _text(_header(self.headers, f"{CONNECT_PREFIX}partition"))
        offset = _text(_header(self.headers, f"{CONNECT_PREFIX}offset"))
        return f"{self.source_topic}-{partition}-{offset}"

    @property
    def time(self) -> str:
        return rfc3339(self.timestamp_ms / 1000) if self.timestamp_ms else "-"


@dataclass(frozen=True)
class Filters:
    """Which dead letters to redrive. Options combine with AND, values with OR."""

    kinds: frozenset[str] = frozenset()
    error_codes: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None
    partitions: tuple[Range, ...] = ()
    offsets: tuple[Range, ...] = ()
    event_ids: frozenset[str] = frozenset()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Filters:
        def union(groups: Iterable[tuple[str, ...]] | None) -> frozenset[str]:
            return frozenset(v for group in groups or () for v in group)

        def ranges(groups: Iterable[tuple[Range, ...]] | None) -> tuple[Range, ...]:
            return tuple(r for group in groups or () for r in group)

        return cls(
            kinds=union(getattr(args, "kinds", None)),
            error_codes=union(getattr(args, "error_codes", None)),
            since_ms=getattr(args, "since", None),
            until_ms=getattr(args, "until", None),
            partitions=ranges(getattr(args, "partitions", None)),
            offsets=ranges(getattr(args, "offsets", None)),
            event_ids=union(getattr(args, "event_ids", None)),
        )

    def partition_selected(self, partition: int) -> bool:
        return not self.partitions or _in_ranges(partition, self.partitions)

    def matches(self, letter: DeadLetter) -> bool:
        if not self.partition_selected(letter.partition):
            return False
        if self.offsets and not _in_ranges(letter.offset, self.offsets):
            return False
        if self.kinds and letter.kind not in self.kinds:
            return False
        if self.error_codes and letter.error_code not in self.error_codes:
            return False
        if self.since_ms is not None or self.until_ms is not None:
            stamp = letter.timestamp_ms
            if stamp is None:
                return False
            if self.since_ms is not None and stamp < self.since_ms:
                return False
            if self.until_ms is not None and stamp >= self.until_ms:
                return False
        return not self.event_ids or letter.event_id in self.event_ids


def _in_ranges(value: int, ranges: Sequence[Range]) -> bool:
    return any(first <= value and (last is None or value <= last) for first, last in ranges)


# --- the command --------------------------------------------------------------------------------


@dataclass
class Counts:
    read: int = 0
    sent: int = 0
    skipped: int = 0
    refused: int = 0


@dataclass
class _Partition:
    start: int
    end: int
    next: int  # the position to commit: one past the last record decided
    done: bool = False


def run_redrive(
    settings: Settings,
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the redrive command; 0 done, 1 failure, 2 configuration or usage error."""
    out = out or sys.stdout
    err = err or sys.stderr
    kafka = settings.kafka
    group = args.group or f"{kafka.group_id}.redrive"
    problems = []
    if args.to is not None and args.to == kafka.dlq_topic:
        problems.append(
            f"--to {args.to}: refusing to redrive into the dead-letter topic itself (it would loop)"
        )
    if args.to is not None and not args.to.strip():
        problems.append("--to: must name a topic")
    if group == kafka.group_id:
        problems.append(
            f"--group {group}: must differ from the connector's own group (kafka.group_id)"
        )
    if args.since is not None and args.until is not None and args.since >= args.until:
        problems.append("--since: must be before --until")
    if problems:
        for problem in problems:
            print(f"redrive: {problem}", file=err)
        return EXIT_CONFIG
    return _Redrive(settings, args, Filters.from_args(args), group, out, err).run()


class _Redrive:
    def __init__(
        self,
        settings: Settings,
        args: argparse.Namespace,
        filters: Filters,
        group: str,
        out: TextIO,
        err: TextIO,
    ) -> None:
        self.settings = settings
        self.args = args
        self.filters = filters
        self.group = group
        self.dlq = settings.kafka.dlq_topic
        self.out = out
        self.err = err
        self.dry_run: bool = args.dry_run
        self.counts = Counts()
        self.partitions: dict[int, _Partition] = {}
        self.progress = _Progress(err)
        self.delivery_errors: list[KafkaError] = []
        self.unacked = 0
        self.committed: list[tuple[int, int]] = []  # (partition, offset) last committed

    # The clients ------------------------------------------------------------------------------
    def _consumer(self) -> Any:
        k = self.settings.kafka
        config: dict[str, Any] = {
            "bootstrap.servers": k.bootstrap_servers,
            "client.id": f"{self.settings.instance_id}.redrive",
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 52428800,
            "session.timeout.ms": 45000,
            **k.consumer,
            # Owned: the group, manual commits only, EOF events to know where to stop, and
            # no records of aborted transactions (an exactly-once dead letter never written).
            "group.id": self.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "logger": _LIBRDKAFKA_LOG,
        }
        return Consumer(config)

    def _producer(self) -> Any:
        k = self.settings.kafka
        config = producer_config(
            k.bootstrap_servers, k.producer, f"{self.settings.instance_id}.redrive"
        )
        if "message.timeout.ms" not in k.producer:
            # The connector waits for ever; a command gives up and says so (nothing is
            # committed then, so the next run sends those records again).
            config["message.timeout.ms"] = 120_000
        config.update(
            {
                "enable.idempotence": True,
                "acks": "all",
                "partitioner": "murmur2_random",
                "logger": _LIBRDKAFKA_LOG,
            }
        )
        config.pop("transactional.id", None)
        return Producer(config)

    # The run ---------------------------------------------------------------------------------
    def run(self) -> int:
        if self.settings.ops.log_level != "debug":
            # librdkafka's transient warnings (a coordinator still loading, a reconnect) are
            # retried by it; what fails for good is reported here, one line each.
            _LIBRDKAFKA_LOG.setLevel(logging.ERROR)
        try:
            consumer = self._consumer()
            producer = None if self.dry_run else self._producer()
        except KafkaException as exc:
            self._say(f"redrive: cannot create the Kafka clients: {exc.args[0].str()}")
            return EXIT_CONFIG
        try:
            code = self._prepare(consumer)
            if code is not None:
                return code
            return self._drive(consumer, producer)
        finally:
            self.progress.clear()
            consumer.close()

    def _prepare(self, consumer: Any) -> int | None:
        """Check the topics, find where to start and where to stop; an exit code on failure."""
        k = self.settings.kafka
        try:
            metadata = consumer.list_topics(timeout=15)
        except KafkaException as exc:
            self._say(
                f"redrive: cannot reach the Kafka brokers at {k.bootstrap_servers}: "
                f"{exc.args[0].str()}"
            )
            return EXIT_FAILURE
        targets = [self.args.to] if self.args.to else list(k.input_topics)
        missing = []
        for topic in [self.dlq, *targets]:
            info = metadata.topics.get(topic)
            if info is None or info.error is not None:
                missing.append(topic)
        if missing:
            for topic in missing:
                self._say(f"redrive: kafka: topic {topic!r} does not exist (create it first)")
            return EXIT_CONFIG

        selected = [
            p
            for p in sorted(metadata.topics[self.dlq].partitions)
            if self.filters.partition_selected(p)
        ]
        tps = [TopicPartition(self.dlq, p) for p in selected]
        try:
            committed: dict[int, int] = {}
            if not self.args.from_beginning and tps:
                found = self._retrying(lambda: consumer.committed(tps, timeout=15))
                for tp in found:
                    if tp.error is not None:
                        raise KafkaException(tp.error)
                    committed[tp.partition] = tp.offset
            for tp in tps:
                low, high = consumer.get_watermark_offsets(tp, timeout=15, cached=False)
                position = committed.get(tp.partition, _OFFSET_INVALID)
                start = low if position < 0 else max(position, low)
                self.partitions[tp.partition] = _Partition(start, high, start, start >= high)
        except KafkaException as exc:
            self._say(f"redrive: cannot read the positions on {self.dlq}: {exc.args[0].str()}")
            return EXIT_FAILURE
        return None

    def _drive(self, consumer: Any, producer: Any) -> int:
        todo = {p: s for p, s in self.partitions.items() if not s.done}
        total = sum(s.end - s.start for s in todo.values())
        self.progress.total = total
        if todo:
            consumer.assign([TopicPartition(self.dlq, p, s.start) for p, s in todo.items()])
        failure: str | None = None
        last_event = last_checkpoint = time.monotonic()
        limit: int | None = self.args.limit
        try:
            while todo and not self._limit_reached(limit):
                messages = consumer.consume(500, timeout=0.5)
                now = time.monotonic()
                if messages:
                    last_event = now
                elif now - last_event > self.args.timeout:
                    failure = (
                        f"no progress from the brokers for {self.args.timeout:g} s "
                        f"({self.counts.read} of {total} records read)"
                    )
                    break
                for message in messages:
                    if self._limit_reached(limit):
                        break
                    failure = self._take(consumer, producer, message, todo)
                    if failure:
                        break
                if failure:
                    break
                self.progress.show(self.counts, self.dry_run)
                if producer is not None and (
                    self.unacked >= CHECKPOINT_RECORDS
                    or (self.unacked and now - last_checkpoint >= CHECKPOINT_SECONDS)
                ):
                    failure = self._checkpoint(consumer, producer)
                    last_checkpoint = time.monotonic()
                    if failure:
                        break
        except KeyboardInterrupt:
            failure = "interrupted"
        self.progress.clear()
        if producer is not None and not (failure and self.delivery_errors):
            # Everything decided so far was produced: wait for it, then commit.
            checkpoint_failure = self._checkpoint(consumer, producer)
            failure = failure or checkpoint_failure
        self._summary(failure)
        return EXIT_FAILURE if failure else EXIT_OK

    def _limit_reached(self, limit: int | None) -> bool:
        return limit is not None and self.counts.sent >= limit

    def _take(
        self, consumer: Any, producer: Any, message: Any, todo: dict[int, _Partition]
    ) -> str | None:
        """Decide one fetched message; a failure text when the run must stop."""
        partition = message.partition()
        state = todo.get(partition)
        if state is None:
            return None  # done already: a record past the end, or a late EOF
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                # Nothing more to read (past control records of transactions too).
                state.next = max(state.next, min(message.offset(), state.end))
                self._finish(consumer, partition, todo)
                return None
            return f"reading {self.dlq} [{partition}]: {error.str()}"
        offset = message.offset()
        if offset >= state.end:
            self._finish(consumer, partition, todo)
            return None
        _, timestamp = message.timestamp()
        letter = DeadLetter(
            topic=message.topic(),
            partition=partition,
            offset=offset,
            timestamp_ms=timestamp if timestamp and timestamp > 0 else None,
            key=message.key(),
            value=message.value(),
            headers=list(message.headers() or ()),
        )
        failure = self._decide(producer, letter)
        if failure:
            return failure  # not sent: its position must not be committed
        state.next = offset + 1
        if state.next >= state.end:
            self._finish(consumer, partition, todo)
        return None

    def _finish(self, consumer: Any, partition: int, todo: dict[int, _Partition]) -> None:
        todo[partition].done = True
        del todo[partition]
        consumer.pause([TopicPartition(self.dlq, partition)])

    def _decide(self, producer: Any, letter: DeadLetter) -> str | None:
        self.counts.read += 1
        if not self.filters.matches(letter):
            self.counts.skipped += 1
            return None
        # An unreadable generation header (an invalid_input dead letter) is replaced: as 0.
        generation = record_generation(letter.headers) or 0
        new_generation = generation + 1
        if new_generation > self.args.max_generation:
            self.counts.refused += 1
            self._say(
                f"redrive: refused {letter.coordinates} (event {letter.event_id}, "
                f"{letter.kind or '?'}): generation {generation} is at the limit "
                f"--max-generation {self.args.max_generation}; it already failed after "
                f"{generation} redrive(s)"
            )
            return None
        target = self._target(letter)
        if target is None:
            self.counts.refused += 1
            self._say(
                f"redrive: refused {letter.coordinates} (event {letter.event_id}): it came "
                f"from {letter.source_topic!r}, not one of the input topics; name one with --to"
            )
            return None
        if self.dry_run:
            self.counts.sent += 1
            self.progress.clear()
            print(
                f"{letter.event_id}\t{letter.kind or '-'}\t{letter.error_code or '-'}\t"
                f"{letter.time}\t{letter.coordinates} -> {target} "
                f"(generation {new_generation})",
                file=self.out,
                flush=True,
            )
            return None
        headers = redrive_headers(letter.headers, new_generation, letter.coordinates)
        while True:
            try:
                producer.produce(
                    target,
                    letter.value,
                    key=letter.key,
                    headers=headers,
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:
                producer.poll(0.1)
            except KafkaException as exc:
                return f"sending {letter.coordinates} to {target}: {exc.args[0].str()}"
        self.counts.sent += 1
        self.unacked += 1
        producer.poll(0)
        return None

    def _target(self, letter: DeadLetter) -> str | None:
        if self.args.to:
            to: str = self.args.to
            return to
        inputs = self.settings.kafka.input_topics
        source = letter.source_topic
        if source in inputs:
            return source
        return inputs[0] if len(inputs) == 1 else None

    def _on_delivery(self, error: KafkaError | None, _message: Any) -> None:
        if error is not None:
            self.delivery_errors.append(error)

    def _checkpoint(self, consumer: Any, producer: Any) -> str | None:
        """Wait until every record sent is acknowledged, then commit the positions."""
        remaining = producer.flush(150)
        if remaining:
            return f"{remaining} record(s) not acknowledged by the brokers; nothing committed"
        if self.delivery_errors:
            return (
                f"{len(self.delivery_errors)} record(s) refused by the brokers "
                f"({self.delivery_errors[0].str()}); positions since the last commit kept"
            )
        self.unacked = 0
        offsets = [
            TopicPartition(self.dlq, p, s.next)
            for p, s in sorted(self.partitions.items())
            if s.next > s.start
        ]
        positions = [(tp.partition, tp.offset) for tp in offsets]
        if not offsets or positions == self.committed:
            return None
        try:
            result = self._retrying(lambda: consumer.commit(offsets=offsets, asynchronous=False))
        except KafkaException as exc:
            return f"committing the positions of group {self.group}: {exc.args[0].str()}"
        for tp in result or ():
            if tp.error is not None:
                return f"committing the positions of group {self.group}: {tp.error.str()}"
        self.committed = positions
        return None

    def _retrying(self, call: Callable[[], Any]) -> Any:
        """`call()`, again while the group coordinator is busy or moving (a new group's
        coordinator answers NOT_COORDINATOR for a moment), for up to --timeout seconds."""
        deadline = time.monotonic() + self.args.timeout
        while True:
            try:
                return call()
            except KafkaException as exc:
                error = exc.args[0]
                busy = error.retriable() or error.code() in _COORDINATOR_BUSY
                if not busy or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    # Output ----------------------------------------------------------------------------------
    def _say(self, line: str) -> None:
        self.progress.clear()
        print(line, file=self.err, flush=True)

    def _summary(self, failure: str | None) -> None:
        c = self.counts
        target = self.args.to or ", ".join(self.settings.kafka.input_topics)
        if self.dry_run:
            head = f"redrive (dry run): read {c.read}, would send {c.sent} to {target}"
            tail = "; nothing sent, nothing committed"
        else:
            head = f"redrive: read {c.read}, sent {c.sent} to {target}"
            if self.committed:
                tail = f"; position committed for group {self.group}"
            elif not failure:
                tail = f"; nothing new on {self.dlq} for group {self.group}"
            else:
                tail = ""
        limit = "; stopped at --limit" if self._limit_reached(self.args.limit) else ""
        print(
            f"{head}, skipped by filter {c.skipped}, refused {c.refused}{limit}{tail}",
            file=self.out,
            flush=True,
        )
        if c.skipped and self.committed:
            # The position moved past them: say so, or a later run "loses" them.
            self._say(
                f"redrive: note: {c.skipped} records left out by the filters were passed "
                f"over in group {self.group}; a later run in this group will not see them "
                "(use another --group for another selection, or --from-beginning)"
            )
        if failure:
            self._say(f"redrive: failed: {failure}")


@dataclass
class _Progress:
    """One self-rewriting line on stderr while there is work, only on a terminal."""

    stream: TextIO
    total: int = 0
    enabled: bool = field(default=False)
    _shown: bool = False
    _last: float = 0.0

    def __post_init__(self) -> None:
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty())

    def show(self, counts: Counts, dry_run: bool) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.2:
            return
        self._last = now
        share = f" ({counts.read * 100 // self.total}%)" if self.total else ""
        verb = "would send" if dry_run else "sent"
        self.stream.write(
            f"\rredrive: read {counts.read}/{self.total}{share}, {verb} {counts.sent}, "
            f"skipped {counts.skipped}, refused {counts.refused}\x1b[K"
        )
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False
