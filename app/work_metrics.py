"""Prometheus collectors of the work-across-replicas API (docs/design.md, "Leases", "In-flight work",
"Pending requests"). Labels: `tenant` from configured API keys, `outcome` and `state` from the fixed
vocabularies below, `method` through `normalise_mcp_method` (app/mcp_methods.py)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge

from app.collectors import MULTIPROCESS, child
from app.mcp_methods import normalise_mcp_method

LEASE_OUTCOMES = ("acquired", "refused", "renewed", "released", "lost")
IN_FLIGHT_OUTCOMES = ("begun", "ended", "lost")
PENDING_STATES = ("answered", "cancelled", "timed_out")
REPLY_REFUSALS = ("unknown", "ended")
# The server-to-client requests, whose series exist from the start.
PENDING_METHODS = ("elicitation/create", "sampling/createMessage", "roots/list")

LEASES = Counter(
    "session_broker_leases_total",
    "Stream lease operations. outcome: acquired, refused (every slot held), renewed, released, lost (a "
    "renew or release found its lease gone).",
    ["tenant", "outcome"],
)
LEASES_EXPIRED = Counter(
    "session_broker_leases_expired_total",
    "Stream leases whose holder stopped renewing, removed by the purge (each with session.lease_lost).",
    ["tenant"],
)
IN_FLIGHT = Counter(
    "session_broker_in_flight_total",
    "In-flight marks. outcome: begun, ended, lost (an end or renew found its mark expired or gone).",
    ["tenant", "outcome"],
)
PENDING_CREATED = Counter(
    "session_broker_pending_requests_total",
    "Server-to-client requests recorded as pending, by MCP method.",
    ["tenant", "method"],
)
PENDING_ENDED = Counter(
    "session_broker_pending_requests_ended_total",
    "Pending server-to-client requests that ended. state: answered, cancelled, timed_out.",
    ["tenant", "method", "state"],
)
REPLIES_REFUSED = Counter(
    "session_broker_pending_replies_refused_total",
    "Client replies refused without effect. reason: unknown (no such request id in this session, or "
    "another principal's session), ended (the request had ended).",
    ["tenant", "reason"],
)


# Fleet-wide figures, read by every replica with the fleet gauges (app/fleet_gauges.py).
IN_FLIGHT_NOW = Gauge(
    "session_broker_in_flight_requests",
    "Requests marked in flight now (live in-flight marks), fleet-wide.",
    ["tenant"],
    multiprocess_mode="mostrecent",
)
PENDING_NOW = Gauge(
    "session_broker_pending_requests_open",
    "Server-to-client requests pending now, fleet-wide; method sampling/createMessage is the active "
    "completions.",
    ["tenant", "method"],
    multiprocess_mode="mostrecent",
)
_gauge_labels: dict[Gauge, set[tuple[str, ...]]] = {IN_FLIGHT_NOW: set(), PENDING_NOW: set()}


def _replace(gauge: Gauge, values: dict[tuple[str, ...], int]) -> None:
    for labels, value in values.items():
        gauge.labels(*labels).set(value)
    for labels in _gauge_labels[gauge] - values.keys():
        if MULTIPROCESS:
            gauge.labels(*labels).set(0)
        else:
            gauge.remove(*labels)
    _gauge_labels[gauge] = set(values)


def set_work_gauges(in_flight: Iterable[tuple[str, int]], pending: Iterable[tuple[str, str, int]]) -> None:
    """Replace the in-flight and pending gauges with (tenant, n) and (tenant, method, n) rows."""
    _replace(IN_FLIGHT_NOW, {(tenant,): n for tenant, n in in_flight})
    open_requests: dict[tuple[str, ...], int] = {}
    for tenant, method, n in pending:
        key = (tenant, normalise_mcp_method(method))
        open_requests[key] = open_requests.get(key, 0) + n
    _replace(PENDING_NOW, open_requests)


def count_lease(tenant: str, outcome: str) -> None:
    child(LEASES, tenant, outcome).inc()


def count_leases_expired(tenant: str, n: int) -> None:
    child(LEASES_EXPIRED, tenant).inc(n)


def count_in_flight(tenant: str, outcome: str) -> None:
    child(IN_FLIGHT, tenant, outcome).inc()


def count_pending(tenant: str, method: str) -> None:
    child(PENDING_CREATED, tenant, normalise_mcp_method(method)).inc()


def count_pending_ended(tenant: str, method: str, state: str, n: int = 1) -> None:
    child(PENDING_ENDED, tenant, normalise_mcp_method(method), state).inc(n)


def count_reply_refused(tenant: str, reason: str) -> None:
    child(REPLIES_REFUSED, tenant, reason).inc()


def register_tenants(tenants: Iterable[str]) -> None:
    """Create each tenant's series at zero (as `collectors.register_tenants` does for the session metrics), so
    they are exported, also with several workers, before the first lease, mark or pending request."""
    for tenant in tenants:
        for outcome in LEASE_OUTCOMES:
            LEASES.labels(tenant, outcome)
        LEASES_EXPIRED.labels(tenant)
        for outcome in IN_FLIGHT_OUTCOMES:
            IN_FLIGHT.labels(tenant, outcome)
        for reason in REPLY_REFUSALS:
            REPLIES_REFUSED.labels(tenant, reason)
        IN_FLIGHT_NOW.labels(tenant)
        for method in PENDING_METHODS:
            PENDING_CREATED.labels(tenant, method)
            PENDING_NOW.labels(tenant, method)
            for state in PENDING_STATES:
                PENDING_ENDED.labels(tenant, method, state)
