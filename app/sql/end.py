"""Ending live sessions deliberately: delete one, revoke by filters, evict the oldest idle of a full quota
scope. Each writes the tombstone, the `session.ended` event and the counter in the same statement."""

from __future__ import annotations

from itertools import combinations

from app.sql.fragments import (
    ENDED_COLUMNS,
    LIVE_AND_BOUND,
    end_chosen,
    ended_events,
    ending_effects,
    events_cte,
)
from app.sql.statement import Statement

DELETE_SESSION = Statement(
    "delete_session",
    f"""
WITH gone AS (
    DELETE FROM sessions WHERE {LIVE_AND_BOUND}
    RETURNING {ENDED_COLUMNS}, 'deleted'::text AS reason, now() AS ended_at
)
{ending_effects("gone", ":tombstone_seconds")}
{events_cte(ended_events("gone"))}
SELECT EXTRACT(EPOCH FROM ended_at - created_at)::float8 AS lifetime_seconds FROM gone
""",
)

REVOKE_FILTERS = ("principal", "client_id", "owner", "kind")


def _revoke(filters: tuple[str, ...]) -> Statement:
    """End up to `:batch` live sessions matching every filter (reason `revoked`); filter values are bound
    under the filter's own name. No filters: every live session of the tenant (`?all=true`)."""
    conditions = "".join(f" AND {name} = :{name}" for name in filters)
    return Statement(
        "revoke_by_" + "_".join(filters) if filters else "revoke_all",
        f"""
WITH doomed AS (
    -- FOR UPDATE (not SKIP LOCKED): a session being touched right now must be revoked too, not skipped.
    SELECT tenant, id FROM sessions WHERE tenant = :tenant AND expires_at > now(){conditions}
     ORDER BY id LIMIT :batch::int FOR UPDATE
){end_chosen("doomed", "revoked", ":tombstone_seconds")}""",
    )


# One statement per combination of filters (in REVOKE_FILTERS order), so each has its own plan; the empty
# combination clears the whole tenant.
REVOKE = {
    names: _revoke(names)
    for size in range(len(REVOKE_FILTERS) + 1)
    for names in combinations(REVOKE_FILTERS, size)
}

_SCOPE_FILTERS = {
    "tenant": "",  # the scope is the whole tenant
    "principal": " AND principal = :scope_value::text",
    "client": " AND client_id = :scope_value::text",
}


def _evict(scope: str) -> Statement:
    """End the least recently seen live session of a full scope (reason `evicted`); nothing if the scope
    has fewer than `:limit` live sessions."""
    where = f"tenant = :tenant AND expires_at > now(){_SCOPE_FILTERS[scope]}"
    return Statement(
        f"evict_oldest_idle_{scope}",
        f"""
WITH victim AS (
    SELECT tenant, id FROM sessions
     WHERE {where}
       AND (SELECT count(*) FROM (SELECT 1 FROM sessions WHERE {where} LIMIT :limit::int) AS x) >= :limit::int
     ORDER BY last_seen_at, id LIMIT 1
       FOR UPDATE SKIP LOCKED
){end_chosen("victim", "evicted", ":tombstone_seconds")}""",
    )


EVICT_OLDEST_IDLE = {scope: _evict(scope) for scope in _SCOPE_FILTERS}
