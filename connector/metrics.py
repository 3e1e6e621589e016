"""Every metric the connector exports, defined once, here.

Other modules import these constants and never create metrics. Names follow Prometheus
conventions: the `semarize_connector_` prefix, base units (seconds, bytes), `_total` on
counters, bounded label values only (never an event id, run id or key). `docs/metrics.md`
says what each one is for.
"""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)
PREFIX = "semarize_connector"


@functools.cache
def series(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, looked up once: per-record code calls this many times a
    second. Only for series that are never removed (bounded labels, see above)."""
    return metric.labels(*values)


# Outcomes a record can finish with: success or one dead-letter kind.
OUTCOMES = (
    "succeeded",
    "invalid_input",
    "run_failed",
    "run_cancelled",
    "request_rejected",
    "deadline_exceeded",
    "retries_exhausted",
)
ROUTES = ("create", "get", "kits")

# Latency buckets in seconds: runs take seconds to minutes, notices and writes milliseconds.
_RUN_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
_FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def _name(short: str) -> str:
    return f"{PREFIX}_{short}"


# --- records -------------------------------------------------------------------------------
RECORDS_CONSUMED = Counter(
    _name("records_consumed_total"),
    "Input records consumed from Kafka.",
    ["topic"],
    registry=REGISTRY,
)
DECODE_FAILURES = Counter(
    _name("decode_failures_total"),
    "Input records that could not be decoded (each becomes an invalid_input dead letter).",
    ["reason"],
    registry=REGISTRY,
)
RECORDS_FINISHED = Counter(
    _name("records_finished_total"),
    "Records finished, by outcome: succeeded or a dead-letter kind.",
    ["outcome"],
    registry=REGISTRY,
)
for _outcome in OUTCOMES:
    RECORDS_FINISHED.labels(outcome=_outcome)

IN_FLIGHT_RECORDS = Gauge(
    _name("in_flight_records"),
    "Records consumed and not yet committed (in flight, finished but waiting, or being written).",
    registry=REGISTRY,
)
OLDEST_IN_FLIGHT_AGE = Gauge(
    _name("oldest_in_flight_age_seconds"),
    "Age of the oldest record consumed and not yet finished.",
    registry=REGISTRY,
)

# --- runs ------------------------------------------------------------------------------------
RUNS_CREATED = Counter(
    _name("runs_created_total"),
    "Runs accepted by the API (202 or 200 to a create), including replayed keys.",
    registry=REGISTRY,
)
RUN_DURATION = Histogram(
    _name("run_duration_seconds"),
    "Provider-reported run duration (duration_ms of the terminal run).",
    buckets=_RUN_BUCKETS,
    registry=REGISTRY,
)
COMPLETION_NOTICE_DELAY = Histogram(
    _name("completion_notice_delay_seconds"),
    "Time from the run's completion (estimated from its duration) to the connector noticing it.",
    buckets=(*_FAST_BUCKETS, 30, 60),
    registry=REGISTRY,
)
END_TO_END_LATENCY = Histogram(
    _name("end_to_end_latency_seconds"),
    "Time from the input record's timestamp to its output or dead letter being acknowledged.",
    buckets=_RUN_BUCKETS,
    registry=REGISTRY,
)
NOTICE_TO_OUTPUT = Histogram(
    _name("notice_to_output_seconds"),
    "Time from noticing a terminal run to its output or dead letter being acknowledged.",
    buckets=_FAST_BUCKETS,
    registry=REGISTRY,
)
POLLS_PER_RUN = Histogram(
    _name("polls_per_run"),
    "GET requests needed to notice a run's completion.",
    buckets=(0, 1, 2, 3, 5, 8, 13, 21, 50),
    registry=REGISTRY,
)

# --- HTTP ------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    _name("http_requests_total"),
    "Requests to the Semarize API by route, status (or 'error' when no response) and error code.",
    ["route", "status", "error_code"],
    registry=REGISTRY,
)
HTTP_REQUEST_DURATION = Histogram(
    _name("http_request_duration_seconds"),
    "Latency of Semarize API requests.",
    ["route"],
    buckets=_HTTP_BUCKETS,
    registry=REGISTRY,
)
for _route in ROUTES:
    HTTP_REQUEST_DURATION.labels(route=_route)
RETRIES = Counter(
    _name("retries_total"),
    "Retried API requests, by route and reason (429, 5xx, timeout, connection, ...).",
    ["route", "reason"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    _name("rate_limited_total"),
    "429 responses received from the API.",
    ["route"],
    registry=REGISTRY,
)
RETRY_AFTER = Histogram(
    _name("retry_after_seconds"),
    "Delays the API asked for (Retry-After or retry_after_seconds).",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)

# --- control -------------------------------------------------------------------------------
CIRCUIT_STATE = Gauge(
    _name("circuit_state"),
    "API circuit breaker: 0 closed, 1 half-open, 2 open.",
    registry=REGISTRY,
)
HALTED = Gauge(
    _name("halted"),
    "1 while halted by bad credentials or configuration (see the log line naming the error code).",
    ["reason"],
    registry=REGISTRY,
)
for _reason in ("credentials", "configuration"):
    HALTED.labels(reason=_reason)
CONCURRENCY_LIMIT = Gauge(
    _name("concurrency_limit"),
    "Current adaptive limit on records in flight (between 1 and pipeline.max_in_flight).",
    registry=REGISTRY,
)
RATE_LIMIT = Gauge(
    _name("rate_limit_requests_per_second"),
    "Current client-side request rate limit (0: not limited); adapts to 429s.",
    registry=REGISTRY,
)
PAUSED_PARTITIONS = Gauge(
    _name("paused_partitions"),
    "Assigned input partitions currently paused.",
    registry=REGISTRY,
)

# --- Kafka -----------------------------------------------------------------------------------
CONSUMER_LAG = Gauge(
    _name("consumer_lag"),
    "Records on the partition after the consumer's position (high watermark - position).",
    ["topic", "partition"],
    registry=REGISTRY,
)
COMMITTABLE_LAG = Gauge(
    _name("committable_lag"),
    "Records after the committed offset (high watermark - committed).",
    ["topic", "partition"],
    registry=REGISTRY,
)
COMMITTED_OFFSET = Gauge(
    _name("committed_offset"),
    "Last offset committed for the partition by this process.",
    ["topic", "partition"],
    registry=REGISTRY,
)
PRODUCER_QUEUE_DEPTH = Gauge(
    _name("producer_queue_messages"),
    "Records waiting in the producer for a broker acknowledgement.",
    registry=REGISTRY,
)
BROKER_UP = Gauge(
    _name("broker_reachable"),
    "1 while the Kafka brokers are reachable.",
    registry=REGISTRY,
)
DEAD_LETTER_REFUSED = Counter(
    _name("dead_letter_refused_total"),
    "Dead letters the broker refused for good; the partition is halted until fixed.",
    registry=REGISTRY,
)

# --- webhooks ------------------------------------------------------------------------------
WEBHOOK_DELIVERIES = Counter(
    _name("webhook_deliveries_total"),
    "Webhook deliveries received, by result (accepted, duplicate, bad_signature, ...).",
    ["result"],
    registry=REGISTRY,
)
WEBHOOK_RESULTS = (
    "accepted",
    "duplicate",
    "ignored",
    "bad_signature",
    "malformed",
    "too_large",
    "publish_failed",
)
for _result in WEBHOOK_RESULTS:
    WEBHOOK_DELIVERIES.labels(result=_result)
WEBHOOK_COMPLETIONS = Counter(
    _name("webhook_completions_total"),
    "Completion events read from the completions topic, by result (matched, unmatched, ...).",
    ["result"],
    registry=REGISTRY,
)
WEBHOOK_PENDING = Gauge(
    _name("webhook_pending_completions"),
    "Completion events kept for runs not (yet) tracked here, for the poll fallback interval.",
    registry=REGISTRY,
)
COMPLETIONS_NOTICED = Counter(
    _name("completions_noticed_total"),
    "Terminal runs noticed, by how: poll (GET), webhook, or create (a sync-mode 200).",
    ["via"],
    registry=REGISTRY,
)
for _via in ("poll", "webhook", "create"):
    COMPLETIONS_NOTICED.labels(via=_via)
