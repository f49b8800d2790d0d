"""Metrics: every family a process exposes on ``/metrics``, declared once here (the names are the contract with
the alerts in ``infra/monitoring/rules`` and the dashboards).

Prometheus text format through prometheus-client, on the default registry (which also carries the process
collector: CPU, memory, open files). Each process serves its own: the APIs on ``GET /metrics``, each worker on
its health port. An API run as several uvicorn workers behind one port (``OGP_API_WORKERS``) is one target whose
answer must not depend on which worker serves the scrape: ``ogp up`` then gives it a folder in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's own variable, read by it at import), where each worker keeps
its counters and histograms, and ``/metrics`` sums them over the workers. The process collector has no
multi-process form, so such an API serves no ``process_*`` families (the workers' own are unchanged).

Money is counted in minor units (sen) as integers, never as floats of rupiah. Labels are bounded: a command
or event type, an outcome, a partition, a route template (never a raw path), a partner key id.
"""

from __future__ import annotations

import os
from decimal import Decimal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# Where several workers of one API keep their metrics (prometheus-client's variable; see the docstring).
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

# Seconds: from 1 ms (a cached read) to 10 s (a Midtrans timeout).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# -- HTTP (both APIs) ------------------------------------------------------------------------------------------
HTTP_REQUEST_DURATION = Histogram(
    "http_server_request_duration_seconds",
    "HTTP requests served, by route template and status (OpenTelemetry's http.server.request.duration).",
    ["service", "method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)

HTTP_REQUESTS_SHED = Counter(
    "ogp_http_requests_shed",
    "Requests an API process answered 503 overloaded at once, past its in-flight limit (ogp/web/edge.py).",
    ["service"],
)

# -- command API -----------------------------------------------------------------------------------------------
COMMANDS_ACCEPTED = Counter(
    "ogp_commands_accepted", "Commands appended to ogp.commands.v1 by the command API, by type.", ["type"]
)
WEBHOOK_NOTIFICATIONS = Counter(
    "ogp_webhook_notifications",
    "Midtrans notifications received, by outcome: verified, forged, duplicate, invalid, unknown_order, unavailable.",
    ["outcome"],
)
MIDTRANS_REQUEST_DURATION = Histogram(
    "ogp_midtrans_request_duration_seconds",
    "Calls to Midtrans (Snap, Core API), by operation and outcome: ok, error, timeout.",
    ["operation", "outcome"],
    buckets=LATENCY_BUCKETS,
)

# -- Midtrans status sync (command_api/midtrans/status_sync) ------------------------------------------------------
STATUS_SYNC_CHECKS = Counter(
    "ogp_status_sync_checks",
    "Late payments checked with Midtrans's status API, by outcome: unchanged (still pending), unknown (404: no "
    "method chosen), changed (a status appended), expired (expire() asked after the expiry), error.",
    ["outcome"],
)
STATUS_SYNC_APPENDED = Counter(
    "ogp_status_sync_appended",
    "Midtrans statuses the status sync appended to ogp.commands.v1, by Midtrans transaction status.",
    ["status"],
)
STATUS_SYNC_ERRORS = Counter(
    "ogp_status_sync_errors",
    "Status sync failures, by stage: midtrans (no answer or an error), kafka (not appended), database.",
    ["stage"],
)

HELD_RETURNS = Counter(
    "ogp_held_returns",
    "Money held in suspense that the returner asked Midtrans to refund, by outcome: refunded (status appended "
    "for the ledger), not_settled (412 before settlement: later), retry (no answer, 5xx, not appended), parked "
    "(refused for good: a person returns it).",
    ["outcome"],
)

# -- query API: partners -----------------------------------------------------------------------------------------
PARTNER_REQUESTS = Counter(
    "ogp_partner_requests", "Partner API requests, by API key id and status.", ["key_id", "status"]
)
PARTNER_RATE_LIMITED = Counter(
    "ogp_partner_rate_limited", "Partner requests refused by the key's rate limit (429).", ["key_id"]
)

# -- ledger processor ----------------------------------------------------------------------------------------------
LEDGER_APPLIED = Counter(
    "ogp_ledger_applied",
    "Commands the ledger applied, by type and outcome: the status its transaction reached (SUCCESS, FAILED,"
    " PENDING, CANCELLED), or duplicate when it changed nothing.",
    ["type", "outcome"],
)
LEDGER_AMOUNT_MINOR = Counter(
    "ogp_ledger_amount_minor",
    "Money the ledger moved in successful transactions, in minor units (sen), by transaction type.",
    ["type"],
)
LEDGER_BATCH_SIZE = Histogram(
    "ogp_ledger_batch_size", "Records per applied batch.", buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000)
)
LEDGER_BATCH_DURATION = Histogram(
    "ogp_ledger_batch_duration_seconds", "Time to apply one batch (one database transaction).", buckets=LATENCY_BUCKETS
)
LEDGER_LAG = Gauge(
    "ogp_ledger_lag",
    "Commands not yet applied, per partition: the topic's end offset minus the position stored in PostgreSQL.",
    ["partition"],
)
DEAD_LETTERS = Counter("ogp_dead_letters", "Records dead-lettered by the ledger processor, by reason.", ["reason"])
OUTBOX_BACKLOG_ROWS = Gauge("ogp_outbox_backlog_rows", "Outbox rows not yet published, per partition.", ["partition"])
OUTBOX_OLDEST_AGE = Gauge(
    "ogp_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row, per partition.", ["partition"]
)
SAGAS_IN_FLIGHT = Gauge(
    "ogp_sagas_in_flight", "Transfers between partitions not yet settled, per partition.", ["partition"]
)
SAGA_OLDEST_AGE = Gauge(
    "ogp_saga_oldest_age_seconds",
    "Age of the oldest unsettled transfer between partitions, per partition.",
    ["partition"],
)

# -- projectors ----------------------------------------------------------------------------------------------------
PROJECTOR_LAG = Gauge(
    "ogp_projector_lag",
    "Events not yet projected, per read model and partition: end offset minus the projector's stored position.",
    ["projector", "partition"],
)
PROJECTOR_APPLIED = Counter("ogp_projector_applied", "Events applied to a read model, by projector.", ["projector"])

# -- live monitoring (projections/velocity) --------------------------------------------------------------------
VELOCITY_EVENTS = Counter(
    "ogp_velocity_events",
    "Records the velocity monitor read, by stage (account: the ledger events; merchant: payments re-keyed by "
    "merchant) and outcome: counted, duplicate (in its window already: read again after a restart), ignored.",
    ["stage", "outcome"],
)
VELOCITY_ALERTS_SENT = Counter(
    "ogp_velocity_alerts_sent",
    "Velocity alerts sent to ogp.alerts.v1, by rule (one sent again after a crash counts again; same alert id).",
    ["rule"],
)


def minor_units(amount: Decimal) -> int:
    """Rupiah with 2 places as an integer number of sen (exact: the ledger's amounts are quantised)."""
    return int(amount.scaleb(2).to_integral_exact())


def exposition() -> tuple[bytes, str]:
    """The body and content type of a ``GET /metrics`` answer: this process's, or all its sibling workers'."""
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
