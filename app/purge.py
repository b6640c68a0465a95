"""The purge: ends expired sessions, sends expiry warnings, deletes forgotten tombstones, idempotency keys
and old events, in small ordered batches.

Never one unbounded DELETE (docs/design.md, "Purge"). Each batch is its own short transaction that first
takes a transaction-scoped advisory lock (`pg_try_advisory_xact_lock`), so at most one replica purges at a
time, the lock can never leak (it ends with the transaction, also behind PgBouncer), and a replica that
dies mid-batch releases it with its connection. Candidates are picked `ORDER BY ... LIMIT n FOR UPDATE
SKIP LOCKED` and the DELETE re-checks expiry, so a session touched meanwhile is never removed. A run stops
after its time budget; the schedule is jittered so replicas do not wake together.

Expired sessions end here, officially: their tombstone, their `session.ended` event (with the real expiry
time) and their ended counter are written in the same statement that deletes them. The purge finds them by
`check_at`, a lower bound of what can happen next to a session that touches never move, so a run reads
only the rows that are due: an expiry is recorded within one run interval of happening (twice
PURGE_INTERVAL_SECONDS at worst, with the jitter), whatever the table's size (docs/design.md, "Purge").
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

from app import metrics, work_metrics
from app.config import Settings
from app.db import Database
from app.sql import in_flight as in_flight_sql
from app.sql import leases as leases_sql
from app.sql import pending as pending_sql
from app.sql import purge as sql
from app.sql.statement import Statement

log = logging.getLogger(__name__)

PURGE_LOCK_KEY = 0x5E5510_B0


TABLES = ("sessions", "leases", "in_flight", "pending", "tombstones", "idempotency_keys", "events")


@dataclass
class PurgeResult:
    deleted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    warned: int = 0  # sessions that got their `session.expiring`
    rearmed: int = 0  # live due sessions whose next check moved (touched since it was set)
    batches: int = 0
    skipped: bool = False  # another replica held the purge lock
    seconds: float = 0.0
    batch_seconds: list[float] = field(default_factory=list)
    # Server-side [lock taken, work done] of each batch, for checks that batches never overlap.
    batch_windows: list[tuple[datetime, datetime]] = field(default_factory=list)
    max_notice_delay: float = 0.0  # the longest time from an expiry to its record, in seconds

    @property
    def processed(self) -> int:
        """Rows written: deleted, warned or re-armed (what pacing counts)."""
        return sum(self.deleted.values()) + self.warned + self.rearmed

    def summary(self) -> dict[str, Any]:
        return {
            "deleted": self.deleted,
            "warned": self.warned,
            "rearmed": self.rearmed,
            "batches": self.batches,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "max_notice_delay_seconds": round(self.max_notice_delay, 3),
        }


async def _batch(
    connection: asyncpg.Connection,
    result: PurgeResult,
    table: str,
    statement: Statement,
    args: dict[str, Any],
    async_commit: bool,
    publish: bool,
) -> int | None:
    """One batch in its own transaction; None when another replica holds the purge lock."""
    started = time.perf_counter()
    async with connection.transaction():
        lock = await connection.fetchrow(
            *sql.TRY_PURGE_LOCK.bind(key=PURGE_LOCK_KEY, async_commit=async_commit)
        )
        if not lock["locked"]:
            return None
        rows = await connection.fetch(*statement.bind(**args))
    if table == "sessions":
        count = _take_sessions(result, rows, publish)
        finished = max((row["at"] for row in rows), default=lock["at"])
    else:
        # One row, or (leases, in-flight marks) one per tenant and none when there was nothing to do.
        count = sum(int(row["n"]) for row in rows)
        finished = max((row["at"] for row in rows), default=lock["at"])
        result.deleted[table] += count
        if table == "leases" and publish:
            for row in rows:
                work_metrics.count_leases_expired(row["tenant"], row["n"])
        if table == "pending" and publish:
            for row in rows:
                if row["outcome"] == "timed_out":
                    work_metrics.count_pending_ended(row["tenant"], row["method"], "timed_out", row["n"])
    result.batches += 1
    result.batch_seconds.append(time.perf_counter() - started)
    result.batch_windows.append((lock["at"], finished))
    return count


def _take_sessions(result: PurgeResult, rows: list[asyncpg.Record], publish: bool) -> int:
    """Add one sessions batch (rows per tenant and outcome) to the result, and with `publish` to the
    metrics at once (batch by batch: a long run never holds them all back, nor the event loop for long);
    the rows it processed."""
    count = 0
    for row in rows:
        count += row["n"]
        if row["outcome"] == "warned":
            result.warned += row["n"]
            if publish:
                metrics.count_expiry_warnings(row["tenant"], row["n"])
        elif row["outcome"] == "armed":
            result.rearmed += row["n"]
        else:  # an expiry reason
            result.deleted["sessions"] += row["n"]
            result.max_notice_delay = max(result.max_notice_delay, *row["delays"])
            if publish:
                metrics.count_ended_many(row["tenant"], row["outcome"], row["lifetimes"])
                metrics.observe_expiry_notice_delays(row["delays"])
    return count


async def _pace(result: PurgeResult, started: float, deadline: float, settings: Settings) -> None:
    """Rest after a batch while the run is ahead of either limit (docs/design.md, "Purge"):
    - `PURGE_MAX_ROWS_PER_SECOND` (0: none), a ceiling on the pace;
    - `PURGE_MAX_BUSY_FRACTION` (1: none), the share of the run's time spent in statements. This one
      follows the load: a database busy with touches runs each batch slower, so the purge rests longer
      and takes a bounded share of the CPU that touches need, instead of a whole core for as long as a
      backlog lasts (with small batches, so touches meet short busy spells, not long ones)."""
    elapsed = time.perf_counter() - started
    leads = [sum(result.batch_seconds) / settings.purge_max_busy_fraction - elapsed]
    if settings.purge_max_rows_per_second > 0:
        leads.append(result.processed / settings.purge_max_rows_per_second - elapsed)
    lead = min(max(leads), deadline - started - elapsed)
    if lead > 0:
        await asyncio.sleep(lead)


async def purge_once(
    db: Database, settings: Settings, *, batch_size: int | None = None, publish: bool = True
) -> PurgeResult:
    """One purge run within the time budget: sessions, then tombstones, idempotency keys, events. With
    `publish`, the sessions it ended or warned are counted in this process's metrics as it goes (`record`
    adds the run itself)."""
    size = batch_size or settings.purge_batch_size
    result = PurgeResult()
    started = time.perf_counter()
    deadline = started + settings.purge_time_budget_seconds
    work: tuple[tuple[str, Statement, dict[str, Any]], ...] = (
        (
            "sessions",
            sql.PURGE_SESSIONS,
            {
                "batch": size,
                "tombstone_seconds": settings.tombstone_retention_seconds,
                "warning_seconds": settings.expiry_warning_seconds,
            },
        ),
        ("leases", leases_sql.PURGE_LEASES, {"batch": size}),
        ("in_flight", in_flight_sql.PURGE_IN_FLIGHT, {"batch": size}),
        (
            "pending",
            pending_sql.PURGE_PENDING,
            {"batch": size, "retention_seconds": settings.pending_retention_seconds},
        ),
        ("tombstones", sql.PURGE_TOMBSTONES, {"batch": size}),
        ("idempotency_keys", sql.PURGE_IDEMPOTENCY_KEYS, {"batch": size}),
        ("events", sql.PURGE_EVENTS, {"batch": size, "retention_seconds": settings.event_retention_seconds}),
    )
    async with db.connection("purge") as connection:
        for table, statement, args in work:
            while time.perf_counter() < deadline:
                count = await _batch(
                    connection, result, table, statement, args, not settings.purge_synchronous_commit, publish
                )
                if count is None:
                    result.skipped = True
                    break
                if count < size:
                    break
                await _pace(result, started, deadline, settings)
            if result.skipped:
                break
    result.seconds = time.perf_counter() - started
    return result


def record(result: PurgeResult) -> None:
    """Publish a run as metrics (what it ended was published batch by batch)."""
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
        if result.processed:
            log.info("purge run", extra={"purge": result.summary()})
