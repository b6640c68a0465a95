"""Prometheus collectors (module constants), their label vocabularies, and the series created at zero.
The application records through `app/metrics.py`; the HTTP metrics middleware that feeds the `http_*`
collectors is `app/http/middleware/metrics.py`.

Label cardinality is bounded by construction: HTTP metrics use the route *template* (never the raw
path) and a fixed set of methods; `tenant` values come from configured API keys; `method` on the
gateway analytics metrics goes through `normalise_mcp_method` (app/mcp_methods.py); every other label
takes one of the documented values. Names are the contract used by the Grafana dashboard and the alert
rules in `helm/session-broker/files/`; rename nothing without updating both.

Multi-process: when `PROMETHEUS_MULTIPROC_DIR` is set before this module is first imported (uvicorn
with several workers), prometheus-client keeps values in mmap files there and `metrics.render_metrics()`
aggregates them with `MultiProcessCollector`. The directory must exist and be emptied before the
workers start (`metrics.prepare_multiprocess_dir`). Gauges declare how workers are combined: per-process
quantities (in-flight requests, pool stats) are summed over live workers; leader-set values
(live sessions, purge backlog) take the most recent write.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics, values

from app.rules import END_REASONS

# `*_created` series double the series count and nothing here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: True when prometheus-client chose mmap-backed values (decided once, when it was first imported).
MULTIPROCESS: bool = values.ValueClass is not values.MutexValue

# --- label vocabularies (documented here; used for pre-initialising series at zero) ----------------
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CREATED_HOW = ("created", "registered", "rotated")
TOUCH_RESULTS = ("written", "throttled", "not_found")
QUOTA_SCOPES = ("tenant", "principal", "client")
PURGE_RESULTS = ("ok", "error", "skipped")
PURGE_TABLES = ("sessions", "leases", "in_flight", "pending", "tombstones", "idempotency_keys", "events")
REQUEST_LIMITS = ("max_requests", "max_requests_per_minute")
#: `kind` of session_broker_db_errors_total (`app.db.error_kind`).
DB_ERROR_KINDS = (
    "timeout",
    "deadline",
    "capacity",
    "read_only",
    "schema",
    "conflict",
    "connection",
    "prepared_statements",
    "other",
)


_HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DB_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
_LIFETIME_BUCKETS = (
    1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 43200, 86400, 172800, 604800,
)  # fmt: skip
_PURGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_NOTICE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
_GATEWAY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# --- HTTP ------------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "session_broker_http_requests_total",
    "HTTP requests answered. route: route template or 'unmatched'; method: HTTP method or 'other'; "
    "status: status class (2xx, 3xx, 4xx, 5xx). Probes and /metrics are excluded.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "session_broker_http_request_duration_seconds",
    "Time from request start to the end of the response body, by route template and method.",
    ["route", "method"],
    buckets=_HTTP_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "session_broker_http_requests_in_flight",
    "HTTP requests being served now (summed over live worker processes).",
    multiprocess_mode="livesum",
)

# --- sessions ----------------------------------------------------------------------------------------
SESSIONS_LIVE = Gauge(
    "session_broker_sessions_live",
    "Live (unexpired) sessions by tenant and kind, computed periodically by one leader.",
    ["tenant", "kind"],
    multiprocess_mode="mostrecent",
)
SESSIONS_CREATED = Counter(
    "session_broker_sessions_created_total",
    "Sessions that came into existence. how: created (id minted here), registered (id minted by "
    "the caller), rotated (new id from a rotation).",
    ["tenant", "how"],
)
SESSIONS_ENDED = Counter(
    "session_broker_sessions_ended_total",
    "Sessions that ended. reason: deleted, expired_idle, expired_lifetime, evicted, revoked, rotated.",
    ["tenant", "reason"],
)
SESSION_LIFETIME = Histogram(
    "session_broker_session_lifetime_seconds",
    "Age of a session when it ended (created_at to end), observed when the end is recorded.",
    ["tenant"],
    buckets=_LIFETIME_BUCKETS,
)
TOUCHES = Counter(
    "session_broker_touches_total",
    "Touch calls. result: written (expiry moved), throttled (within the write granularity, "
    "answered from a read), not_found.",
    ["tenant", "result"],
)
BINDING_MISMATCHES = Counter(
    "session_broker_binding_mismatches_total",
    "Calls whose Session-Principal did not match the session's bound principal. operation: the "
    "API operation (get, touch, patch, delete, ...).",
    ["tenant", "operation"],
)
QUOTA_REJECTIONS = Counter(
    "session_broker_quota_rejections_total",
    "Creates refused with 429 because a quota was full. scope: tenant, principal, client.",
    ["tenant", "scope"],
)
QUOTA_EVICTIONS = Counter(
    "session_broker_quota_evictions_total",
    "Sessions evicted (oldest idle) to make room under a full quota. scope: tenant, principal, client.",
    ["tenant", "scope"],
)

EXPIRY_WARNINGS = Counter(
    "session_broker_expiry_warnings_total",
    "session.expiring events written (SESSION_BROKER_EXPIRY_WARNING_SECONDS before a session's expiry).",
    ["tenant"],
)
REQUESTS_LIMITED = Counter(
    "session_broker_session_requests_limited_total",
    "Touches refused with 429 by a per-session request limit. limit: max_requests (lifetime), "
    "max_requests_per_minute.",
    ["tenant", "limit"],
)
IDEMPOTENT_REPLAYS = Counter(
    "session_broker_idempotent_replays_total",
    "Creates and rotations answered from a remembered Idempotency-Key instead of doing it again.",
    ["tenant"],
)

# --- purge ------------------------------------------------------------------------------------------
PURGE_RUNS = Counter(
    "session_broker_purge_runs_total",
    "Purge runs. result: ok, error, skipped (another purger held the lock).",
    ["result"],
)
PURGE_DELETED = Counter(
    "session_broker_purge_deleted_total",
    "Rows deleted by the purge. table: sessions, leases, in_flight, pending (timed out or forgotten), "
    "tombstones, idempotency_keys, events.",
    ["table"],
)
PURGE_BATCH_DURATION = Histogram(
    "session_broker_purge_batch_duration_seconds",
    "Duration of one purge batch (one transaction).",
    buckets=_PURGE_BUCKETS,
)
EXPIRY_NOTICE_DELAY = Histogram(
    "session_broker_expiry_notice_delay_seconds",
    "From a session's expiry to the purge statement that recorded it (event, counters, tombstone).",
    buckets=_NOTICE_BUCKETS,
)
PURGE_BACKLOG = Gauge(
    "session_broker_purge_backlog",
    "Expired rows not yet purged, as last measured by the purger.",
    multiprocess_mode="mostrecent",
)

# --- database -------------------------------------------------------------------------------------
DB_POOL_SIZE = Gauge(
    "session_broker_db_pool_size",
    "Connections currently open in the pool (summed over live worker processes).",
    multiprocess_mode="livesum",
)
DB_POOL_IN_USE = Gauge(
    "session_broker_db_pool_in_use",
    "Pool connections checked out (summed over live worker processes).",
    multiprocess_mode="livesum",
)
DB_POOL_WAITING = Gauge(
    "session_broker_db_pool_waiting",
    "Requests waiting to acquire a pool connection (summed over live worker processes).",
    multiprocess_mode="livesum",
)
DB_QUERY_DURATION = Histogram(
    "session_broker_db_query_duration_seconds",
    "Database round trip per repository operation (e.g. touch, get, create, purge_batch).",
    ["operation"],
    buckets=_DB_BUCKETS,
)
DB_ERRORS = Counter(
    "session_broker_db_errors_total",
    "Database errors by kind: timeout, deadline (a request's deadline passed), capacity, read_only, schema, "
    "conflict, connection, prepared_statements (a pooler lost them), other.",
    ["kind"],
)
UNAVAILABLE_RESPONSES = Counter(
    "session_broker_unavailable_responses_total",
    "503 responses returned because the database was unreachable or too slow.",
)

# --- gateway analytics (fed by touch bodies) -----------------------------------------------------------
GATEWAY_REQUESTS = Counter(
    "session_broker_gateway_requests_total",
    "MCP requests reported by gateways in touch bodies. method: normalised MCP method or 'other'.",
    ["tenant", "method"],
)
GATEWAY_REQUEST_ERRORS = Counter(
    "session_broker_gateway_request_errors_total",
    "MCP requests reported by gateways as failed (ok=false).",
    ["tenant", "method"],
)
GATEWAY_REQUEST_DURATION = Histogram(
    "session_broker_gateway_request_duration_seconds",
    "Duration of MCP requests as reported by gateways (duration_ms / 1000).",
    ["tenant", "method"],
    buckets=_GATEWAY_BUCKETS,
)


def _init_global_series() -> None:
    """Create the unlabelled-by-tenant series at zero so rates and alerts have data from the start."""
    for result in PURGE_RESULTS:
        PURGE_RUNS.labels(result)
    for table in PURGE_TABLES:
        PURGE_DELETED.labels(table)
    # Multi-process: a series exists in /metrics only once some worker has created it.
    for kind in DB_ERROR_KINDS:
        DB_ERRORS.labels(kind)


_init_global_series()


_children: dict[tuple[object, ...], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, memoised: `metric.labels` validates and takes a lock on every call, and these
    run several times per request. Label values are bounded, so the memo is too."""
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def register_tenants(tenants: Iterable[str]) -> None:
    """Create each tenant's counter series at zero (call once at startup with the configured tenants).

    Optional, but ratios such as written/(written+throttled) and "no quota rejections" then read 0
    instead of "no data" before the first event.
    """
    for tenant in tenants:
        for how in CREATED_HOW:
            SESSIONS_CREATED.labels(tenant, how)
        for reason in END_REASONS:
            SESSIONS_ENDED.labels(tenant, reason)
        for result in TOUCH_RESULTS:
            TOUCHES.labels(tenant, result)
        for scope in QUOTA_SCOPES:
            QUOTA_REJECTIONS.labels(tenant, scope)
            QUOTA_EVICTIONS.labels(tenant, scope)
        EXPIRY_WARNINGS.labels(tenant)
        for limit in REQUEST_LIMITS:
            REQUESTS_LIMITED.labels(tenant, limit)
