"""Pending server-to-client requests (docs/design.md, "Pending requests"): record one, hand a client's
reply to it, cancel it, read it, the purge (deadlines and forgetting) and the tenant's figures.

States: `pending` -> `answered` | `cancelled` | `timed_out`. A pending request whose deadline has passed
reads as `timed_out` at once (the database clock), whether or not the purge has recorded it. Each ending
is one conditional UPDATE on `state = 'pending' AND deadline > now()`, so of a reply, a cancel and the
deadline exactly one ends the request; its event and counter are CTEs of the same statement.
"""

from __future__ import annotations

from app.sql.fragments import LIVE_AND_BOUND, SHARD, events_cte
from app.sql.statement import Statement

STATE = "CASE WHEN p.state = 'pending' AND p.deadline <= now() THEN 'timed_out' ELSE p.state END"
PENDING_COLUMNS = "pending_id, request_key, method, holder, created_at, deadline, ended_at"
_P = ", ".join("p." + column for column in PENDING_COLUMNS.split(", "))
_LIVE = f"live AS (SELECT 1 FROM sessions WHERE {LIVE_AND_BOUND})"
_FORGET_AT = "now() + :retention_seconds::int * interval '1 second'"


def _ended_effects(source: str) -> str:
    """CTEs counting (`pending:<state>:<method>`) the requests in `source` that ended, with an event each
    (`session.request_<state>`); `source` has tenant, session_id, state and PENDING_COLUMNS."""
    event = f"""
    SELECT 1 AS ord, x.tenant, 'session.request_' || x.state AS type, x.session_id, now() AS occurred_at,
           json_build_object('id', x.session_id, 'pending_id', x.pending_id,
                             'request_id', x.request_key::json, 'method', x.method, 'holder', x.holder,
                             'state', x.state,
                             'created_at', x.created_at, 'ended_at', x.ended_at,
                             'waited_seconds', EXTRACT(EPOCH FROM x.ended_at - x.created_at)::float8) AS data
      FROM {source} AS x"""
    return f"""
, ended_counted AS (
    INSERT INTO session_counters AS c (tenant, name, shard, value)
    SELECT tenant, 'pending:' || state || ':' || method, {SHARD}, count(*) FROM {source} GROUP BY 1, 2
    ON CONFLICT (tenant, name, shard) DO UPDATE SET value = c.value + EXCLUDED.value
){events_cte(event)}"""


# Another request of the session with the same JSON-RPC id that has ended is replaced (SDK sessions
# adopted on several replicas number their requests independently); a pending one is not (`recorded` empty).
RECORD_PENDING = Statement(
    "record_pending",
    f"""
WITH {_LIVE}, recorded AS (
    INSERT INTO session_pending_requests AS p (tenant, session_id, request_key, pending_id, method, holder,
                                               state, created_at, deadline, ended_at, response, check_at)
    SELECT :tenant, :id, :request_key, gen_random_uuid()::text, :method, :holder, 'pending', now(),
           now() + :timeout_seconds::int * interval '1 second', NULL, NULL,
           now() + :timeout_seconds::int * interval '1 second'
      FROM live
    ON CONFLICT (tenant, session_id, request_key) DO UPDATE
       SET pending_id = EXCLUDED.pending_id, method = EXCLUDED.method, holder = EXCLUDED.holder,
           state = 'pending', created_at = EXCLUDED.created_at, deadline = EXCLUDED.deadline, ended_at = NULL,
           response = NULL, check_at = EXCLUDED.check_at
     WHERE p.state <> 'pending'
    RETURNING {_P}, p.state
)
SELECT EXISTS (SELECT 1 FROM live) AS found, r.* FROM (SELECT 1) AS one LEFT JOIN recorded AS r ON true
""",
)


def _end(name: str, state: str, key_condition: str, response: str) -> Statement:
    """End the pending request of a live session bound to the caller that `key_condition` names, as
    `state`; `prior_state` says what the request was when nothing ended (NULL: no such request)."""
    return Statement(
        name,
        f"""
WITH {_LIVE}, current AS (
    SELECT {STATE} AS state FROM session_pending_requests AS p, live
     WHERE p.tenant = :tenant AND p.session_id = :id AND {key_condition}
), ended AS (
    UPDATE session_pending_requests AS p
       SET state = '{state}', ended_at = now(), response = {response}, check_at = {_FORGET_AT}
      FROM live
     WHERE p.tenant = :tenant AND p.session_id = :id AND {key_condition}
       AND p.state = 'pending' AND p.deadline > now()
    RETURNING p.tenant, p.session_id, p.state, {_P}
){_ended_effects("ended")}
SELECT EXISTS (SELECT 1 FROM live) AS found, (SELECT state FROM current) AS prior_state, e.*
  FROM (SELECT 1) AS one LEFT JOIN ended AS e ON true
""",
    )


ANSWER_PENDING = _end("answer_pending", "answered", "p.request_key = :request_key", ":response::json")
CANCEL_PENDING = _end("cancel_pending", "cancelled", "p.pending_id = :pending_id", "NULL")

GET_PENDING = Statement(
    "get_pending",
    f"""
WITH {_LIVE}
SELECT EXISTS (SELECT 1 FROM live) AS found, r.* FROM (SELECT 1) AS one LEFT JOIN (
    SELECT {_P}, {STATE} AS state, CASE WHEN {STATE} = 'timed_out' THEN COALESCE(p.ended_at, p.deadline)
                                        ELSE p.ended_at END AS ended_when, p.response
      FROM session_pending_requests AS p, live
     WHERE p.tenant = :tenant AND p.session_id = :id AND p.pending_id = :pending_id
) AS r ON true
""",
)

# Due rows: pending ones past their deadline become `timed_out` (ended at their deadline, with their
# event and counter); ended ones past retention are forgotten. One row per tenant, method and outcome.
PURGE_PENDING = Statement(
    "purge_pending",
    f"""
WITH due AS (
    SELECT ctid, state = 'pending' AS timing_out FROM session_pending_requests WHERE check_at <= now()
     ORDER BY check_at LIMIT :batch::int FOR UPDATE SKIP LOCKED
), timed AS (
    UPDATE session_pending_requests AS p
       SET state = 'timed_out', ended_at = p.deadline, check_at = {_FORGET_AT}
     WHERE p.ctid = ANY(ARRAY(SELECT ctid FROM due WHERE timing_out)) AND p.state = 'pending'
       AND p.deadline <= now()
    RETURNING p.tenant, p.session_id, p.state, {_P}
), gone AS (
    DELETE FROM session_pending_requests AS p
     WHERE p.ctid = ANY(ARRAY(SELECT ctid FROM due WHERE NOT timing_out)) AND p.state <> 'pending'
    RETURNING p.tenant
){_ended_effects("timed")}
SELECT tenant, method, 'timed_out' AS outcome, count(*)::int AS n, clock_timestamp() AS at
  FROM timed GROUP BY tenant, method
UNION ALL
SELECT tenant, NULL, 'forgotten', count(*)::int, clock_timestamp() FROM gone GROUP BY tenant
""",
)

PENDING_BY_METHOD = Statement(
    "pending_by_method",
    """SELECT method, count(*)::int AS n FROM session_pending_requests
        WHERE tenant = :tenant AND state = 'pending' AND deadline > now() GROUP BY method ORDER BY method""",
)

PENDING_ENDED_TOTALS = Statement(
    "pending_ended_totals",
    """SELECT name, sum(value)::bigint AS total FROM session_counters
        WHERE tenant = :tenant AND name LIKE 'pending:%' GROUP BY name""",
)

# Fleet gauges: requests pending now per tenant and method.
ALL_PENDING_COUNTS = Statement(
    "all_pending_counts",
    """SELECT tenant, method, count(*)::int AS n FROM session_pending_requests
        WHERE state = 'pending' AND deadline > now() GROUP BY tenant, method""",
)
