"""Fleet-wide figures: the periodic live-session recount behind the gauges, and request analytics."""

from __future__ import annotations

from app.sql.statement import Statement

# The claim commits at once: the replica that takes the lock marks the figures as being refreshed, so no
# other replica recounts this interval, and no transaction stays open while the table is counted.
CLAIM_GAUGE_REFRESH = Statement(
    "claim_gauge_refresh",
    """
WITH due AS (
    SELECT pg_try_advisory_xact_lock(:key::bigint)
       AND COALESCE((SELECT updated_at FROM broker_state WHERE tenant = '' AND key = 'gauges_refreshed'),
                    '-infinity')
           < now() - :interval_seconds::float8 * 0.8 * interval '1 second' AS due
), claimed AS (
    INSERT INTO broker_state AS b (tenant, key, value, updated_at)
    SELECT '', 'gauges_refreshed', 0, now() FROM due WHERE due
    ON CONFLICT (tenant, key) DO UPDATE SET updated_at = now()
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM claimed)
""",
)

SESSIONS_BLOCKS = Statement(
    "sessions_blocks", "SELECT pg_relation_size('sessions') / current_setting('block_size')::bigint"
)

# A TID range scan (PostgreSQL 14+) reads only the blocks in [:start, :stop). A row that moves to another
# block mid-count may be counted twice or missed: the gauge is an estimate by one interval, never a drift
# that accumulates.
COUNT_SESSIONS_CHUNK = Statement(
    "count_sessions_chunk",
    """
SELECT tenant, kind, count(*) FILTER (WHERE expires_at > now()) AS live,
       count(*) FILTER (WHERE expires_at <= now()) AS backlog
  FROM sessions
 WHERE ctid >= :start::tid AND ctid < :stop::tid
 GROUP BY tenant, kind
""",
)

# Parallel arrays of tenant, kind, live; `:backlog` the purge backlog (expired rows not yet purged). Also
# a snapshot per tenant of its live count and its totals (counters and lifetime buckets) for window
# analytics, and the trimming of snapshots older than `:history_seconds` (docs/design.md, "Window
# analytics").
STORE_GAUGES = Statement(
    "store_gauges",
    """
WITH fresh AS (
    SELECT * FROM unnest(:tenants::text[], :kinds::text[], :live::bigint[]) AS f(tenant, kind, live)
     WHERE live > 0
), cleared AS (
    DELETE FROM fleet_gauges AS g
     WHERE NOT EXISTS (SELECT 1 FROM fresh AS f WHERE f.tenant = g.tenant AND f.kind = g.kind)
), stored AS (
    INSERT INTO fleet_gauges AS g (tenant, kind, live) SELECT tenant, kind, live FROM fresh
    ON CONFLICT (tenant, kind) DO UPDATE SET live = EXCLUDED.live
), counters AS (
    SELECT tenant, jsonb_object_agg(name, total) AS counters
      FROM (SELECT tenant, name, sum(value) AS total FROM session_counters GROUP BY 1, 2) AS c
     GROUP BY tenant
), lifetimes AS (
    SELECT tenant, jsonb_object_agg(bucket::text, jsonb_build_array(ended, seconds)) AS lifetimes
      FROM (SELECT tenant, bucket, sum(ended) AS ended, sum(seconds) AS seconds
              FROM session_lifetime_counters GROUP BY 1, 2) AS l
     GROUP BY tenant
), snapshot AS (
    INSERT INTO stats_snapshots (tenant, taken_at, live, totals)
    SELECT c.tenant, now(), COALESCE((SELECT sum(f.live) FROM fresh AS f WHERE f.tenant = c.tenant), 0),
           jsonb_build_object('counters', c.counters, 'lifetimes', COALESCE(l.lifetimes, '{}'::jsonb))
      FROM counters AS c LEFT JOIN lifetimes AS l ON l.tenant = c.tenant
    ON CONFLICT (tenant, taken_at) DO NOTHING
), trimmed AS (
    DELETE FROM stats_snapshots WHERE taken_at < now() - :history_seconds::float8 * interval '1 second'
)
INSERT INTO broker_state AS b (tenant, key, value, updated_at)
VALUES ('', 'purge_backlog', :backlog::bigint, now())
ON CONFLICT (tenant, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
""",
)

READ_GAUGES = Statement("read_gauges", "SELECT tenant, kind, live FROM fleet_gauges")
READ_PURGE_BACKLOG = Statement(
    "read_purge_backlog", "SELECT value FROM broker_state WHERE tenant = '' AND key = 'purge_backlog'"
)

# One tenant's tallies: parallel arrays, one element per method.
ADD_REQUEST_TOTALS = Statement(
    "add_request_totals",
    """
INSERT INTO gateway_request_totals AS t (tenant, method, requests, errors, timed, duration_ms_total)
SELECT :tenant::text, * FROM unnest(:methods::text[], :requests::bigint[], :errors::bigint[],
                                    :timed::bigint[], :duration_ms_total::float8[])
ON CONFLICT (tenant, method) DO UPDATE SET
    requests = t.requests + EXCLUDED.requests, errors = t.errors + EXCLUDED.errors,
    timed = t.timed + EXCLUDED.timed, duration_ms_total = t.duration_ms_total + EXCLUDED.duration_ms_total
""",
)

READ_REQUEST_TOTALS = Statement(
    "read_request_totals",
    "SELECT method, requests, errors, timed, duration_ms_total FROM gateway_request_totals "
    "WHERE tenant = :tenant",
)
