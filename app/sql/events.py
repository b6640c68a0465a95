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

READ_EVENTS = Statement(
    "read_events",
    f"""
SELECT position, type, session_id, occurred_at, data, wal.read_lsn, wal.flushed
  FROM session_events, {_WAL}
 WHERE tenant = :tenant AND position > :after::bigint AND position < {_SAFE_BOUND}
 ORDER BY position LIMIT :limit::int
""",
)

STREAM_START = Statement(
    "stream_start",
    f"""
SELECT {_SAFE_BOUND} - 1 AS head,
       COALESCE((SELECT value FROM broker_state WHERE key = 'events_purged_through'), 0) AS purged_through,
       wal.read_lsn, wal.flushed
  FROM {_WAL}
""",
)

WAL_FLUSHED = Statement("wal_flushed", "SELECT pg_current_wal_flush_lsn() >= :lsn::text::pg_lsn")
