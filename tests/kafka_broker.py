"""A real single-node Apache Kafka broker (KRaft: broker + controller in one JVM) for tests
and benchmarks.

The broker runs from the Maven Central jars in ``tools/kafka/libs/`` (fetched on first use by
``tools/kafka/kafka-local.sh libs``) with JDK 17+. Everything it writes (server.properties,
the log dir, its log ``kafka.log``) lives under ``data_dir``; the log dir is formatted on the
first start only, so :meth:`KafkaBroker.restart` (and ``stop()`` + ``start()``) keeps the data.

    broker = KafkaBroker(tmp_path / "kafka")
    broker.start()
    try:
        use(broker.bootstrap_servers)  # "127.0.0.1:<port>"
        broker.restart()
    finally:
        broker.stop()

Only the standard library is used here (admin helpers are in ``tests/kafka_admin.py``). The
server settings mirror those of ``tools/kafka/kafka-local.sh``: keep the two in step.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType

REPO_ROOT = Path(__file__).resolve().parents[1]
KAFKA_TOOLS_DIR = REPO_ROOT / "tools" / "kafka"
LIBS_DIR = Path(os.environ.get("KAFKA_LOCAL_LIBS", KAFKA_TOOLS_DIR / "libs"))
LOG4J_CONFIG = KAFKA_TOOLS_DIR / "log4j2.properties"
KAFKA_LOCAL_SH = KAFKA_TOOLS_DIR / "kafka-local.sh"

READY_LINE = "Kafka Server started"
JVM_OPTIONS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

# One node on loopback: every internal topic at replication 1 / min ISR 1, plus settings that
# make tests fast (no initial rebalance delay, few internal partitions, short group sessions
# for fast failover under both the classic protocol and KIP-848) and room for 8 MiB records.
BASE_PROPERTIES: dict[str, str] = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    "num.partitions": "1",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "3",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "3",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "share.coordinator.state.topic.num.partitions": "1",
    "auto.create.topics.enable": "false",
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    "group.consumer.min.session.timeout.ms": "1000",
    "group.consumer.session.timeout.ms": "6000",
    "group.consumer.min.heartbeat.interval.ms": "500",
    "group.consumer.heartbeat.interval.ms": "500",
    # A broker restarted after SIGKILL waits for its old registration to expire
    # (DUPLICATE_BROKER_REGISTRATION) before it starts: 9 s by default.
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "1000",
    "num.network.threads": "2",
    "num.io.threads": "2",
    "log.cleaner.dedupe.buffer.size": "33554432",
    "message.max.bytes": "10485760",
    "replica.fetch.max.bytes": "10485760",
}


class KafkaBrokerError(RuntimeError):
    """The broker could not be started (the message ends with the tail of its log)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def new_cluster_id() -> str:
    """A cluster id as ``StorageTool random-uuid`` makes it, without starting a JVM."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not cid.startswith("-"):
            return cid


_libs_lock = threading.Lock()
_libs_ready = False


def ensure_libs() -> Path:
    """Make sure the broker jars are in tools/kafka/libs/ (``kafka-local.sh libs``: a no-op
    when they match tools/kafka/pom.xml; fetches them with Maven otherwise)."""
    global _libs_ready
    with _libs_lock:
        if "KAFKA_LOCAL_LIBS" in os.environ:
            if not any(LIBS_DIR.glob("kafka_2.13-*.jar")):
                raise KafkaBrokerError(f"no Kafka jars in KAFKA_LOCAL_LIBS={LIBS_DIR}")
        elif not _libs_ready:
            subprocess.run([str(KAFKA_LOCAL_SH), "libs"], check=True, stdin=subprocess.DEVNULL)
        _libs_ready = True
    return LIBS_DIR


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise KafkaBrokerError("java (JDK 17+) not found on PATH")
    return java


# Brokers whose process runs: held here so that none is garbage-collected while running.
_live: set[KafkaBroker] = set()


@atexit.register
def _kill_leftovers() -> None:  # a backstop: fixtures stop their brokers themselves
    for broker in list(_live):
        with contextlib.suppress(Exception):
            broker.kill()


class KafkaBroker:
    """One single-node KRaft broker process on 127.0.0.1, its state under ``data_dir``.

    Ports are picked once (free ones unless given) and kept for the object's life, so a
    restart comes back on the same ``bootstrap_servers``.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        controller_port: int | None = None,
        extra_properties: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port if port is not None else free_port()
        self.controller_port = controller_port if controller_port is not None else free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self.extra_properties = dict(extra_properties or {})
        self.log_dir = self.data_dir / "logs"
        self.properties_path = self.data_dir / "server.properties"
        self.log_path = self.data_dir / "kafka.log"
        self.cluster_id: str | None = None
        self.last_start_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- properties -----------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self.is_running() else None

    def server_properties(self) -> dict[str, str]:
        props = dict(BASE_PROPERTIES)
        props.update(
            {
                "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
                "listeners": (
                    f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
                ),
                "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
                "log.dirs": str(self.log_dir),
            }
        )
        props.update(self.extra_properties)
        return props

    # -- lifecycle ------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 90) -> None:
        """Start the broker; return once it accepts clients. No-op if it already runs."""
        if self.is_running():
            return
        self._reap()
        for port in (self.port, self.controller_port):
            if port_open(port):
                raise KafkaBrokerError(f"127.0.0.1:{port} is already in use by another process")
        libs = ensure_libs()
        java = _java()
        classpath = str(libs / "*")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_properties()
        if not (self.log_dir / "meta.properties").exists():
            self._format(java, classpath)

        started = time.monotonic()
        with self.log_path.open("ab") as log:
            log_offset = log.tell()
            self._proc = subprocess.Popen(
                [
                    java,
                    *JVM_OPTIONS,
                    f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                    "-cp",
                    classpath,
                    "kafka.Kafka",
                    str(self.properties_path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,  # a Ctrl-C reaches pytest, which then stops us
            )
        _live.add(self)
        deadline = started + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise KafkaBrokerError(
                    f"Kafka broker exited with code {code} during start-up\n{self.log_tail()}"
                )
            if port_open(self.port) and self._log_has(READY_LINE, log_offset):
                break
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.kill()
                raise KafkaBrokerError(
                    f"Kafka broker on {self.bootstrap_servers} not ready within {timeout:g}s"
                    f" (killed it)\n{tail}"
                )
            time.sleep(0.1)
        self.last_start_seconds = time.monotonic() - started

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL if it is still alive after ``timeout``."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        self._reap()

    def kill(self) -> None:
        """SIGKILL: a crash, no clean shutdown (the next start recovers the log)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        self._reap()

    def restart(self, timeout: float = 90) -> None:
        """Stop (cleanly) and start again on the same data dir and ports."""
        self.stop()
        self.start(timeout=timeout)

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"KafkaBroker({self.bootstrap_servers}, {state}, data_dir={self.data_dir})"

    # -- diagnostics ----------------------------------------------------------------------

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return f"(no broker log at {self.log_path})"
        all_lines = text.splitlines()
        errors = [line for line in all_lines if " ERROR " in line][:5]
        tail = "\n".join(all_lines[-lines:])
        first_errors = ""
        if errors:
            first_errors = "--- first ERROR lines ---\n" + "\n".join(errors) + "\n"
        return f"{first_errors}--- last {lines} lines of {self.log_path} ---\n{tail}\n---"

    # -- internals ------------------------------------------------------------------------

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None
        if self._proc is None:
            _live.discard(self)

    def _write_properties(self) -> None:
        lines = ["# Generated by tests/kafka_broker.py: single-node KRaft broker on loopback."]
        lines += [f"{key}={value}" for key, value in self.server_properties().items()]
        self.properties_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _format(self, java: str, classpath: str) -> None:
        if self.log_dir.exists():
            shutil.rmtree(self.log_dir)
        self.cluster_id = new_cluster_id()
        result = subprocess.run(
            [
                java,
                "-Xmx256m",
                f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                self.cluster_id,
                "--config",
                str(self.properties_path),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
        )
        if result.returncode != 0:
            output = result.stdout.decode("utf-8", errors="replace")
            raise KafkaBrokerError(f"formatting {self.log_dir} failed:\n{output}")

    def _log_has(self, needle: str, offset: int) -> bool:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return needle.encode() in log.read()
        except FileNotFoundError:
            return False
