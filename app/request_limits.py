"""Per-session request limits: `max_requests` touches in a session's life, `max_requests_per_minute` in
each minute counted from its creation (docs/design.md, "Request limits").

A touch must not gain a database write for this (most touches are throttled reads), so each process
counts the touches it admits in memory and adds them to the session rows in one statement every
REQUEST_LIMIT_SYNC_SECONDS. A touch's statement returns the counts synced so far; this process adds what
it has admitted and not yet synced, and refuses the touch (429) when that reaches a limit.

What a process knows exactly is its own admissions; other replicas' arrive with their next sync. So a
limit is exceeded only by touches that other replicas admitted and had not synced when this one decided:
with N replicas, at most what the N - 1 others admit for the session within one sync interval (and one
touch statement's duration), and never more than N times the limit.

Two details keep one process exact:
- the highest synced counts seen so far are remembered (from touches and from the sync's own answer), so a
  touch whose snapshot predates a sync that has already been subtracted from the pending counts cannot
  make admissions disappear;
- counts being synced stay counted until the sync's answer has been taken in. If a touch sees that sync's
  result before this process does, the touches are counted twice for that one decision: a refusal at most
  one sync early, never an overshoot.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime

from app import metrics
from app.db import Database
from app.errors import SessionRateLimited, SessionRequestLimit
from app.records import RequestCounts
from app.sql import limits as sql

log = logging.getLogger(__name__)

Key = tuple[str, str, datetime]  # tenant, session id, created_at
# A session's remembered counts are dropped after this long without touches (they are in the database).
FORGET_AFTER_SECONDS = 120.0


@dataclass(slots=True)
class _Count:
    total: int = 0  # admitted, not yet in the database
    window: int = -1  # the minute `in_window` belongs to
    in_window: int = 0  # admitted in that minute, not yet in the database

    def add(self, window: int, n: int = 1, total: int | None = None) -> None:
        self.total += n if total is None else total
        if window > self.window:
            self.window, self.in_window = window, 0
        if window == self.window:
            self.in_window += n

    def in_minute(self, window: int) -> int:
        return self.in_window if self.window == window else 0


@dataclass(slots=True)
class _Synced:
    """The highest synced counts seen for a session (all replicas' touches that reached the database)."""

    total: int
    window: int
    in_window: int
    seen: float  # monotonic time of the last touch

    def merge(self, total: int, window: int, in_window: int) -> None:
        self.total = max(self.total, total)
        if window > self.window:
            self.window, self.in_window = window, in_window
        elif window == self.window:
            self.in_window = max(self.in_window, in_window)


class RequestLimiter:
    """This process's side of the request limits: admission, and the periodic sync."""

    def __init__(self) -> None:
        self._pending: dict[Key, _Count] = {}
        self._syncing: dict[Key, _Count] = {}
        self._synced: dict[Key, _Synced] = {}

    def admit(self, tenant: str, session_id: str, counts: RequestCounts) -> None:
        """Count the touch, or raise the 429 of the limit it would exceed."""
        key = (tenant, session_id, counts.created_at)
        now = time.monotonic()
        synced = self._synced.get(key)
        if synced is None:
            synced = self._synced[key] = _Synced(
                counts.request_count, counts.rate_window, counts.rate_count, now
            )
        else:
            synced.merge(counts.request_count, counts.rate_window, counts.rate_count)
            synced.seen = now
        window = counts.rate_window
        pending = self._pending.get(key)
        syncing = self._syncing.get(key)
        used = synced.total + (pending.total if pending else 0) + (syncing.total if syncing else 0)
        if counts.max_requests and used >= counts.max_requests:
            metrics.count_request_limited(tenant, "max_requests")
            raise SessionRequestLimit(counts.max_requests)
        in_minute = (
            (synced.in_window if synced.window == window else 0)
            + (pending.in_minute(window) if pending else 0)
            + (syncing.in_minute(window) if syncing else 0)
        )
        if counts.max_requests_per_minute and in_minute >= counts.max_requests_per_minute:
            metrics.count_request_limited(tenant, "max_requests_per_minute")
            raise SessionRateLimited(counts.max_requests_per_minute, max(1, math.ceil(counts.window_left)))
        if pending is None:
            pending = self._pending[key] = _Count()
        pending.add(window)

    async def sync(self, db: Database) -> None:
        """Add the admitted touches to the database; on failure keep them for the next try."""
        self._forget_idle()
        if not self._pending:
            return
        self._syncing, self._pending = self._pending, {}
        keys = sorted(self._syncing)  # (tenant, id) order: the statement locks rows in that order
        try:
            async with db.connection("request_counts") as connection:
                rows = await connection.fetch(
                    *sql.ADD_REQUEST_COUNTS.bind(
                        tenants=[key[0] for key in keys],
                        ids=[key[1] for key in keys],
                        created=[key[2] for key in keys],
                        totals=[self._syncing[key].total for key in keys],
                        windows=[self._syncing[key].window for key in keys],
                        counts=[self._syncing[key].in_window for key in keys],
                    )
                )
        except BaseException:
            for key, count in self._syncing.items():  # back into pending, merged with anything newer
                self._pending.setdefault(key, _Count()).add(count.window, count.in_window, count.total)
            self._syncing = {}
            raise
        for row in rows:
            synced = self._synced.get((row["tenant"], row["id"], row["created_at"]))
            if synced is not None:
                synced.merge(row["request_count"], row["rate_window"], row["rate_count"])
        self._syncing = {}

    def _forget_idle(self) -> None:
        cutoff = time.monotonic() - FORGET_AFTER_SECONDS
        for key in [key for key, synced in self._synced.items() if synced.seen < cutoff]:
            if key not in self._pending:
                del self._synced[key]


async def sync_loop(limiter: RequestLimiter, db: Database, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await limiter.sync(db)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the database may be down: the counts wait for the next sync
            log.debug("request counts not synced: %s", type(error).__name__)
