"""The purge: due sessions (ended when expired, warned or re-armed when not), forgotten tombstones,
idempotency keys and events past retention, one bounded batch each.

Every purge statement names its rows by ctid (`ctid = ANY(ARRAY(...))`, a TID scan), not by joining the
candidates back on their key: for a join the planner hashed a sequential scan of the whole table on every
batch, which was more than half of a batch's time at a million sessions. The ctids are stable because
the candidates are locked (`FOR UPDATE`) by the same transaction until it commits. A candidate that
another transaction updated after this statement's snapshot is locked in its newer version, which the
TID scan cannot see: it is left for a later batch, which is harmless here (its `check_at` has not moved,
so the next run picks it up), but is why revocation keeps its key join (`fragments.end_chosen`).
"""

from __future__ import annotations

from app.sql.fragments import (
    ENDED_COLUMNS,
    EXPIRY_REASON,
    asynchronous_commit,
    ended_events,
    ending_effects,
    events_cte,
    expiring_events,
    next_check,
)
from app.sql.statement import Statement

# Taken first in each batch's own transaction: one purger at a time across the fleet, and a lock that
# cannot leak (it ends with the transaction, also behind PgBouncer). With `:async_commit` the batch commits
# without waiting for its WAL flush (docs/design.md, "Purge"): a crash can undo the last batches, which
# leaves those rows due for the next run; the event stream delivers nothing before it is flushed.
TRY_PURGE_LOCK = Statement(
    "try_purge_lock",
    f"""SELECT pg_try_advisory_xact_lock(:key::bigint) AS locked, clock_timestamp() AS at,
       {asynchronous_commit(":async_commit")} AS commit_mode""",
)

_WARN_AT = "s.expires_at - :warning_seconds::int * interval '1 second'"
# A live due session gets its `session.expiring` now if warnings are on, it is inside the window, and it
# has not been warned for this approach: never warned, or its last touch after the warning put the expiry
# back outside the window (docs/design.md, "Expiry warnings").
_WARN_NOW = f"""(:warning_seconds::int > 0 AND {_WARN_AT} <= now()
       AND (s.warned_at IS NULL OR (s.last_seen_at > s.warned_at AND {_WARN_AT} > s.last_seen_at)))"""

# Due sessions (`check_at` passed; the index on check_at finds them, and only them, at any table size):
# - expired ones end here, officially: tombstone, `session.ended` with the real expiry time as `ended_at`,
#   ended counters, in this statement;
# - live ones were touched since `check_at` was set, or have come within the warning window: they get
#   their warning (`session.expiring`) when due and `check_at` moves to what can happen next.
# One row per (tenant, what happened); `lifetimes` and `delays` (seconds from expiry to this statement)
# feed the metrics without a row per session crossing the wire.
PURGE_SESSIONS = Statement(
    "purge_sessions",
    f"""
WITH due AS (
    -- Split here, so each TID scan below visits only its own rows.
    SELECT ctid, expires_at <= now() AS expired FROM sessions WHERE check_at <= now()
     ORDER BY check_at LIMIT :batch::int FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM sessions AS s
     WHERE s.ctid = ANY(ARRAY(SELECT ctid FROM due WHERE expired)) AND s.expires_at <= now()
    RETURNING {", ".join("s." + column for column in ENDED_COLUMNS.split(", "))},
              {EXPIRY_REASON} AS reason, s.expires_at AS ended_at
), armed AS (
    UPDATE sessions AS s
       SET check_at = {next_check("s.expires_at", ":warning_seconds")},
           warned_at = CASE WHEN {_WARN_NOW} THEN now() ELSE s.warned_at END
     WHERE s.ctid = ANY(ARRAY(SELECT ctid FROM due WHERE NOT expired)) AND s.expires_at > now()
    RETURNING {", ".join("s." + column for column in ENDED_COLUMNS.split(", "))}, s.expires_at,
              s.warned_at IS NOT DISTINCT FROM now() AS warned
), warned AS (
    SELECT * FROM armed WHERE warned
)
{ending_effects("gone", ":tombstone_seconds")}
{events_cte(ended_events("gone"), expiring_events("warned"))}
SELECT tenant, reason AS outcome, count(*)::int AS n,
       array_agg(EXTRACT(EPOCH FROM ended_at - created_at)::float8) AS lifetimes,
       array_agg(EXTRACT(EPOCH FROM clock_timestamp() - ended_at)::float8) AS delays, clock_timestamp() AS at
  FROM gone GROUP BY tenant, reason
UNION ALL
SELECT tenant, CASE WHEN warned THEN 'warned' ELSE 'armed' END, count(*)::int, NULL, NULL, clock_timestamp()
  FROM armed GROUP BY tenant, warned
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

PURGE_IDEMPOTENCY_KEYS = Statement(
    "purge_idempotency_keys",
    """
WITH doomed AS (
    SELECT ctid FROM idempotency_keys WHERE forget_after <= now()
     ORDER BY forget_after LIMIT :batch::int FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM idempotency_keys AS k
     WHERE k.ctid = ANY(ARRAY(SELECT ctid FROM doomed)) AND k.forget_after <= now()
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
    DELETE FROM session_events AS e WHERE e.ctid = ANY(ARRAY(SELECT ctid FROM doomed))
    RETURNING e.tenant, e.position
), horizon AS (
    INSERT INTO broker_state AS b (tenant, key, value, updated_at)
    SELECT tenant, 'events_purged_through', max(position), now() FROM gone GROUP BY tenant
    ON CONFLICT (tenant, key) DO UPDATE SET value = GREATEST(b.value, EXCLUDED.value), updated_at = now()
)
SELECT count(*) AS n, clock_timestamp() AS at FROM gone
""",
)
