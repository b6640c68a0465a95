"""Reading the lifecycle event log for `GET /v1/events` (see `app/events.py` for the delivery rule).

Each read also says where the WAL was when it read (`read_lsn`: past the commit record of every
transaction it could see) and whether the WAL is flushed that far; the stream delivers what it read only
once it is (`WAL_FLUSHED`), so no client sees an event that a database crash could undo (docs/design.md,
"Events").
"""

from __future__ import annotations

from app.sql.statement import Statement

# Positions below this bound come from transactions older than every transaction still running.
_SAFE_BOUND = "(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 24)"
# Evaluated once per statement, after its snapshot was taken.
_WAL = """(SELECT pg_current_wal_insert_lsn()::text AS read_lsn,
               pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn() AS flushed) AS wal"""

# Up to `:limit` events after `:after`, the bound they were read below, and the WAL position of the read:
# one row with NULL event columns when there are none, so an idle reader learns how far it has read
# (nothing of its tenant below the bound is missing).
READ_EVENTS = Statement(
    "read_events",
    f"""
WITH bound AS (SELECT {_SAFE_BOUND} AS below)
SELECT bound.below, wal.read_lsn, wal.flushed, e.position, e.type, e.session_id, e.occurred_at, e.data
  FROM bound CROSS JOIN {_WAL} LEFT JOIN LATERAL (
       SELECT position, type, session_id, occurred_at, data FROM session_events
        WHERE tenant = :tenant AND position > :after::bigint AND position < bound.below
        ORDER BY position LIMIT :limit::int
  ) AS e ON true
 ORDER BY e.position
""",
)

STREAM_START = Statement(
    "stream_start",
    f"""
SELECT {_SAFE_BOUND} - 1 AS head,
       COALESCE((SELECT max(value) FROM broker_state
                  WHERE tenant IN (:tenant, '') AND key = 'events_purged_through'), 0) AS purged_through,
       wal.read_lsn, wal.flushed
  FROM {_WAL}
""",
)

WAL_FLUSHED = Statement("wal_flushed", "SELECT pg_current_wal_flush_lsn() >= :lsn::text::pg_lsn")
