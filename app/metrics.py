"""What the application records, in one call per event: cheap helpers over the collectors of
`app/collectors.py` (names, labels and their bounded vocabularies live there), and the `/metrics`
exposition, aggregated over workers in multi-process mode (see `app/collectors.py`).
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from app.collectors import (
    BINDING_MISMATCHES,
    DB_ERRORS,
    DB_POOL_IN_USE,
    DB_POOL_SIZE,
    DB_POOL_WAITING,
    DB_QUERY_DURATION,
    EXPIRY_NOTICE_DELAY,
    EXPIRY_WARNINGS,
    GATEWAY_REQUEST_DURATION,
    GATEWAY_REQUEST_ERRORS,
    GATEWAY_REQUESTS,
    HTTP_DURATION,
    HTTP_REQUESTS,
    IDEMPOTENT_REPLAYS,
    MULTIPROC_ENV,
    MULTIPROCESS,
    PURGE_BACKLOG,
    PURGE_BATCH_DURATION,
    PURGE_DELETED,
    PURGE_RUNS,
    QUOTA_EVICTIONS,
    QUOTA_REJECTIONS,
    REQUESTS_LIMITED,
    SESSION_LIFETIME,
    SESSIONS_CREATED,
    SESSIONS_ENDED,
    SESSIONS_LIVE,
    TOUCHES,
    UNAVAILABLE_RESPONSES,
    child,
)
from app.mcp_methods import normalise_mcp_method

# --- helpers called from the application ------------------------------------------------------------


def observe_db_query(operation: str, seconds: float) -> None:
    """Record one database round trip."""
    child(DB_QUERY_DURATION, operation).observe(seconds)


def count_touch(tenant: str, result: str) -> None:
    """result: written | throttled | not_found."""
    child(TOUCHES, tenant, result).inc()


def count_created(tenant: str, how: str) -> None:
    """how: created | registered | rotated."""
    child(SESSIONS_CREATED, tenant, how).inc()


def count_ended(tenant: str, reason: str, lifetime_seconds: float | None = None) -> None:
    """reason: one of END_REASONS; lifetime_seconds (now - created_at) feeds the lifetime histogram."""
    SESSIONS_ENDED.labels(tenant, reason).inc()
    if lifetime_seconds is not None and lifetime_seconds >= 0:
        SESSION_LIFETIME.labels(tenant).observe(lifetime_seconds)


def observe_many(histogram: Any, values: Iterable[float]) -> None:
    """`histogram.observe(value)` for every value, in one step per bucket.

    A purge batch ends thousands of sessions; observing each (plus a `metric.labels` lookup with its lock
    for the counter) cost ~10 µs a row on the event loop, and a run of 300,000 rows stopped it for
    seconds. prometheus-client has no bulk observe: its histogram child keeps one (non-cumulative) value
    per bucket and a sum, which observe() increments one at a time; this adds them in bulk.
    tests/unit/test_metrics_bulk.py checks that the result equals observing each value."""
    bounds = histogram._upper_bounds
    counts = [0] * len(bounds)
    total = 0.0
    for value in values:
        counts[bisect.bisect_left(bounds, value)] += 1
        total += value
    for index, count in enumerate(counts):
        if count:
            histogram._buckets[index].inc(count)
    histogram._sum.inc(total)


def count_ended_many(tenant: str, reason: str, lifetimes: Iterable[float]) -> None:
    """Several sessions of one tenant ended for one reason (the purge's batches)."""
    values = list(lifetimes)
    child(SESSIONS_ENDED, tenant, reason).inc(len(values))
    observe_many(child(SESSION_LIFETIME, tenant), (value for value in values if value >= 0))


def observe_expiry_notice_delays(delays: Iterable[float]) -> None:
    observe_many(EXPIRY_NOTICE_DELAY, (max(delay, 0.0) for delay in delays))


def count_expiry_warnings(tenant: str, n: int) -> None:
    EXPIRY_WARNINGS.labels(tenant).inc(n)


def count_request_limited(tenant: str, limit: str) -> None:
    """limit: max_requests | max_requests_per_minute."""
    child(REQUESTS_LIMITED, tenant, limit).inc()


def count_idempotent_replay(tenant: str) -> None:
    IDEMPOTENT_REPLAYS.labels(tenant).inc()


def count_binding_mismatch(tenant: str, operation: str) -> None:
    """A Session-Principal mismatch on `operation` (get, touch, patch, delete, ...)."""
    BINDING_MISMATCHES.labels(tenant, operation).inc()


def count_quota_rejection(tenant: str, scope: str) -> None:
    """scope: tenant | principal | client."""
    QUOTA_REJECTIONS.labels(tenant, scope).inc()


def count_quota_eviction(tenant: str, scope: str, n: int = 1) -> None:
    """scope: tenant | principal | client; n sessions evicted."""
    QUOTA_EVICTIONS.labels(tenant, scope).inc(n)


def count_unavailable() -> None:
    """A 503 answered because the database was unreachable or timing out."""
    UNAVAILABLE_RESPONSES.inc()


def count_db_error(kind: str) -> None:
    """kind: one of DB_ERROR_KINDS."""
    DB_ERRORS.labels(kind).inc()


def record_gateway_request(tenant: str, method: object, ok: bool | None, duration_ms: float | None) -> None:
    """Analytics from a touch body: ok=None means unknown (not counted as an error)."""
    m = normalise_mcp_method(method)
    child(GATEWAY_REQUESTS, tenant, m).inc()
    if ok is False:
        GATEWAY_REQUEST_ERRORS.labels(tenant, m).inc()
    if duration_ms is not None and math.isfinite(duration_ms) and duration_ms >= 0:
        child(GATEWAY_REQUEST_DURATION, tenant, m).observe(duration_ms / 1000.0)


def set_pool_stats(size: int, in_use: int, waiting: int) -> None:
    """This process's pool: open connections, checked out, callers waiting to acquire."""
    DB_POOL_SIZE.set(size)
    DB_POOL_IN_USE.set(in_use)
    DB_POOL_WAITING.set(waiting)


_live_label_sets: set[tuple[str, str]] = set()


def set_live_sessions(rows: Iterable[tuple[str, str, int]]) -> None:
    """Replace the live-session gauge with `rows` of (tenant, kind, count).

    Label sets absent from `rows` are removed (multi-process: set to 0, since values in the shared
    files cannot be removed).
    """
    global _live_label_sets
    totals: dict[tuple[str, str], int] = {}
    for tenant, kind, count in rows:
        key = (tenant, kind)
        totals[key] = totals.get(key, 0) + int(count)
    for key, count in totals.items():
        SESSIONS_LIVE.labels(*key).set(count)
    for key in _live_label_sets - totals.keys():
        if MULTIPROCESS:
            SESSIONS_LIVE.labels(*key).set(0)
        else:
            SESSIONS_LIVE.remove(*key)
    _live_label_sets = set(totals)


def clear_live_sessions() -> None:
    """Drop this process's live-session values (call when it stops being the leader)."""
    set_live_sessions(())


def set_purge_backlog(n: int) -> None:
    """Expired rows not yet purged."""
    PURGE_BACKLOG.set(n)


def record_purge_run(
    result: str,
    deleted_by_table: Mapping[str, int] | None = None,
    batch_durations: Iterable[float] = (),
) -> None:
    """One purge run: result ok|error|skipped, rows deleted per table, each batch's duration."""
    PURGE_RUNS.labels(result).inc()
    for table, n in (deleted_by_table or {}).items():
        if n > 0:
            PURGE_DELETED.labels(table).inc(n)
    for seconds in batch_durations:
        PURGE_BATCH_DURATION.observe(seconds)


# --- exposition --------------------------------------------------------------------------------------


def prepare_multiprocess_dir() -> None:
    """Create and empty PROMETHEUS_MULTIPROC_DIR. Call in the parent before uvicorn starts workers."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


def render_metrics() -> tuple[bytes, str]:
    """Body and content type for GET /metrics, aggregated over workers in multi-process mode."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def observe_http_request(route: str, method: str, status_class: str, seconds: float) -> None:
    """One answered HTTP request (the metrics middleware calls this once per request)."""
    child(HTTP_REQUESTS, route, method, status_class).inc()
    child(HTTP_DURATION, route, method).observe(seconds)
