"""Reading the lifecycle event log for `GET /v1/events` (see `app/events.py` for the delivery rule)."""

from __future__ import annotations

from app.sql.statement import Statement

# Positions below this bound come from transactions older than every transaction still running.
_SAFE_BOUND = "(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 24)"

READ_EVENTS = Statement(
    "read_events",
    f"""
SELECT position, type, session_id, occurred_at, data FROM session_events
 WHERE tenant = :tenant AND position > :after::bigint AND position < {_SAFE_BOUND}
 ORDER BY position LIMIT :limit::int
""",
)

STREAM_START = Statement(
    "stream_start",
    f"""
SELECT {_SAFE_BOUND} - 1 AS head,
       COALESCE((SELECT value FROM broker_state WHERE key = 'events_purged_through'), 0) AS purged_through
""",
)
