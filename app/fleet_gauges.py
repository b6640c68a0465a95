"""Fleet-wide gauges: live sessions by tenant and kind, and the purge backlog.

Counting live sessions is a scan, so it must not happen per scrape on every replica (lesson 15). One
replica at a time (whoever takes a transaction-scoped advisory lock, at most once per interval) recounts
and stores the result in `fleet_gauges`; every process then exports that same stored result. So any
replica's /metrics shows the whole fleet, dashboards take `max` across replicas, and a change of leader
causes neither gaps nor double counting.
"""

from __future__ import annotations

import asyncio
import logging

from app import metrics
from app.config import Settings
from app.db import Database

log = logging.getLogger(__name__)

GAUGE_LOCK_KEY = 0x5E5510_6A

_CLAIM = """
SELECT pg_try_advisory_xact_lock($1::bigint)
   AND COALESCE((SELECT updated_at FROM broker_state WHERE key = 'gauges_refreshed'), '-infinity')
       < now() - $2::float8 * 0.8 * interval '1 second'
"""

_RECOUNT = """
WITH fresh AS (
    SELECT tenant, kind, count(*) AS live FROM sessions WHERE expires_at > now() GROUP BY tenant, kind
), cleared AS (
    DELETE FROM fleet_gauges AS g
     WHERE NOT EXISTS (SELECT 1 FROM fresh AS f WHERE f.tenant = g.tenant AND f.kind = g.kind)
), stored AS (
    INSERT INTO fleet_gauges AS g (tenant, kind, live) SELECT tenant, kind, live FROM fresh
    ON CONFLICT (tenant, kind) DO UPDATE SET live = EXCLUDED.live
), backlog AS (
    INSERT INTO broker_state AS b (key, value, updated_at)
    VALUES ('purge_backlog', (SELECT count(*) FROM sessions WHERE purge_after <= now()), now())
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
)
INSERT INTO broker_state AS b (key, value, updated_at) VALUES ('gauges_refreshed', 0, now())
ON CONFLICT (key) DO UPDATE SET updated_at = now()
"""

_READ_GAUGES = "SELECT tenant, kind, live FROM fleet_gauges"
_READ_BACKLOG = "SELECT value FROM broker_state WHERE key = 'purge_backlog'"


async def refresh(db: Database, settings: Settings) -> bool:
    """Recount if this replica wins the lock and the stored figures are due; True if it recounted."""
    async with db.timed("gauges") as connection, connection.transaction():
        if not await connection.fetchval(_CLAIM, GAUGE_LOCK_KEY, settings.stats_refresh_seconds):
            return False
        await connection.execute(_RECOUNT)
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
