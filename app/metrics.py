"""Prometheus metrics. Label values come from closed sets only (models, statuses, outcomes)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

# A `_created` gauge beside every counter and histogram doubles the series to store and
# tells a scraper nothing it needs (counter resets are detected without it).
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)

JOBS_CREATED = Counter(
    "poyo_relay_jobs_created_total", "Jobs accepted from clients.", ["model"], registry=REGISTRY
)
JOBS_FINISHED = Counter(
    "poyo_relay_jobs_finished_total",
    "Jobs that reached a terminal status.",
    ["model", "status"],
    registry=REGISTRY,
)
JOB_DURATION = Histogram(
    "poyo_relay_job_duration_seconds",
    "Time from job creation to its terminal status.",
    ["model", "status"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 21600),
    registry=REGISTRY,
)
CALLBACKS = Counter(
    "poyo_relay_callbacks_total",
    "Provider callbacks received, by outcome.",
    ["outcome"],
    registry=REGISTRY,
)
PROVIDER_LATENCY = Histogram(
    "poyo_relay_provider_request_duration_seconds",
    "Latency of requests to the provider API.",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
PROVIDER_ERRORS = Counter(
    "poyo_relay_provider_errors_total",
    "Failed requests to the provider API, by endpoint and kind.",
    ["endpoint", "kind"],
    registry=REGISTRY,
)
WORKER_QUEUE_DEPTH = Gauge(
    "poyo_relay_worker_queue_depth",
    "Jobs waiting for the worker, by queue.",
    ["queue"],
    registry=REGISTRY,
)
WORKER_LOOP_LAG = Gauge(
    "poyo_relay_worker_loop_lag_seconds",
    "How overdue the oldest due job was at the worker's last pass.",
    ["loop"],
    registry=REGISTRY,
)
WORKER_ITEMS = Counter(
    "poyo_relay_worker_items_total",
    "Jobs handled by worker loops, by loop and result.",
    ["loop", "result"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "poyo_relay_http_requests_total",
    "HTTP requests served, by route template, method and status class.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
ARCHIVE_OUTPUTS = Counter(
    "poyo_relay_archive_outputs_total",
    "Output files archive attempts, by outcome (archived, failed).",
    ["outcome"],
    registry=REGISTRY,
)
ARCHIVE_BYTES = Counter(
    "poyo_relay_archive_bytes_total", "Bytes of output files archived.", registry=REGISTRY
)
ARCHIVE_JOBS = Counter(
    "poyo_relay_archive_jobs_total",
    "Jobs whose archive attempt ended, by result (archived, retrying, abandoned).",
    ["result"],
    registry=REGISTRY,
)
OPEN_STREAMS = Gauge(
    "poyo_relay_open_streams",
    "Server-sent event streams open in this process, by scope (job: one job; all: /v1/stream).",
    ["scope"],
    registry=REGISTRY,
)
WAITERS = Gauge(
    "poyo_relay_waiters",
    "Requests waiting for a job to end (`?wait=` / `Prefer: wait`) in this process.",
    registry=REGISTRY,
)
STREAMS_CUT = Counter(
    "poyo_relay_streams_cut_total",
    "Streams the server ended because their reader fell too far behind.",
    registry=REGISTRY,
)
NOTIFICATION_LAG = Histogram(
    "poyo_relay_notification_lag_seconds",
    "From the start of a transaction that changed jobs to its PostgreSQL notification "
    "reaching this process.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
STREAM_LISTENER_CONNECTED = Gauge(
    "poyo_relay_stream_listener_connected",
    "1 while this process's PostgreSQL LISTEN connection is up.",
    registry=REGISTRY,
)
STREAM_SKIPPED_IDS = Counter(
    "poyo_relay_stream_skipped_ids_total",
    "Event ids the change feed stopped waiting for (their transactions rolled back).",
    registry=REGISTRY,
)
PROVIDER_BALANCE = Gauge(
    "poyo_relay_provider_balance_credits",
    "PoYo's account balance in credits at this process's last read (BALANCE_CHECK_SECONDS); "
    "NaN until it has read one.",
    registry=REGISTRY,
)
# Unknown is not empty: an alert on a low balance must not fire before the first read, nor
# on a process that runs no worker.
PROVIDER_BALANCE.set(float("nan"))

# Every outcome shows (as 0) before it first happens.
for _outcome in ("archived", "failed"):
    ARCHIVE_OUTPUTS.labels(_outcome)
for _result in ("archived", "retrying", "abandoned"):
    ARCHIVE_JOBS.labels(_result)
for _scope in ("job", "all"):
    OPEN_STREAMS.labels(_scope)
WEBHOOK_ATTEMPTS = Counter(
    "poyo_relay_webhook_attempts_total",
    "Webhook delivery attempts, by what became of the delivery "
    "(succeeded, pending: to be retried, failed: given up)",
    ["result"],
    registry=REGISTRY,
)
for _result in ("succeeded", "pending", "failed"):
    WEBHOOK_ATTEMPTS.labels(_result)  # published at 0 before the first attempt
WEBHOOK_ENDPOINTS_DISABLED = Counter(
    "poyo_relay_webhook_endpoints_disabled_total",
    "Webhook endpoints disabled by the delivery loop (410 Gone, or failing too long)",
    registry=REGISTRY,
)
