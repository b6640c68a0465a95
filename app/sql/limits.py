"""Per-session request limits: adding the touches a replica admitted to the session rows.

Each replica counts the touches it admits in memory (never a write per touch) and adds them here every
REQUEST_LIMIT_SYNC_SECONDS, in one statement (docs/design.md, "Request limits"). Parallel arrays, one
element per session, sorted by (tenant, id); `:created` tells a session from a later one with the same id.
The counts of the minute `:windows` (numbered from the session's creation) replace those of an older
minute; touches of a minute already closed only add to the lifetime count.
"""

from __future__ import annotations

from app.sql.statement import Statement

ADD_REQUEST_COUNTS = Statement(
    "add_request_counts",
    """
WITH d AS (
    SELECT * FROM unnest(:tenants::text[], :ids::text[], :created::timestamptz[], :totals::bigint[],
                         :windows::int[], :counts::int[])
           AS d(tenant, id, created_at, total, rate_window, rate_count)
), locked AS (
    -- Locked in (tenant, id) order, as every multi-row writer does: no deadlocks with group touches.
    SELECT s.tenant, s.id, d.total, d.rate_window, d.rate_count
      FROM d JOIN sessions AS s ON s.tenant = d.tenant AND s.id = d.id AND s.created_at = d.created_at
     ORDER BY s.tenant, s.id
       FOR UPDATE OF s
)
UPDATE sessions AS s
   SET request_count = s.request_count + l.total,
       rate_window = GREATEST(s.rate_window, l.rate_window),
       rate_count = CASE WHEN l.rate_window > s.rate_window THEN l.rate_count
                         WHEN l.rate_window = s.rate_window THEN s.rate_count + l.rate_count
                         ELSE s.rate_count END
  FROM locked AS l
 WHERE s.tenant = l.tenant AND s.id = l.id
RETURNING s.tenant, s.id, s.created_at, s.request_count, s.rate_window, s.rate_count
""",
)
