"""The purge: expired sessions, forgotten tombstones and events past retention, one bounded batch each.

Every purge DELETE names its rows by ctid (`ctid = ANY(ARRAY(...))`, a TID scan), not by joining the
candidates back on their key: for a join the planner hashed a sequential scan of the whole table on every
batch, which was more than half of a batch's time at a million sessions. The ctids are stable because
the candidates are locked (`FOR UPDATE`) by the same transaction until it commits. A candidate that
another transaction updated after this statement's snapshot is locked in its newer version, which the
TID scan cannot see: it is left for a later batch, which is harmless here (only a takeover by register
updates an expired row, and that row is live again), but is why revocation keeps its key join
(`fragments.end_chosen`).
"""

from __future__ import annotations

from app.sql.fragments import ENDED_COLUMNS, EXPIRY_REASON, ended_events, ending_effects, events_cte
from app.sql.statement import Statement

# Taken first in each batch's own transaction: one purger at a time across the fleet, and a lock that
# cannot leak (it ends with the transaction, also behind PgBouncer).
TRY_PURGE_LOCK = Statement(
    "try_purge_lock", "SELECT pg_try_advisory_xact_lock(:key::bigint) AS locked, clock_timestamp() AS at"
)

# The index on purge_after finds candidates; purge_after is an upper bound of expires_at, so every
# candidate has expired, and the DELETE checks it again anyway.
PURGE_SESSIONS = Statement(
    "purge_sessions",
    f"""
WITH doomed AS (
    SELECT ctid FROM sessions WHERE purge_after <= now()
     ORDER BY purge_after LIMIT :batch::int FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM sessions AS s
     WHERE s.ctid = ANY(ARRAY(SELECT ctid FROM doomed)) AND s.expires_at <= now()
    RETURNING {", ".join("s." + column for column in ENDED_COLUMNS.split(", "))},
              {EXPIRY_REASON} AS reason, s.expires_at AS ended_at
)
{ending_effects("gone", ":tombstone_seconds")}
{events_cte(ended_events("gone"))}
SELECT tenant, reason, EXTRACT(EPOCH FROM ended_at - created_at)::float8 AS lifetime_seconds,
       clock_timestamp() AS at
  FROM gone
""",
)

PURGE_TOMBSTONES = Statement(
    "purge_tombstones",
    """
WITH doomed AS (
    SELECT ctid FROM session_tombstones WHERE forget_after <= now()
     ORDER BY forget_after LIMIT :batch::int FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM session_tombstones AS t
     WHERE t.ctid = ANY(ARRAY(SELECT ctid FROM doomed)) AND t.forget_after <= now()
    RETURNING 1
)
SELECT count(*) AS n, clock_timestamp() AS at FROM gone
""",
)

# Events go in position order up to the newest one past retention, and the highest purged position is
# recorded, so a stream client that asks to resume below it learns that it missed events.
PURGE_EVENTS = Statement(
    "purge_events",
    """
WITH cutoff AS (
    SELECT position FROM session_events
     WHERE occurred_at < now() - :retention_seconds::int * interval '1 second'
     ORDER BY occurred_at DESC LIMIT 1
), doomed AS (
    SELECT ctid FROM session_events WHERE position <= (SELECT position FROM cutoff)
     ORDER BY position LIMIT :batch::int FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM session_events AS e WHERE e.ctid = ANY(ARRAY(SELECT ctid FROM doomed)) RETURNING e.position
), horizon AS (
    INSERT INTO broker_state AS b (key, value, updated_at)
    SELECT 'events_purged_through', max(position), now() FROM gone HAVING count(*) > 0
    ON CONFLICT (key) DO UPDATE SET value = GREATEST(b.value, EXCLUDED.value), updated_at = now()
)
SELECT count(*) AS n, clock_timestamp() AS at FROM gone
""",
)
