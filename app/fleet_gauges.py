"""Fleet-wide gauges: live sessions by tenant and kind, and the purge backlog.

Counting live sessions is a scan, so it must not happen per scrape on every replica (lesson 15). One
replica at a time (whoever claims the interval under a transaction-scoped advisory lock) recounts, in
short block-range chunks, and stores the result in `fleet_gauges`; every process then exports that same
stored result. So any replica's /metrics shows the whole fleet, dashboards take `max` across replicas,
and a change of leader causes neither gaps nor double counting.
"""

from __future__ import annotations

import asyncio
import logging

from app import metrics
from app.config import Settings
from app.db import Database

log = logging.getLogger(__name__)

GAUGE_LOCK_KEY = 0x5E5510_6A

# Heap blocks per counting statement (8 MB, roughly 30,000 sessions). Why chunks: a statement holds its
# snapshot, and so the cluster-wide xmin horizon, for as long as it runs. One count over a million rows
# held it for about a second every interval, and meanwhile PostgreSQL could not prune the versions that
# touches leave behind, so hot pages filled up and touches stopped being HOT updates. A chunk takes a
# few milliseconds.
CHUNK_BLOCKS = 1024

# The claim commits at once: the replica that takes the lock marks the figures as being refreshed, so
# no other replica recounts this interval, and no transaction stays open while the table is counted.
_CLAIM = """
WITH due AS (
    SELECT pg_try_advisory_xact_lock($1::bigint)
       AND COALESCE((SELECT updated_at FROM broker_state WHERE key = 'gauges_refreshed'), '-infinity')
           < now() - $2::float8 * 0.8 * interval '1 second' AS due
), claimed AS (
    INSERT INTO broker_state AS b (key, value, updated_at)
    SELECT 'gauges_refreshed', 0, now() FROM due WHERE due
    ON CONFLICT (key) DO UPDATE SET updated_at = now()
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM claimed)
"""

_BLOCKS = "SELECT pg_relation_size('sessions') / current_setting('block_size')::bigint"

# A TID range scan (PostgreSQL 14+) reads only the blocks in [$1, $2); the last chunk's bound is past any
# block, so rows appended while counting are still seen. A row that moves to another block mid-count may be
# counted twice or missed: the gauge is an estimate by one interval, never a drift that accumulates.
_PAST_ANY_BLOCK = 2**32 - 1  # the largest block number a tid can hold
_COUNT_CHUNK = """
SELECT tenant, kind, count(*) FILTER (WHERE expires_at > now()) AS live,
       count(*) FILTER (WHERE purge_after <= now()) AS backlog
  FROM sessions
 WHERE ctid >= $1::tid AND ctid < $2::tid
 GROUP BY tenant, kind
"""

# $1/$2/$3: parallel arrays of tenant, kind, live; $4 the purge backlog.
_STORE = """
WITH fresh AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) AS f(tenant, kind, live) WHERE live > 0
), cleared AS (
    DELETE FROM fleet_gauges AS g
     WHERE NOT EXISTS (SELECT 1 FROM fresh AS f WHERE f.tenant = g.tenant AND f.kind = g.kind)
), stored AS (
    INSERT INTO fleet_gauges AS g (tenant, kind, live) SELECT tenant, kind, live FROM fresh
    ON CONFLICT (tenant, kind) DO UPDATE SET live = EXCLUDED.live
)
INSERT INTO broker_state AS b (key, value, updated_at) VALUES ('purge_backlog', $4::bigint, now())
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
"""

_READ_GAUGES = "SELECT tenant, kind, live FROM fleet_gauges"
_READ_BACKLOG = "SELECT value FROM broker_state WHERE key = 'purge_backlog'"


async def refresh(db: Database, settings: Settings, *, chunk_blocks: int = CHUNK_BLOCKS) -> bool:
    """Recount if this replica wins the claim and the stored figures are due; True if it recounted."""
    async with db.timed("gauges") as connection:
        async with connection.transaction():
            if not await connection.fetchval(_CLAIM, GAUGE_LOCK_KEY, settings.stats_refresh_seconds):
                return False
        live: dict[tuple[str, str], int] = {}
        backlog = 0
        blocks = int(await connection.fetchval(_BLOCKS))
        for start in range(0, max(blocks, 1), chunk_blocks):
            # Each chunk is its own autocommit statement: no snapshot outlives it.
            stop = start + chunk_blocks if start + chunk_blocks < blocks else _PAST_ANY_BLOCK
            for row in await connection.fetch(_COUNT_CHUNK, (start, 0), (stop, 0)):
                key = (row["tenant"], row["kind"])
                live[key] = live.get(key, 0) + row["live"]
                backlog += row["backlog"]
        keys = list(live)
        await connection.execute(
            _STORE, [t for t, _ in keys], [k for _, k in keys], [live[key] for key in keys], backlog
        )
        return True


async def publish(db: Database) -> None:
    """Export the stored fleet figures from this process."""
    async with db.timed("gauges") as connection:
        rows = await connection.fetch(_READ_GAUGES)
        backlog = await connection.fetchval(_READ_BACKLOG)
    metrics.set_live_sessions((row["tenant"], row["kind"], row["live"]) for row in rows)
    metrics.set_purge_backlog(int(backlog or 0))


async def gauges_loop(db: Database, settings: Settings) -> None:
    while True:
        try:
            await refresh(db, settings)
            await publish(db)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the database may be down; keep the last figures and try again
            log.debug("fleet gauges not refreshed: %s", type(error).__name__)
        await asyncio.sleep(settings.stats_refresh_seconds)
