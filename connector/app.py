"""The Connector: wires the parts, owns start, drain and stop, and the only signal handlers.

Start: ops server (not ready) -> topic and Kit checks (a missing topic or unknown Kit is a
configuration error; an unreachable broker or API is waited for) -> producer -> consumer
-> with webhooks: the completions producer and reader, then the webhook receiver.
Stop (first SIGTERM/SIGINT, or --stop-when-idle): readiness goes false, fetching stops,
in-flight records get `shutdown.grace_seconds`, outputs are flushed, offsets committed,
the consumer leaves the group. A second signal skips the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from connector import metrics
from connector.config import Settings
from connector.errors import EXIT_FAILURE, EXIT_OK, StartupCheckError
from connector.kafka_sink import KafkaSink, producer_config
from connector.kafka_source import TP, Capacity, KafkaSource, PauseControl, consumer_config
from connector.ops import OpsServer
from connector.pipeline import Pipeline, PipelineSettings
from connector.records import Decoder
from connector.semarize.client import SemarizeClient
from connector.semarize.errors import (
    ConfigurationRejected,
    HaltError,
    RecordRejected,
    RetryableError,
)
from connector.semarize.retry import AdaptiveLimit, ApiGate, RateLimitSignal, TokenBucket
from connector.semarize.transport import AiohttpTransport, Transport
from connector.tracker import RunTracker, TrackerSettings
from connector.transactions import TransactionalCheckpointer
from connector.webhooks import CompletionRegistry, CompletionsReader, WebhookReceiver, reader_config

log = logging.getLogger("connector.app")

_IDLE_CHECK_SECONDS = 0.5
_CIRCUIT_PROBE_CHECK_SECONDS = 0.5


class Connector:
    def __init__(
        self,
        settings: Settings,
        *,
        stop_when_idle: float | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.settings = settings
        self._stop_when_idle = stop_when_idle
        s = settings
        self.gate = ApiGate()
        self.rate_signal = RateLimitSignal()
        self.rate_limit = TokenBucket(s.rate_limit.requests_per_second, signal=self.rate_signal)
        self._input_partitions = 0  # of all input topics, for rate_limit.scope: group
        self.capacity = Capacity(s.pipeline.max_in_flight)
        self.adaptive = AdaptiveLimit(
            s.pipeline.max_in_flight, self._set_limit, signal=self.rate_signal
        )
        self.client = SemarizeClient(
            transport
            or AiohttpTransport(
                pool_size=max(10, min(s.pipeline.max_in_flight, 1000)),
                connect_timeout=s.semarize.connect_timeout_seconds,
                read_timeout=s.semarize.read_timeout_seconds,
            ),
            base_url=s.semarize.api_url,
            api_key=s.semarize.api_key.reveal(),
            rate_limit=self.rate_limit,
            signal=self.rate_signal,
        )
        self.webhooks = s.webhooks.enabled
        self.completions = (
            CompletionRegistry(keep_seconds=s.webhooks.poll_fallback_seconds)
            if self.webhooks
            else None
        )
        self.tracker = RunTracker(
            self.client,
            self.gate,
            TrackerSettings(
                deadline_seconds=s.run.deadline_seconds,
                max_create_attempts=s.semarize.max_create_attempts,
                poll_initial_seconds=s.semarize.poll_initial_seconds,
                poll_max_seconds=s.semarize.poll_max_seconds,
                retry_max_seconds=s.semarize.retry_max_seconds,
                webhook_fallback_seconds=s.webhooks.poll_fallback_seconds,
            ),
            adaptive=self.adaptive,
            completions=self.completions,
        )
        self.decoder = Decoder(
            mapping=s.pipeline.mapping,
            kit_code=s.semarize.kit_code,
            kit_version_id=s.semarize.kit_version_id,
            run_type=s.semarize.run_type,
            mode=s.semarize.mode,
            salt=s.pipeline.idempotency_salt.reveal(),
            max_bytes=s.pipeline.input_max_bytes,
        )
        self.pauses = PauseControl()
        self.exactly_once = s.pipeline.processing_guarantee == "exactly_once"
        producer_settings = producer_config(
            s.kafka.bootstrap_servers, s.kafka.producer, s.instance_id
        )
        if self.exactly_once:
            # Stable per instance: a restarted instance fences its dead predecessor at once.
            producer_settings["transactional.id"] = f"{s.kafka.group_id}.{s.instance_id}"
            producer_settings.setdefault("transaction.timeout.ms", 60000)
        self.sink = KafkaSink(producer_settings)
        self.pipeline = Pipeline(
            PipelineSettings(
                output_topic=s.kafka.output_topic,
                dlq_topic=s.kafka.dlq_topic,
                group_id=s.kafka.group_id,
                instance_id=s.instance_id,
                ordering_by_key=s.pipeline.ordering == "key",
                commit_interval=min(s.pipeline.commit_interval_seconds, 5.0),
            ),
            decoder=self.decoder,
            tracker=self.tracker,
            sink=self.sink,
            capacity=self.capacity,
            pauses=self.pauses,
            healthy_clock=self.gate.healthy_clock,
        )
        self.transactions: TransactionalCheckpointer | None = None
        self._revoke_budget = min(s.shutdown.grace_seconds, 60.0)
        self.source = KafkaSource(
            consumer_config(
                bootstrap_servers=s.kafka.bootstrap_servers,
                group_id=s.kafka.group_id,
                auto_offset_reset=s.kafka.auto_offset_reset,
                client_id=s.instance_id,
                extra=s.kafka.consumer,
                exactly_once=s.pipeline.processing_guarantee == "exactly_once",
            ),
            list(s.kafka.input_topics),
            capacity=self.capacity,
            pauses=self.pauses,
            on_records=self.pipeline.on_records,
            on_assign=self._on_assign,
            on_revoke=self._hand_over,
            on_commit=self.pipeline.on_commit,
            revoke_budget=self._revoke_budget,
        )
        self.pipeline.bind_commit(self.source.commit)
        if self.exactly_once:
            self.transactions = TransactionalCheckpointer(
                self.sink.producer,
                partitions=self.pipeline.partitions,
                pauses=self.pauses,
                group_metadata=lambda: self.source.group_metadata,
                on_committed=self.pipeline.on_commit,
                interval=min(s.pipeline.commit_interval_seconds, 1.0),
            )
            self.pipeline.use_transactions(self.transactions)
        self.completions_sink: KafkaSink | None = None
        self.completions_reader: CompletionsReader | None = None
        self.receiver: WebhookReceiver | None = None
        if self.completions is not None:
            self._wire_webhooks(producer_settings)
        self.gate.listeners.append(self._on_gate_change)
        self.ops = OpsServer(self, host=s.ops.host, port=s.ops.port)
        self._stop = asyncio.Event()
        self._force = False
        self._checks_done = False
        self._stopping = False
        self._started_at = time.monotonic()
        self._tasks: list[asyncio.Task[Any]] = []
        self.exit_code = EXIT_OK

    def _wire_webhooks(self, producer_settings: dict[str, Any]) -> None:
        """Receiver -> completions topic -> reader -> registry (docs/architecture.md)."""
        s = self.settings
        assert self.completions is not None
        # Its own producer: never transactional (a completion must not wait for, or abort
        # with, an output transaction), and quick to give up, so that the provider gets a
        # 503 and delivers again rather than a timeout.
        config = {k: v for k, v in producer_settings.items() if not k.startswith("transaction")}
        config["client.id"] = f"{s.instance_id}.completions"
        config["message.timeout.ms"] = 7000
        config["linger.ms"] = 0
        self.completions_sink = KafkaSink(config)
        # A KafkaSink reports its queue depth; that gauge is the output producer's.
        metrics.PRODUCER_QUEUE_DEPTH.set_function(lambda: len(self.sink.producer))
        topic = s.kafka.completions_topic
        sink = self.completions_sink

        async def publish(key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
            await sink.write(topic, key, value, headers)

        self.receiver = WebhookReceiver(
            host=s.webhooks.host,
            port=s.webhooks.port,
            secret=s.webhooks.secret.reveal(),
            publish=publish,
        )
        self.completions_reader = CompletionsReader(
            reader_config(
                bootstrap_servers=s.kafka.bootstrap_servers,
                group_id=s.kafka.group_id,
                instance_id=s.instance_id,
                extra=s.kafka.consumer,
            ),
            topic,
            lookback_seconds=s.webhooks.poll_fallback_seconds,
            on_completions=self.completions.deliver_many,
        )

    # --- health ----------------------------------------------------------------------------
    def liveness(self) -> tuple[bool, dict[str, object]]:
        details: dict[str, object] = {}
        ok = True
        if self._checks_done:
            if not self.source.alive and not self._stopping:
                ok, details["consumer"] = False, "consumer thread stopped"
            if not self.sink.alive and not self._stopping:
                ok, details["producer"] = False, "producer thread stopped"
            reader, sink = self.completions_reader, self.completions_sink
            if reader is not None and not reader.alive and not self._stopping:
                ok, details["completions_reader"] = False, "completions reader thread stopped"
            if sink is not None and not sink.alive and not self._stopping:
                ok, details["completions_producer"] = False, "completions producer thread stopped"
        stuck = self._stuck_partitions()
        if stuck:
            ok, details["stuck_partitions"] = False, stuck
        return ok, details

    def _stuck_partitions(self) -> list[str]:
        """Partitions with work waiting (lag, or records in flight) whose committable offset
        has not moved for health.stuck_after_seconds while the API is healthy and nothing is
        halted: only a restart helps those."""
        paused_all, halted = self.pauses.snapshot()
        if not self.gate.healthy or paused_all:
            return []  # an outage or a halt must never restart a healthy pod
        limit = self.settings.stuck_after_seconds
        now = time.monotonic()
        stuck = []
        for tp, work in self.pipeline.partitions.items():
            waiting = work.offsets.unfinished or self.source.lag.get(tp, (0, 0))[0] > 0
            if waiting and tp not in halted and now - work.offsets.moved_at > limit:
                stuck.append(f"{tp[0]}/{tp[1]}")
        return stuck

    def readiness(self) -> tuple[bool, dict[str, object]]:
        details: dict[str, object] = {
            "assigned_partitions": len(self.pipeline.partitions),
            "in_flight": self.capacity.held,
            "circuit": self.gate.state.name.lower(),
        }
        ok = True
        if self._stopping:
            ok, details["stopping"] = False, True
        if not self._checks_done:
            ok, details["starting"] = False, "start-up checks not passed yet"
        if self.gate.halt_error is not None:
            ok = False
            details["halted"] = self.gate.halt_error.error_code or str(self.gate.halt_error.status)
        if self._checks_done and not self.source.broker_up:
            ok = False
            details["broker"] = self.source.last_broker_error or "unreachable"
        return ok, details

    # --- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._install_signals(loop)
        metrics.CONCURRENCY_LIMIT.set(self.settings.pipeline.max_in_flight)
        await self.ops.start()
        log.info(
            "connector starting",
            extra={
                "instance_id": self.settings.instance_id,
                "group_id": self.settings.kafka.group_id,
                "ops_port": self.ops.port,
            },
        )
        try:
            if not await self._startup_checks():
                return self.exit_code
            if self.transactions is not None:
                await asyncio.to_thread(self.sink.producer.init_transactions, 60)
            # Webhooks first: a port that cannot be bound stops the start before the
            # consumer joins the group.
            if not await self._start_webhooks(loop):
                return self.exit_code
            self.sink.start(loop)
            self.source.start(loop)
            self._checks_done = True
            committer = (
                self.transactions.run() if self.transactions else self.pipeline.commit_loop()
            )
            self._tasks = [
                asyncio.create_task(committer, name="commit"),
                asyncio.create_task(self._halt_probe(), name="halt-probe"),
                asyncio.create_task(self._circuit_probe(), name="circuit-probe"),
                asyncio.create_task(self._summary(), name="summary"),
                asyncio.create_task(self._lag_probe(), name="lag"),
                asyncio.create_task(self._watch_threads(), name="watch"),
            ]
            if self._stop_when_idle is not None:
                self._tasks.append(asyncio.create_task(self._idle_watch(), name="idle"))
            await self._stop.wait()
            await self._shutdown()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._stop_webhooks()
            await self.client.aclose()
            await self.ops.stop()
            self._restore_signals(loop)
        log.info("connector stopped", extra={"exit_code": self.exit_code})
        return self.exit_code

    def request_stop(self, *, force: bool = False) -> None:
        if force or self._stop.is_set():
            self._force = True
        self._stop.set()

    async def _shutdown(self) -> None:
        self._stopping = True
        self.pauses.mark("shutdown", True)
        grace = 0.0 if self._force else self.settings.shutdown.grace_seconds
        log.info("stopping: no new records; finishing in-flight work", extra={"grace": grace})
        drain = asyncio.create_task(self.pipeline.drain(grace))
        while not drain.done():
            await asyncio.wait({drain}, timeout=0.2)
            if self._force and not drain.done():
                drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drain
        self._revoke_budget = 0.0
        self.source.stop()
        # The rest must fit in the 15 s the Helm chart adds to the grace period.
        await asyncio.to_thread(self.source.closed.wait, 8.0)
        await self._stop_webhooks()
        remaining = await asyncio.to_thread(self.sink.flush, 5.0)
        if remaining:
            log.warning(
                "%d records not acknowledged at shutdown (offsets not committed)", remaining
            )
        await asyncio.to_thread(self.sink.close, 1.0)

    async def _start_webhooks(self, loop: asyncio.AbstractEventLoop) -> bool:
        if self.receiver is None:
            return True
        assert self.completions_sink is not None and self.completions_reader is not None
        self.completions_sink.start(loop)
        self.completions_reader.start(loop)
        try:
            await self.receiver.start()
        except OSError as exc:
            log.error("webhooks: cannot listen on port %s: %s", self.settings.webhooks.port, exc)
            self.exit_code = EXIT_FAILURE
            return False
        log.info(
            "webhook receiver listening",
            extra={
                "webhooks_port": self.receiver.port,
                "completions_topic": self.settings.kafka.completions_topic,
            },
        )
        return True

    async def _stop_webhooks(self) -> None:
        """After the drain: in-flight runs could still be completed by a webhook until then."""
        if self.receiver is not None:
            await self.receiver.stop()
        reader = self.completions_reader
        if reader is not None and reader.alive:
            reader.stop()
            await asyncio.to_thread(reader.closed.wait, 10.0)
        sink = self.completions_sink
        if sink is not None and sink.alive:
            await asyncio.to_thread(sink.close, 1.0)

    async def _hand_over(self, tps: list[TP], lost: bool) -> dict[TP, int]:
        offsets = await self.pipeline.revoke(
            tps, lost, 0.0 if self._stopping else self._revoke_budget
        )
        self._share_rate_limit()
        return offsets

    def _on_assign(self, tps: list[TP]) -> None:
        self.pipeline.on_assign(tps)
        self._share_rate_limit()

    def _share_rate_limit(self) -> None:
        """rate_limit.scope: group — this replica's share, by its part of the partitions."""
        rl = self.settings.rate_limit
        if rl.scope != "group" or not rl.requests_per_second or not self._input_partitions:
            return
        share = len(self.pipeline.partitions) / self._input_partitions
        # Never 0 (that would mean "no limit"): a replica without partitions may still
        # finish runs it tracks.
        self.rate_limit.set_ceiling(max(1.0, rl.requests_per_second * share))
        log.info(
            "rate limit share updated",
            extra={"requests_per_second": round(self.rate_limit.rate, 2), "share": share},
        )

    def _set_limit(self, limit: int) -> None:
        self.capacity.limit = limit

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)

    def _restore_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stop.is_set():
            log.warning("second %s: stopping now without waiting", sig.name)
            self.request_stop(force=True)
        else:
            log.info("%s received: draining (send again to stop at once)", sig.name)
            self.request_stop()

    def _on_gate_change(self) -> None:
        self.pauses.mark("api", self.gate.blocks_consumption)
        halted = self.gate.halt_error
        for reason in ("credentials", "configuration"):
            metrics.HALTED.labels(reason=reason).set(0)
        if halted is not None:
            reason = "configuration" if isinstance(halted, ConfigurationRejected) else "credentials"
            metrics.HALTED.labels(reason=reason).set(1)

    # --- start-up checks -----------------------------------------------------------------------
    async def _startup_checks(self) -> bool:
        try:
            await self._check_topics()
            await self._check_kit()
        except StartupCheckError as exc:
            for problem in exc.problems:
                log.error(problem)
            self.exit_code = exc.exit_code
            return False
        return not self._stop.is_set()

    async def _check_topics(self) -> None:
        s = self.settings
        wanted = [*s.kafka.input_topics, s.kafka.output_topic, s.kafka.dlq_topic]
        if s.webhooks.enabled:
            wanted.append(s.kafka.completions_topic)
        admin = _admin_client(s)
        waited = False
        while not self._stop.is_set():
            try:
                metadata = await asyncio.to_thread(admin.list_topics, timeout=5)
            except KafkaException as exc:
                if not waited:
                    log.warning("waiting for Kafka at %s: %s", s.kafka.bootstrap_servers, exc)
                    waited = True
                await asyncio.sleep(2)
                continue
            missing = [t for t in wanted if t not in metadata.topics]
            self._input_partitions = sum(
                len(metadata.topics[t].partitions)
                for t in s.kafka.input_topics
                if t in metadata.topics
            )
            if missing:
                raise StartupCheckError(
                    [f"kafka: topic {t!r} does not exist (create it first)" for t in missing]
                )
            self.source.broker_up = True  # it just answered; statistics take over from here
            return

    async def _check_kit(self) -> None:
        s = self.settings.semarize
        waited = False
        while not self._stop.is_set():
            try:
                await self.client.kit_schema(kit_code=s.kit_code, kit_version_id=s.kit_version_id)
                return
            except HaltError as exc:
                if exc.error_code in ("kit_not_found", "kit_version_not_found") or isinstance(
                    exc, ConfigurationRejected
                ):
                    raise StartupCheckError(
                        [
                            f"semarize: the configured Kit {_kit_name(s)} is unknown to the "
                            f"API ({exc.error_code}); set by semarize.kit_code / "
                            "semarize.kit_version_id or SEMARIZE_KIT_CODE / "
                            "SEMARIZE_KIT_VERSION_ID"
                        ]
                    ) from exc
                self.gate.halt(exc)  # bad key: start halted, probe until it works
                return
            except RecordRejected as exc:
                raise StartupCheckError([f"semarize: the Kit check was rejected ({exc})"]) from exc
            except RetryableError as exc:
                if not waited:
                    log.warning("waiting for the Semarize API at %s: %s", s.api_url, exc)
                    waited = True
                await asyncio.sleep(2)

    # --- background tasks ----------------------------------------------------------------------
    async def _halt_probe(self) -> None:
        s = self.settings.semarize
        while True:
            await asyncio.sleep(s.halt_probe_seconds)
            if self.gate.halt_error is None:
                continue
            try:
                await self.client.kit_schema(kit_code=s.kit_code, kit_version_id=s.kit_version_id)
            except (HaltError, RetryableError, RecordRejected):
                continue
            self.gate.resume()

    async def _circuit_probe(self) -> None:
        """Probes an open circuit when no record is there to do it (see take_idle_probe)."""
        s = self.settings.semarize
        while True:
            await asyncio.sleep(_CIRCUIT_PROBE_CHECK_SECONDS)
            if not self.gate.take_idle_probe():
                continue
            try:
                await self.client.kit_schema(kit_code=s.kit_code, kit_version_id=s.kit_version_id)
            except RetryableError:
                self.gate.record_failure()  # still failing: open again, for longer
                continue
            except HaltError as exc:
                self.gate.probe_finished()
                self.gate.halt(exc)
                continue
            except RecordRejected:
                self.gate.probe_finished()
                continue
            self.gate.record_success()

    async def _watch_threads(self) -> None:
        while True:
            await asyncio.sleep(1)
            if self.transactions is not None and self.transactions.fatal is not None:
                self.exit_code = EXIT_FAILURE
                self.request_stop(force=True)
                return
            if self.source.fatal_error is not None:
                log.error("stopping: fatal Kafka error %s", self.source.fatal_error.str())
                self.exit_code = EXIT_FAILURE
                self.request_stop()
                return
            if not self.source.alive and not self._stopping:
                log.error("stopping: the consumer thread died")
                self.exit_code = EXIT_FAILURE
                self.request_stop(force=True)
                return

    async def _summary(self) -> None:
        interval = self.settings.ops.summary_interval_seconds
        last_finished = 0
        while True:
            await asyncio.sleep(interval)
            finished = self.pipeline.finished_total
            log.info(
                "summary",
                extra={
                    "records_per_second": round((finished - last_finished) / interval, 2),
                    "in_flight": self.capacity.held,
                    "lag": sum(max(0, lag) for lag, _ in self.source.lag.values()),
                    "dead_letters": self.pipeline.dead_letters_total,
                    "finished": finished,
                    "circuit": self.gate.state.name.lower(),
                    "halted": self.gate.halt_error is not None,
                },
            )
            last_finished = finished

    async def _lag_probe(self) -> None:
        """Lag from the brokers' end offsets every 10 s. librdkafka's statistics stop
        refreshing a paused partition's end offset, so during a halt, an outage or
        back-pressure, exactly when lag matters, they would report a frozen number."""
        from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]

        s = self.settings
        admin = _admin_client(s)
        while True:
            await asyncio.sleep(10)
            if s.rate_limit.scope == "group" and s.rate_limit.requests_per_second:
                await self._recount_input_partitions(admin)
            tps = list(self.pipeline.partitions)
            if not tps:
                continue
            latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
            request = {TopicPartition(t, p): latest for t, p in tps}
            try:
                futures = admin.list_offsets(request, request_timeout=5)
                ends = {
                    (tp.topic, tp.partition): (await asyncio.wrap_future(f)).offset
                    for tp, f in futures.items()
                }
            except KafkaException as exc:
                log.debug("lag probe failed: %s", exc)
                continue  # broker unreachable: readiness already says so
            unread = [
                tp
                for tp, work in self.pipeline.partitions.items()
                if work.offsets.next_offset is None and work.offsets.committed is None
            ]
            starts = await self._start_positions(admin, unread) if unread else {}
            for tp, high in ends.items():
                work = self.pipeline.partitions.get(tp)
                if work is None or high < 0:
                    continue
                labels = {"topic": tp[0], "partition": str(tp[1])}
                # A partition paused since its assignment (full, halted) has no position of
                # its own yet: its lag counts from where its consumption will start.
                committed = work.offsets.committed
                if committed is None:
                    committed = starts.get(tp)
                position = work.offsets.next_offset or committed
                if position is not None:
                    lag = max(0, high - position)
                    metrics.CONSUMER_LAG.labels(**labels).set(lag)
                    self.source.lag[tp] = (lag, high)
                if committed is not None:
                    metrics.COMMITTABLE_LAG.labels(**labels).set(max(0, high - committed))

    async def _start_positions(self, admin: Any, tps: list[TP]) -> dict[TP, int]:
        """Where consumption of partitions not read from yet starts: the group's committed
        offset, else the end `auto_offset_reset` names."""
        from confluent_kafka import ConsumerGroupTopicPartitions
        from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]

        group = self.settings.kafka.group_id
        positions: dict[TP, int] = {}
        try:
            request = [ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in tps])]
            answer = await asyncio.wrap_future(
                admin.list_consumer_group_offsets(request, request_timeout=5)[group]
            )
            for tp in answer.topic_partitions:
                if tp.offset >= 0:
                    positions[(tp.topic, tp.partition)] = tp.offset
            missing = [tp for tp in tps if tp not in positions]
            if missing:
                earliest = self.settings.kafka.auto_offset_reset == "earliest"
                spec = OffsetSpec.earliest() if earliest else OffsetSpec.latest()  # type: ignore[no-untyped-call]
                futures = admin.list_offsets(
                    {TopicPartition(t, p): spec for t, p in missing}, request_timeout=5
                )
                for ktp, future in futures.items():
                    offset = (await asyncio.wrap_future(future)).offset
                    if offset >= 0:
                        positions[(ktp.topic, ktp.partition)] = offset
        except KafkaException as exc:
            log.debug("start positions unknown: %s", exc)
        return positions

    async def _recount_input_partitions(self, admin: Any) -> None:
        """Partitions added to an input topic change every replica's rate share."""
        try:
            metadata = await asyncio.to_thread(admin.list_topics, timeout=5)
        except KafkaException:
            return
        total = sum(
            len(metadata.topics[t].partitions)
            for t in self.settings.kafka.input_topics
            if t in metadata.topics
        )
        if total and total != self._input_partitions:
            self._input_partitions = total
            self._share_rate_limit()

    async def _idle_watch(self) -> None:
        assert self._stop_when_idle is not None
        needed = self._stop_when_idle
        idle_since: float | None = None
        while not self._stop.is_set():
            await asyncio.sleep(_IDLE_CHECK_SECONDS)
            now = time.monotonic()
            quiet = (
                self.capacity.held == 0
                and self.gate.healthy
                and now - self.pipeline.last_record_at >= min(needed, 1.0)
                and now - self._started_at >= needed
                and await asyncio.wrap_future(self.source.call(self._drained))
            )
            if not quiet:
                idle_since = None
                continue
            if idle_since is None:
                idle_since = now
            elif now - idle_since >= needed:
                log.info("idle for %.1f s with nothing in flight: stopping", needed)
                self.request_stop()
                return

    def _drained(self, consumer: Any) -> bool:
        """True when every assigned partition has been read and committed to its end."""
        tps = [TopicPartition(t, p) for t, p in self.source.assigned]
        if not tps:
            return False
        try:
            committed = consumer.committed(tps, timeout=5)
        except KafkaException:
            return False
        for tp in committed:
            _low, high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            if high > 0 and (tp.offset < 0 or tp.offset < high):
                return False
        return True


def _kit_name(s: Any) -> str:
    if s.kit_version_id:
        return f"version {s.kit_version_id!r}"
    return repr(s.kit_code)


def _admin_client(settings: Settings) -> AdminClient:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "logger": logging.getLogger("librdkafka.admin"),
        **_security(settings),
    }
    return AdminClient(config)


def _security(settings: Settings) -> dict[str, Any]:
    """The consumer's security settings, so the admin client can connect too."""
    keys = ("security.protocol", "sasl.", "ssl.")
    return {k: v for k, v in settings.kafka.consumer.items() if k.startswith(keys)}
