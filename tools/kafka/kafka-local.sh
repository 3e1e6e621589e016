#!/usr/bin/env bash
# A real local Apache Kafka broker (KRaft, one node: broker + controller) from Maven Central jars.
#
#   tools/kafka/kafka-local.sh libs     copy the broker's runtime jars into tools/kafka/libs/
#   tools/kafka/kafka-local.sh up       start it on 127.0.0.1:$KAFKA_LOCAL_PORT (default 9092)
#   tools/kafka/kafka-local.sh down     stop it (SIGTERM, SIGKILL after 30 s)
#   tools/kafka/kafka-local.sh status   say whether it runs (exit 0 if it does, 3 if not)
#   tools/kafka/kafka-local.sh reset    stop it and delete its data
#
# Environment:
#   KAFKA_LOCAL_PORT             client (PLAINTEXT) port, default 9092
#   KAFKA_LOCAL_CONTROLLER_PORT  controller port, default: the one stored with the data, else
#                                port+1 if free, else any free port
#   KAFKA_LOCAL_START_TIMEOUT    seconds `up` waits for the broker to be ready, default 90
#   KAFKA_LOCAL_HEAP             JVM heap options, default "-Xms256m -Xmx512m"
#
# State (data, server.properties, pid, broker log) lives in <repo>/.local/kafka-<port>/ and is
# kept across down/up; `reset` wipes it. The broker's server settings mirror those of
# tests/kafka_broker.py (the test suite's private broker): keep the two in step.
set -euo pipefail

KAFKA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$KAFKA_DIR/../.." && pwd)"
POM="$KAFKA_DIR/pom.xml"
LIBS="$KAFKA_DIR/libs"
STAMP="$LIBS/.stamp"
LOG4J_CONFIG="$KAFKA_DIR/log4j2.properties"

PORT="${KAFKA_LOCAL_PORT:-9092}"
START_TIMEOUT="${KAFKA_LOCAL_START_TIMEOUT:-90}"
HEAP="${KAFKA_LOCAL_HEAP:--Xms256m -Xmx512m}"
STATE_DIR="$REPO_ROOT/.local/kafka-$PORT"
DATA_DIR="$STATE_DIR/data"
PROPS="$STATE_DIR/server.properties"
PID_FILE="$STATE_DIR/kafka.pid"
LOG_FILE="$STATE_DIR/kafka.log"

log() { printf 'kafka-local: %s\n' "$*"; }
die() {
    printf 'kafka-local: error: %s\n' "$*" >&2
    exit 1
}

if ! [[ "$PORT" =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65534)); then
    die "KAFKA_LOCAL_PORT must be a port number, got '$PORT'"
fi

# ---------------------------------------------------------------------------------------------
# libs
# ---------------------------------------------------------------------------------------------

pom_checksum() { sha256sum "$POM" | cut -d' ' -f1; }

libs_fresh() {
    [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$(pom_checksum)" ]] &&
        compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null
}

cmd_libs() {
    if libs_fresh; then
        return 0
    fi
    command -v mvn >/dev/null || die "mvn (Maven) is needed to fetch the Kafka jars"
    mkdir -p "$LIBS"
    # Serialise concurrent callers (make, pytest, bench) on one lock.
    exec 9>"$LIBS/.lock"
    flock 9
    if libs_fresh; then
        exec 9>&-
        return 0
    fi
    log "fetching the Kafka broker jars from Maven Central into tools/kafka/libs/ ..."
    rm -f "$STAMP" "$LIBS"/*.jar
    if ! mvn -B -q -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$LIBS" >"$LIBS/.mvn.log" 2>&1; then
        cat "$LIBS/.mvn.log" >&2
        die "mvn dependency:copy-dependencies failed (output above)"
    fi
    compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null || die "no kafka_2.13 jar in $LIBS after mvn"
    pom_checksum >"$STAMP"
    log "$(find "$LIBS" -maxdepth 1 -name '*.jar' | wc -l) jars in tools/kafka/libs/"
    exec 9>&-
}

# ---------------------------------------------------------------------------------------------
# process helpers
# ---------------------------------------------------------------------------------------------

# Something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# Our broker's pid, if the pid file names a live java process started on our server.properties.
broker_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$PID_FILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    local cmdline
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ "$cmdline" == *"kafka.Kafka $PROPS"* ]] || return 1
    printf '%s\n' "$pid"
}

log_tail() {
    if [[ -f "$LOG_FILE" ]]; then
        printf -- '--- last lines of %s ---\n' "$LOG_FILE" >&2
        tail -n "${1:-40}" "$LOG_FILE" >&2
        printf -- '---\n' >&2
    fi
}

stored_controller_port() {
    [[ -f "$PROPS" ]] || return 1
    sed -n 's/^controller\.quorum\.voters=1@127\.0\.0\.1:\([0-9]*\)$/\1/p' "$PROPS" | grep -E '^[0-9]+$'
}

pick_controller_port() {
    if [[ -n "${KAFKA_LOCAL_CONTROLLER_PORT:-}" ]]; then
        printf '%s\n' "$KAFKA_LOCAL_CONTROLLER_PORT"
    elif stored_controller_port; then
        :
    elif ((PORT + 1 < 65536)) && ! port_open $((PORT + 1)); then
        printf '%s\n' $((PORT + 1))
    else
        free_port
    fi
}

# A Kafka cluster id as `kafka.tools.StorageTool random-uuid` prints it (16 random bytes,
# URL-safe base64 without padding, not starting with '-'), without starting a JVM for it.
new_cluster_id() {
    local id
    while :; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
        [[ "$id" == -* ]] || break
    done
    printf '%s\n' "$id"
}

write_properties() {
    local cport="$1"
    cat >"$PROPS" <<EOF
# Generated by tools/kafka/kafka-local.sh: single-node KRaft broker on loopback.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA_DIR
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
group.consumer.min.session.timeout.ms=1000
group.consumer.session.timeout.ms=6000
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
broker.heartbeat.interval.ms=1000
num.network.threads=2
num.io.threads=2
log.cleaner.dedupe.buffer.size=33554432
message.max.bytes=10485760
replica.fetch.max.bytes=10485760
EOF
}

# ---------------------------------------------------------------------------------------------
# up / down / status
# ---------------------------------------------------------------------------------------------

cmd_up() {
    local pid
    if pid="$(broker_pid)" && port_open "$PORT"; then
        log "already running (pid $pid) on 127.0.0.1:$PORT"
        return 0
    fi
    if pid="$(broker_pid)"; then
        die "a broker (pid $pid) from $STATE_DIR runs but does not accept connections on 127.0.0.1:$PORT; try: $0 down"
    fi
    if port_open "$PORT"; then
        die "127.0.0.1:$PORT is in use by another process; pick another port with KAFKA_LOCAL_PORT=..."
    fi
    command -v java >/dev/null || die "java (JDK 17+) is needed to run the broker"
    cmd_libs

    mkdir -p "$STATE_DIR"
    local cport
    cport="$(pick_controller_port)"
    if port_open "$cport"; then
        die "controller port 127.0.0.1:$cport is in use; set KAFKA_LOCAL_CONTROLLER_PORT=..."
    fi
    write_properties "$cport"

    if [[ ! -f "$DATA_DIR/meta.properties" ]]; then
        local cluster_id
        rm -rf "$DATA_DIR"
        cluster_id="$(new_cluster_id)"
        java -Dlog4j2.configurationFile="$LOG4J_CONFIG" -cp "$LIBS/*" kafka.tools.StorageTool \
            format --cluster-id "$cluster_id" --config "$PROPS" >"$STATE_DIR/format.log" 2>&1 ||
            {
                cat "$STATE_DIR/format.log" >&2
                die "formatting $DATA_DIR failed"
            }
        log "formatted a new log dir (cluster id $cluster_id)"
    fi

    [[ -f "$LOG_FILE" ]] && mv -f "$LOG_FILE" "$LOG_FILE.1"
    local started=$SECONDS
    # setsid: the broker outlives this shell and is not hit by a Ctrl-C in the terminal.
    # shellcheck disable=SC2086 # HEAP holds several JVM options
    setsid java $HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
        -Djava.awt.headless=true -Dlog4j2.configurationFile="$LOG4J_CONFIG" \
        -cp "$LIBS/*" kafka.Kafka "$PROPS" </dev/null >"$LOG_FILE" 2>&1 &
    pid=$!
    printf '%s\n' "$pid" >"$PID_FILE"
    log "starting broker (pid $pid) on 127.0.0.1:$PORT, controller 127.0.0.1:$cport, state in ${STATE_DIR#"$REPO_ROOT"/}"

    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE"
            log_tail 60
            die "the broker exited during start-up (log: $LOG_FILE)"
        fi
        if port_open "$PORT" && grep -q "Kafka Server started" "$LOG_FILE"; then
            break
        fi
        if ((SECONDS - started >= START_TIMEOUT)); then
            log_tail 60
            kill -KILL "$pid" 2>/dev/null || true
            rm -f "$PID_FILE"
            die "the broker was not ready within ${START_TIMEOUT}s; killed it (log: $LOG_FILE)"
        fi
        sleep 0.2
    done
    log "ready on 127.0.0.1:$PORT after $((SECONDS - started))s (bootstrap.servers=127.0.0.1:$PORT)"
}

cmd_down() {
    local pid
    if ! pid="$(broker_pid)"; then
        rm -f "$PID_FILE"
        log "not running on 127.0.0.1:$PORT"
        return 0
    fi
    log "stopping broker (pid $pid) ..."
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "still alive after 30s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    rm -f "$PID_FILE"
    log "stopped"
}

cmd_status() {
    local pid
    if pid="$(broker_pid)"; then
        if port_open "$PORT"; then
            log "running (pid $pid) on 127.0.0.1:$PORT, state in ${STATE_DIR#"$REPO_ROOT"/}"
        else
            log "starting or stopping (pid $pid), 127.0.0.1:$PORT not accepting connections yet"
        fi
        return 0
    fi
    log "not running on 127.0.0.1:$PORT"
    return 3
}

cmd_reset() {
    cmd_down
    rm -rf "$STATE_DIR"
    log "deleted ${STATE_DIR#"$REPO_ROOT"/}"
}

case "${1:-}" in
libs) cmd_libs ;;
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
reset) cmd_reset ;;
*)
    echo "usage: $0 {libs|up|down|status|reset}" >&2
    exit 2
    ;;
esac
