"""The purge: deletes ended sessions, forgotten tombstones and old events in small ordered batches.

Lessons 10-11: never one unbounded DELETE. Each batch is its own short transaction that first takes a
transaction-scoped advisory lock (`pg_try_advisory_xact_lock`), so at most one replica purges at a time,
the lock can never leak (it ends with the transaction, also behind PgBouncer), and a replica that dies
mid-batch releases it with its connection. Candidates are picked `ORDER BY ... LIMIT n FOR UPDATE SKIP
LOCKED` and the DELETE re-checks expiry, so a session touched meanwhile is never removed. A run stops
after its time budget; the schedule is jittered so replicas do not wake together.

Expired sessions end here, officially: their tombstone, their `session.ended` event (with the real
expiry time) and their ended counter are written in the same statement that deletes them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from app import metrics
from app.config import Settings
from app.db import Database
from app.repository import ENDED_COLUMNS, EXPIRY_REASON, ended_events, ending_effects, events_cte

log = logging.getLogger(__name__)

PURGE_LOCK_KEY = 0x5E5510_B0
_TRY_LOCK = "SELECT pg_try_advisory_xact_lock($1::bigint) AS locked, clock_timestamp() AS at"

# $1 batch size, $2 tombstone retention. The index on purge_after finds candidates; purge_after is an
# upper bound of expires_at, so every candidate has expired, and the DELETE checks it again anyway.
#
# Every purge DELETE names its rows by ctid (`ctid = ANY(ARRAY(...))`, a TID scan), not by joining the
# candidates back on their key: for a join the planner hashed a sequential scan of the whole table on every
# batch, which was more than half of a batch's time at a million sessions. The ctids are stable because
# the candidates are locked (`FOR UPDATE`) by the same transaction until it commits. A candidate that
# another transaction updated after this statement's snapshot is locked in its newer version, which the
# TID scan cannot see: it is left for a later batch, which is harmless here (only a takeover by register
# updates an expired row, and that row is live again), but is why revocation keeps its key join.
_PURGE_SESSIONS = f"""
WITH doomed AS (
    SELECT ctid FROM sessions WHERE purge_after <= now()
     ORDER BY purge_after LIMIT $1::int FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM sessions AS s
     WHERE s.ctid = ANY(ARRAY(SELECT ctid FROM doomed)) AND s.expires_at <= now()
    RETURNING {", ".join("s." + column for column in ENDED_COLUMNS.split(", "))},
              {EXPIRY_REASON} AS reason, s.expires_at AS ended_at
)
{ending_effects("gone", "$2")}
{events_cte(ended_events("gone"))}
SELECT tenant, reason, EXTRACT(EPOCH FROM ended_at - created_at)::float8 AS lifetime_seconds,
       clock_timestamp() AS at
  FROM gone
"""

_PURGE_TOMBSTONES = """
WITH doomed AS (
    SELECT ctid FROM session_tombstones WHERE forget_after <= now()
     ORDER BY forget_after LIMIT $1::int FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM session_tombstones AS t
     WHERE t.ctid = ANY(ARRAY(SELECT ctid FROM doomed)) AND t.forget_after <= now()
    RETURNING 1
)
SELECT count(*) AS n, clock_timestamp() AS at FROM gone
"""

# Events go in position order up to the newest one past retention, and the highest purged position is
# recorded, so a stream client that asks to resume below it learns that it missed events.
_PURGE_EVENTS = """
WITH cutoff AS (
    SELECT position FROM session_events WHERE occurred_at < now() - $2::int * interval '1 second'
     ORDER BY occurred_at DESC LIMIT 1
), doomed AS (
    SELECT ctid FROM session_events WHERE position <= (SELECT position FROM cutoff)
     ORDER BY position LIMIT $1::int FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM session_events AS e WHERE e.ctid = ANY(ARRAY(SELECT ctid FROM doomed)) RETURNING e.position
), horizon AS (
    INSERT INTO broker_state AS b (key, value, updated_at)
    SELECT 'events_purged_through', max(position), now() FROM gone HAVING count(*) > 0
    ON CONFLICT (key) DO UPDATE SET value = GREATEST(b.value, EXCLUDED.value), updated_at = now()
)
SELECT count(*) AS n, clock_timestamp() AS at FROM gone
"""


@dataclass
class PurgeResult:
    deleted: dict[str, int] = field(default_factory=lambda: {"sessions": 0, "tombstones": 0, "events": 0})
    batches: int = 0
    skipped: bool = False  # another replica held the purge lock
    seconds: float = 0.0
    batch_seconds: list[float] = field(default_factory=list)
    # Server-side [lock taken, work done] of each batch, for checks that batches never overlap.
    batch_windows: list[tuple[datetime, datetime]] = field(default_factory=list)
    ended: list[tuple[str, str, float]] = field(default_factory=list)  # (tenant, reason, lifetime)

    def summary(self) -> dict[str, Any]:
        return {
            "deleted": self.deleted,
            "batches": self.batches,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
        }


async def _batch(
    connection: asyncpg.Connection, result: PurgeResult, table: str, statement: str, *args: Any
) -> int | None:
    """One batch in its own transaction; None when another replica holds the purge lock."""
    started = time.perf_counter()
    async with connection.transaction():
        lock = await connection.fetchrow(_TRY_LOCK, PURGE_LOCK_KEY)
        if not lock["locked"]:
            return None
        rows = await connection.fetch(statement, *args)
    if table == "sessions":
        count = len(rows)
        result.ended += [(row["tenant"], row["reason"], row["lifetime_seconds"]) for row in rows]
        finished = rows[-1]["at"] if rows else lock["at"]
    else:
        count = int(rows[0]["n"])
        finished = rows[0]["at"]
    result.batches += 1
    result.deleted[table] += count
    result.batch_seconds.append(time.perf_counter() - started)
    result.batch_windows.append((lock["at"], finished))
    return count


async def _pace(result: PurgeResult, started: float, deadline: float, max_rows_per_second: float) -> None:
    """Sleep off any lead over the configured rate. A backlog purged flat out takes a CPU of the database
    away from touches for as long as it lasts, which is what the touch tail latency feels; spread over
    time the same work costs far less latency. 0 means no limit."""
    if max_rows_per_second <= 0:
        return
    done = sum(result.deleted.values())
    now = time.perf_counter()
    lead = min(done / max_rows_per_second - (now - started), deadline - now)
    if lead > 0:
        await asyncio.sleep(lead)


async def purge_once(db: Database, settings: Settings, *, batch_size: int | None = None) -> PurgeResult:
    """One purge run within the time budget: sessions, then tombstones, then events."""
    size = batch_size or settings.purge_batch_size
    result = PurgeResult()
    started = time.perf_counter()
    deadline = started + settings.purge_time_budget_seconds
    work = (
        ("sessions", _PURGE_SESSIONS, (size, settings.tombstone_retention_seconds)),
        ("tombstones", _PURGE_TOMBSTONES, (size,)),
        ("events", _PURGE_EVENTS, (size, settings.event_retention_seconds)),
    )
    async with db.timed("purge") as connection:
        for table, statement, args in work:
            while time.perf_counter() < deadline:
                count = await _batch(connection, result, table, statement, *args)
                if count is None:
                    result.skipped = True
                    break
                if count < size:
                    break
                await _pace(result, started, deadline, settings.purge_max_rows_per_second)
            if result.skipped:
                break
    result.seconds = time.perf_counter() - started
    return result


def record(result: PurgeResult) -> None:
    """Publish a run's outcome as metrics."""
    for tenant, reason, lifetime in result.ended:
        metrics.count_ended(tenant, reason, lifetime)
    outcome = "skipped" if result.skipped and result.batches == 0 else "ok"
    metrics.record_purge_run(outcome, result.deleted, result.batch_seconds)


async def purge_loop(db: Database, settings: Settings) -> None:
    """Every replica runs this; the per-batch lock makes the work happen on one at a time."""
    while True:
        # Jitter 50-150 % of the interval so replicas started together do not wake together.
        await asyncio.sleep(settings.purge_interval_seconds * random.uniform(0.5, 1.5))
        try:
            result = await purge_once(db, settings)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a failed run is retried at the next interval; never kill the loop
            metrics.record_purge_run("error")
            log.warning("purge run failed: %s", type(error).__name__)
            continue
        record(result)
        if result.batches:
            log.info("purge run", extra={"purge": result.summary()})
