"""Prometheus collectors of the work-across-replicas API (docs/design.md, "Leases", "In-flight work",
"Pending requests"). Labels: `tenant` from configured API keys, `outcome` and `state` from the fixed
vocabularies below, `method` through `normalise_mcp_method` (app/mcp_methods.py)."""

from __future__ import annotations

from prometheus_client import Counter

from app.metrics import child, normalise_mcp_method

LEASE_OUTCOMES = ("acquired", "refused", "renewed", "released", "lost")
IN_FLIGHT_OUTCOMES = ("begun", "ended", "lost")
PENDING_STATES = ("answered", "cancelled", "timed_out")
REPLY_REFUSALS = ("unknown", "ended", "foreign")

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
