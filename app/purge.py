"""The purge: deletes ended sessions, forgotten tombstones and old events in small ordered batches.

Never one unbounded DELETE (docs/design.md, "Purge"). Each batch is its own short transaction that first
takes a transaction-scoped advisory lock (`pg_try_advisory_xact_lock`), so at most one replica purges at a
time, the lock can never leak (it ends with the transaction, also behind PgBouncer), and a replica that
dies mid-batch releases it with its connection. Candidates are picked `ORDER BY ... LIMIT n FOR UPDATE
SKIP LOCKED` and the DELETE re-checks expiry, so a session touched meanwhile is never removed. A run stops
after its time budget; the schedule is jittered so replicas do not wake together.

Expired sessions end here, officially: their tombstone, their `session.ended` event (with the real expiry
time) and their ended counter are written in the same statement that deletes them.
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
from app.sql import purge as sql
from app.sql.statement import Statement

log = logging.getLogger(__name__)

PURGE_LOCK_KEY = 0x5E5510_B0


@dataclass
class PurgeResult:
    deleted: dict[str, int] = field(default_factory=lambda: {"sessions": 0, "tombstones": 0, "events": 0})
    batches: int = 0
    skipped: bool = False  # another replica held the purge lock
    seconds: float = 0.0
    batch_seconds: list[float] = field(default_factory=list)
    # Server-side [lock taken, work done] of each batch, for checks that batches never overlap.
    batch_windows: list[tuple[datetime, datetime]] = field(default_factory=list)
    ended: metrics.Endings = field(default_factory=metrics.Endings)  # the expired sessions it ended

    def summary(self) -> dict[str, Any]:
        return {
            "deleted": self.deleted,
            "batches": self.batches,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
        }


async def _batch(
    connection: asyncpg.Connection,
    result: PurgeResult,
    table: str,
    statement: Statement,
    args: dict[str, Any],
) -> int | None:
    """One batch in its own transaction; None when another replica holds the purge lock."""
    started = time.perf_counter()
    async with connection.transaction():
        lock = await connection.fetchrow(*sql.TRY_PURGE_LOCK.bind(key=PURGE_LOCK_KEY))
        if not lock["locked"]:
            return None
        rows = await connection.fetch(*statement.bind(**args))
    if table == "sessions":
        count = len(rows)
        for row in rows:
            result.ended.add(row["tenant"], row["reason"], row["lifetime_seconds"])
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
    work: tuple[tuple[str, Statement, dict[str, Any]], ...] = (
        (
            "sessions",
            sql.PURGE_SESSIONS,
            {"batch": size, "tombstone_seconds": settings.tombstone_retention_seconds},
        ),
        ("tombstones", sql.PURGE_TOMBSTONES, {"batch": size}),
        ("events", sql.PURGE_EVENTS, {"batch": size, "retention_seconds": settings.event_retention_seconds}),
    )
    async with db.connection("purge") as connection:
        for table, statement, args in work:
            while time.perf_counter() < deadline:
                count = await _batch(connection, result, table, statement, args)
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
    result.ended.record()
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
