#!/usr/bin/env bash
# `make demo`: the whole main job on this machine, end to end.
#
#   local Kafka broker (tools/kafka/kafka-local.sh) -> demo topics -> sample transcripts
#   (config/samples/) -> semarize-connector run --stop-when-idle against the bundled simulator
#   -> a summary of every output and dead letter.
#
# Called by `make demo` with the venv's bin first on PATH. It stops what it started (the
# simulator; the broker only if it was not already running) on any exit, Ctrl-C included.
# Exit status: 0 when the connector exited 0 and every sample has an output or a dead letter.
#
# Environment (all optional):
#   KAFKA_LOCAL_PORT         the local broker's port (default 9092)
#   KAFKA_BOOTSTRAP_SERVERS  use this broker instead of starting the local one (not stopped)
#   DEMO_KEEP_KAFKA=1        leave a broker the demo started running, to explore the topics
#   DEMO_SIM_PORT            the simulator's port (default: a free one)
#   DEMO_OPS_PORT            the connector's /metrics port (default: a free one)
#   DEMO_SEED                the simulator's seed (default 2026: the same run ids every time)
#   DEMO_TIMEOUT             seconds the connector may take before it is stopped (default 180)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

CONFIG=config/demo.yaml
SAMPLES=config/samples
DEMO_DIR=.local/demo
LOG="$DEMO_DIR/connector.log"
SIM_LOG="$DEMO_DIR/simulator.log"
MANIFEST="$DEMO_DIR/manifest.json"
KAFKA_LOCAL_PORT="${KAFKA_LOCAL_PORT:-9092}"
export KAFKA_LOCAL_PORT
SEED="${DEMO_SEED:-2026}"
TIMEOUT="${DEMO_TIMEOUT:-180}"

step() { printf '\n==> %s\n' "$*"; }
die() {
    printf 'demo: error: %s\n' "$*" >&2
    exit 1
}

command -v semarize-connector >/dev/null ||
    die "semarize-connector is not on PATH; run the demo with: make demo"
PYTHON="$(dirname "$(command -v semarize-connector)")/python"
[[ -x "$PYTHON" ]] || die "no python next to semarize-connector ($PYTHON)"

# The demo runs config/demo.yaml as it is: connector settings left in the environment (the
# README's develop-against-the-simulator exports, say) would override it.
for name in $(compgen -e); do
    case "$name" in
    SEMARIZE_* | CONNECTOR_*) unset "$name" ;;
    esac
done

mkdir -p "$DEMO_DIR"
rm -f "$LOG" "$SIM_LOG" "$MANIFEST"
STARTED_AT=$SECONDS

# --- cleanup: only what this script started ----------------------------------------------------
BROKER_STARTED=0
SIM_PID=""
CONNECTOR_PID=""

stop_pid() { # pid, name: SIGTERM, wait up to 15 s, then SIGKILL
    local pid="$1" name="$2" i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        printf 'demo: %s (pid %s) did not stop within 15 s; killing it\n' "$name" "$pid" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -n "$CONNECTOR_PID" ]] && stop_pid "$CONNECTOR_PID" "the connector"
    if [[ -n "$SIM_PID" ]]; then
        stop_pid "$SIM_PID" "the simulator"
        printf 'demo: simulator stopped\n'
    fi
    if ((BROKER_STARTED)); then
        if [[ -n "${DEMO_KEEP_KAFKA:-}" ]]; then
            printf 'demo: the broker keeps running (DEMO_KEEP_KAFKA); stop it with: make kafka-down\n'
        else
            tools/kafka/kafka-local.sh down || rc=1
        fi
    fi
    if ((rc != 0)); then
        printf '\ndemo: FAILED (exit %s) after %ss; logs in %s/\n' "$rc" $((SECONDS - STARTED_AT)) \
            "$DEMO_DIR" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. Kafka -------------------------------------------------------------------------------------
if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
    step "Kafka: using KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS (not started, not stopped)"
else
    export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_LOCAL_PORT"
    if tools/kafka/kafka-local.sh status >/dev/null; then
        step "Kafka: the local broker already runs on $KAFKA_BOOTSTRAP_SERVERS (it stays running)"
    else
        step "Kafka: starting the local broker on $KAFKA_BOOTSTRAP_SERVERS"
        BROKER_STARTED=1
        tools/kafka/kafka-local.sh up
    fi
fi

# --- 2. the simulator -----------------------------------------------------------------------------
step "Semarize API: starting the simulator (seed $SEED, runs take 0.3-1.5 s)"
# Known Kits: the demo's CALLKIT1 and SUPPORT1; call-2026-0025 names a retired one (LEGACY01).
: >"$SIM_LOG" # exists before the loop below reads it (the child creates it otherwise)
semarize-connector simulate --host 127.0.0.1 --port "${DEMO_SIM_PORT:-0}" --seed "$SEED" \
    --run-duration-ms 300:1500 --retry-after 0 --kits CALLKIT1,SUPPORT1 >"$SIM_LOG" 2>&1 &
SIM_PID=$!
SIM_URL=""
for ((i = 0; i < 150; i++)); do
    SIM_URL="$(sed -n 's/^simulator listening on \(http:[^ ]*\).*$/\1/p' "$SIM_LOG")"
    [[ -n "$SIM_URL" ]] && break
    if ! kill -0 "$SIM_PID" 2>/dev/null; then
        cat "$SIM_LOG" >&2
        die "the simulator exited during start-up (output above)"
    fi
    sleep 0.1
done
[[ -n "$SIM_URL" ]] || die "the simulator did not start within 15 s (log: $SIM_LOG)"
echo "simulator listening on $SIM_URL (pid $SIM_PID, log $SIM_LOG)"

# The connector and demo_tools.py read the same effective configuration: the file + these.
export SEMARIZE_API_URL="$SIM_URL"
export SEMARIZE_API_KEY="smz_test_demo_key"
GROUP_ID="semarize-demo-$(date -u +%Y%m%d-%H%M%S)"
export CONNECTOR_GROUP_ID="$GROUP_ID"
export CONNECTOR_OPS_PORT="${DEMO_OPS_PORT:-0}"

# --- 3. topics and samples ------------------------------------------------------------------------
step "Topics: a clean slate for this run (delete + recreate), consumer group $GROUP_ID"
"$PYTHON" scripts/demo_tools.py create-topics --config "$CONFIG"

step "Samples: producing $SAMPLES/calls/*.json and $SAMPLES/malformed/*"
"$PYTHON" scripts/demo_tools.py produce --config "$CONFIG" --samples "$SAMPLES" \
    --manifest "$MANIFEST"

# --- 4. the connector -----------------------------------------------------------------------------
step "Connector: semarize-connector run --config $CONFIG --stop-when-idle 3 (JSON logs: $LOG)"
connector_started=$SECONDS
# In the background, so a Ctrl-C reaches the trap at once; timeout guards against a hang.
timeout --kill-after=15 "$TIMEOUT" \
    semarize-connector run --config "$CONFIG" --stop-when-idle 3 >"$LOG" 2>&1 &
CONNECTOR_PID=$!
connector_rc=0
wait "$CONNECTOR_PID" || connector_rc=$?
CONNECTOR_PID=""
connector_seconds=$((SECONDS - connector_started))
if ((connector_rc == 124 || connector_rc == 137)); then
    echo "the connector did not stop by itself within ${TIMEOUT}s (stopped it); last log lines:"
    tail -n 20 "$LOG"
elif ((connector_rc != 0)); then
    echo "the connector exited $connector_rc after ${connector_seconds}s; last log lines:"
    tail -n 20 "$LOG"
else
    echo "the connector drained the topic and exited 0 after ${connector_seconds}s"
fi

# --- 5. summary -----------------------------------------------------------------------------------
step "Summary"
summary_rc=0
"$PYTHON" scripts/demo_tools.py summary --config "$CONFIG" --manifest "$MANIFEST" \
    --log "$LOG" --sim-url "$SIM_URL" || summary_rc=$?

if ((BROKER_STARTED)) && [[ -z "${DEMO_KEEP_KAFKA:-}" ]]; then
    broker_note="The demo stops the broker it started; \`make kafka-up\` brings it back with the
    topics intact (or run the demo with DEMO_KEEP_KAFKA=1)."
else
    broker_note="The broker keeps running."
fi
cat <<EOF

Where to look next:
  - Topics on $KAFKA_BOOTSTRAP_SERVERS: demo.transcripts (input), demo.transcripts.analyzed
    (results), demo.transcripts.dlq (dead letters).
    $broker_note
      kcat -b $KAFKA_BOOTSTRAP_SERVERS -C -e -t demo.transcripts.analyzed -f '%k  %s\n'
      kcat -b $KAFKA_BOOTSTRAP_SERVERS -C -e -t demo.transcripts.dlq -f '%k  %h\n'
      ${PYTHON#"$REPO_ROOT"/} scripts/demo_tools.py summary --config $CONFIG --manifest $MANIFEST
  - Connector log (one JSON line per outcome, with event_id and run_id): $LOG
      grep '"call-2026-0019"' $LOG
  - Simulator log: $SIM_LOG. Samples: $SAMPLES/ (README.md says what each one shows).
  - Run it by hand (metrics on http://127.0.0.1:8000/metrics while it runs):
      make kafka-up
      .venv/bin/semarize-connector simulate --retry-after 0 --kits CALLKIT1,SUPPORT1 &
      SEMARIZE_API_KEY=smz_test_x .venv/bin/semarize-connector run --config $CONFIG
  - Every setting: config/example.yaml. The simulator and its faults: docs/simulator.md.
    Deployment: docs/deployment.md. Metrics and alerts: docs/metrics.md.
EOF

printf '\ndemo: finished in %ss (connector %ss)\n' $((SECONDS - STARTED_AT)) "$connector_seconds"
if ((connector_rc != 0)); then
    die "the connector failed (exit $connector_rc); see $LOG"
fi
if ((summary_rc != 0)); then
    die "some samples have neither an output nor a dead letter (see above)"
fi
echo "demo: OK"
