"""The lifecycle event stream (`GET /v1/events`, Server-Sent Events), read from `session_events`.

Why polling a table rather than LISTEN/NOTIFY (docs/design.md, "Events"): NOTIFY takes a global lock at
commit, which would sit on every create and delete, and it replays nothing to a listener that was away. A
table read by position works through every replica and every pooler, and resuming is just "positions after
N".

Delivery order and safety: positions carry the writing transaction's xid in their high bits. A reader only
delivers positions below `pg_snapshot_xmin(pg_current_snapshot())`, i.e. from transactions with an xid
older than every transaction still running. Anything that commits later has a larger xid, hence a larger
position, so a client that has seen position P can never miss an event below P. The cost: events wait
until older concurrent writes finish (milliseconds here; our statements are bounded by timeouts).

Durability: some writers commit asynchronously (touches, and the purge, whose events are expiries and
warnings): their commits are visible before their WAL is flushed, and a database crash can undo them and
hand their transaction ids out again. So whatever a read saw is delivered only once the WAL is flushed
past it (`_until_durable`; the WAL writer flushes within a few hundred milliseconds). A client never sees
an event, or a starting position, that a crash could take back, and every position it has seen stays
below every transaction id handed out after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import orjson

from app.db import Database
from app.errors import DatabaseUnavailable
from app.sql import events as sql

POLL_INTERVAL_SECONDS = 0.5
DURABLE_POLL_SECONDS = 0.02
KEEPALIVE_SECONDS = 15.0
HORIZON_CHECK_SECONDS = 15.0
BATCH = 500
EVENT_TYPES = (
    "session.created",
    "session.updated",
    "session.expiring",
    "session.ended",
    "session.rotated",
    # Work across replicas (docs/design.md, "Leases", "Pending requests").
    "session.lease_acquired",
    "session.lease_lost",
    "session.lease_released",
    "session.request_answered",
    "session.request_cancelled",
    "session.request_timed_out",
)


def frame(event: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    """One SSE frame."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    lines.append("data: " + orjson.dumps(data, option=orjson.OPT_UTC_Z).decode())
    return ("\n".join(lines) + "\n\n").encode()


async def _until_durable(connection: Any, read: Any) -> None:
    """Return once the WAL is flushed past `read` (a row with `read_lsn` and `flushed`)."""
    flushed = read["flushed"]
    while not flushed:
        await asyncio.sleep(DURABLE_POLL_SECONDS)
        flushed = await connection.fetchval(*sql.WAL_FLUSHED.bind(lsn=read["read_lsn"]))


async def _bounds(db: Database, tenant: str) -> tuple[int, int]:
    """(the newest deliverable position, the highest of the tenant's positions retention has removed)."""
    async with db.connection("events") as connection:
        row = await connection.fetchrow(*sql.STREAM_START.bind(tenant=tenant))
    return int(row["head"]), int(row["purged_through"])


def _gap(last_event_id: int, resumed_after: int, detail: str) -> bytes:
    return frame(
        "stream.gap",
        {"last_event_id": str(last_event_id), "resumed_after": str(resumed_after), "detail": detail},
        event_id=resumed_after,
    )


RETENTION_GAP = (
    "events after your Last-Event-ID were removed by retention before you read them; re-read the sessions "
    "you track (GET /v1/sessions) and continue from here"
)
AHEAD_GAP = (
    "your Last-Event-ID is ahead of the newest event (it was not issued by this database, e.g. after a "
    "restore); re-read the sessions you track (GET /v1/sessions) and continue from here"
)


async def starting_point(db: Database, tenant: str, last_event_id: int | None) -> tuple[int, bytes]:
    """Where a subscription starts, and the first frame to send.

    Without `Last-Event-ID` the stream starts now. When the stream cannot continue exactly after the
    given id, the client is told (`stream.gap`) instead of losing events silently or waiting forever:
    below the tenant's retention horizon, its events were removed; ahead of the newest event, the id is
    not one this database issued, and the stream continues from the newest. Otherwise the first frame is
    `stream.open`. Each carries the starting position as its SSE `id`, so a client that disconnects
    before any event arrives still resumes from exactly where it started.
    """
    async with db.connection("events") as connection:
        row = await connection.fetchrow(*sql.STREAM_START.bind(tenant=tenant))
        await _until_durable(connection, row)
    head, purged_through = int(row["head"]), int(row["purged_through"])
    if last_event_id is None:
        return head, frame("stream.open", {"detail": "streaming events after this id"}, event_id=head)
    if last_event_id < purged_through:
        return purged_through, _gap(last_event_id, purged_through, RETENTION_GAP)
    if last_event_id > head:
        return head, _gap(last_event_id, head, AHEAD_GAP)
    return last_event_id, frame(
        "stream.open", {"detail": "streaming events after this id"}, event_id=last_event_id
    )


async def stream(
    db: Database,
    tenant: str,
    cursor: int,
    first: bytes,
    disconnected: Callable[[], Coroutine[Any, Any, bool]],
    stopping: asyncio.Event,
) -> AsyncIterator[bytes]:
    """Yield SSE frames for the tenant's events after `cursor` until the client leaves or we shut down."""
    yield first
    last_sent = time.monotonic()
    read_through = cursor  # every event of the tenant up to here has been delivered
    horizon_checked = time.monotonic()
    while not stopping.is_set():
        if time.monotonic() - horizon_checked >= HORIZON_CHECK_SECONDS:
            # Retention may remove events a reader far behind has not read yet (an idle reader has read
            # through the bound of its last poll, so it never sees a false gap).
            horizon_checked = time.monotonic()
            try:
                _, purged_through = await _bounds(db, tenant)
            except DatabaseUnavailable:
                yield frame(
                    "stream.error", {"detail": "the session store is unavailable; reconnect to resume"}
                )
                return
            if read_through < purged_through:
                yield _gap(cursor, purged_through, RETENTION_GAP)
                cursor = read_through = purged_through
        try:
            async with db.connection("events") as connection:
                records = await connection.fetch(
                    *sql.READ_EVENTS.bind(tenant=tenant, after=cursor, limit=BATCH)
                )
                if records[0]["position"] is not None:
                    await _until_durable(connection, records[0])
        except DatabaseUnavailable:
            # End the stream; the client reconnects with Last-Event-ID and loses nothing.
            yield frame("stream.error", {"detail": "the session store is unavailable; reconnect to resume"})
            return
        rows = [record for record in records if record["position"] is not None]
        if not rows:
            read_through = max(read_through, int(records[0]["below"]) - 1)
        for row in rows:
            cursor = read_through = row["position"]
            yield frame(
                row["type"],
                {
                    "type": row["type"],
                    "session_id": row["session_id"],
                    "occurred_at": row["occurred_at"],
                    "data": row["data"],
                },
                event_id=cursor,
            )
            last_sent = time.monotonic()
        if len(rows) == BATCH:
            continue
        if await disconnected():
            return
        if time.monotonic() - last_sent >= KEEPALIVE_SECONDS:
            yield b": keepalive\n\n"
            last_sent = time.monotonic()
        with contextlib.suppress(TimeoutError):  # wake early on shutdown, else poll again
            await asyncio.wait_for(stopping.wait(), timeout=POLL_INTERVAL_SECONDS)
