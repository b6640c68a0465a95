"""Fleet-wide gauges: live sessions by tenant and kind, the purge backlog, and the stats snapshots behind
window analytics.

Counting live sessions is a scan, so it must not happen per scrape on every replica (docs/design.md,
"Fleet figures"). One replica at a time (whoever claims the interval under a transaction-scoped advisory
lock) recounts, in short block-range chunks, and stores the result in `fleet_gauges`; every process then
exports that same stored result. So any replica's /metrics shows the whole fleet, dashboards take `max`
across replicas, and a change of leader causes neither gaps nor double counting.

With each recount the leader also stores a snapshot per tenant (its live count and its totals) for window
analytics (`app/stats.py`): a window's figures are the totals now minus the snapshot at its start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from app import metrics, work_metrics
from app.config import Settings
from app.db import Database
from app.sql import fleet as sql
from app.sql import in_flight, pending

log = logging.getLogger(__name__)

GAUGE_LOCK_KEY = 0x5E5510_6A

# Heap blocks per counting statement (8 MB, roughly 30,000 sessions). Why chunks: a statement holds its
# snapshot, and so the cluster-wide xmin horizon, for as long as it runs. One count over a million rows
# held it for about a second every interval, and meanwhile PostgreSQL could not prune the versions that
# touches leave behind, so hot pages filled up and touches stopped being HOT updates. A chunk takes a
# few milliseconds.
CHUNK_BLOCKS = 1024

# The largest block number a tid can hold: the last chunk's bound, so rows appended while counting are
# still seen.
_PAST_ANY_BLOCK = 2**32 - 1

# The longest window `GET /v1/stats?window_seconds=` accepts; snapshots are kept this long (plus margin).
WINDOW_MAX_SECONDS = 86400


async def refresh(db: Database, settings: Settings, *, chunk_blocks: int = CHUNK_BLOCKS) -> bool:
    """Recount if this replica wins the claim and the stored figures are due; True if it recounted."""
    async with db.connection("gauges") as connection:
        async with connection.transaction():
            claim = sql.CLAIM_GAUGE_REFRESH.bind(
                key=GAUGE_LOCK_KEY, interval_seconds=settings.stats_refresh_seconds
            )
            if not await connection.fetchval(*claim):
                return False
        live: dict[tuple[str, str], int] = {}
        backlog = 0
        blocks = int(await connection.fetchval(*sql.SESSIONS_BLOCKS.bind()))
        for start in range(0, max(blocks, 1), chunk_blocks):
            # Each chunk is its own autocommit statement: no snapshot outlives it.
            stop = start + chunk_blocks if start + chunk_blocks < blocks else _PAST_ANY_BLOCK
            for row in await connection.fetch(
                *sql.COUNT_SESSIONS_CHUNK.bind(start=(start, 0), stop=(stop, 0))
            ):
                key = (row["tenant"], row["kind"])
                live[key] = live.get(key, 0) + row["live"]
                backlog += row["backlog"]
        keys = list(live)
        await connection.execute(
            *sql.STORE_GAUGES.bind(
                tenants=[t for t, _ in keys],
                kinds=[k for _, k in keys],
                live=[live[key] for key in keys],
                backlog=backlog,
                history_seconds=WINDOW_MAX_SECONDS + 2 * settings.stats_refresh_seconds,
            )
        )
        return True


OTHER_KIND = "other"


def bounded_kinds(rows: Iterable[tuple[str, str, int]], top: int) -> list[tuple[str, str, int]]:
    """Per tenant, its `top` largest kinds by name and the rest summed as `other`.

    `kind` is chosen by clients, and every distinct value would be a Prometheus series of its own: one
    client could create thousands. The recount keeps every kind (`GET /v1/stats` lists them all); only the
    exported label set is bounded. Ties go to the alphabetically first kind, so the set is stable."""
    by_tenant: dict[str, list[tuple[str, int]]] = {}
    for tenant, kind, live in rows:
        by_tenant.setdefault(tenant, []).append((kind, int(live)))
    bounded = []
    for tenant, kinds in by_tenant.items():
        kinds.sort(key=lambda item: (-item[1], item[0]))
        bounded += [(tenant, kind, live) for kind, live in kinds[:top]]
        rest = sum(live for _, live in kinds[top:])
        if rest:
            bounded.append((tenant, OTHER_KIND, rest))
    return bounded


async def publish(db: Database, settings: Settings) -> None:
    """Export the stored fleet figures from this process."""
    async with db.connection("gauges") as connection:
        rows = await connection.fetch(*sql.READ_GAUGES.bind())
        backlog = await connection.fetchval(*sql.READ_PURGE_BACKLOG.bind())
        marks = await connection.fetch(*in_flight.ALL_IN_FLIGHT_COUNTS.bind())
        waiting = await connection.fetch(*pending.ALL_PENDING_COUNTS.bind())
    counted = ((row["tenant"], row["kind"], row["live"]) for row in rows)
    metrics.set_live_sessions(bounded_kinds(counted, settings.metrics_top_kinds))
    metrics.set_purge_backlog(int(backlog or 0))
    work_metrics.set_work_gauges(
        ((row["tenant"], row["n"]) for row in marks),
        ((row["tenant"], row["method"], row["n"]) for row in waiting),
    )


async def gauges_loop(db: Database, settings: Settings) -> None:
    while True:
        try:
            await refresh(db, settings)
            await publish(db, settings)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the database may be down; keep the last figures and try again
            log.debug("fleet gauges not refreshed: %s", type(error).__name__)
        await asyncio.sleep(settings.stats_refresh_seconds)
