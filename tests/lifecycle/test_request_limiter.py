"""The per-process side of request limits against the real database: admission, sync, and the two rules
that keep one process exact (highest synced counts remembered; counts being synced still counted)."""

from __future__ import annotations

import pytest

from app.db import Database
from app.errors import SessionRateLimited, SessionRequestLimit
from app.records import RequestCounts
from app.request_limits import RequestLimiter
from tests.helpers import create, make_settings


async def counts_of(raw_db, session_id: str) -> RequestCounts:
    row = await raw_db.fetchrow(
        """SELECT max_requests, max_requests_per_minute, created_at, request_count,
                  floor(EXTRACT(EPOCH FROM now() - created_at) / 60)::int AS window, rate_window, rate_count
             FROM sessions WHERE id = $1""",
        session_id,
    )
    in_window = row["rate_count"] if row["rate_window"] == row["window"] else 0
    return RequestCounts(
        row["max_requests"], row["max_requests_per_minute"], row["created_at"], row["request_count"],
        row["window"], in_window, 30.0,
    )  # fmt: skip


async def test_a_stale_snapshot_after_a_sync_cannot_make_admissions_disappear(client, raw_db, db) -> None:
    session = await create(client, max_requests=3)
    stale = await counts_of(raw_db, session["id"])
    limiter = RequestLimiter()
    for _ in range(3):
        limiter.admit("acme", session["id"], stale)
    await limiter.sync(db)
    assert (await counts_of(raw_db, session["id"])).request_count == 3
    # A touch whose statement read the row before the sync landed still sees 0: the limiter does not.
    with pytest.raises(SessionRequestLimit):
        limiter.admit("acme", session["id"], stale)
    # Another replica learns the count from the database.
    other = RequestLimiter()
    with pytest.raises(SessionRequestLimit):
        other.admit("acme", session["id"], await counts_of(raw_db, session["id"]))


async def test_minute_counts_add_up_across_replicas(client, raw_db, db) -> None:
    session = await create(client, max_requests_per_minute=4)
    a, b = RequestLimiter(), RequestLimiter()
    a.admit("acme", session["id"], await counts_of(raw_db, session["id"]))
    b.admit("acme", session["id"], await counts_of(raw_db, session["id"]))
    await a.sync(db)
    await b.sync(db)
    synced = await counts_of(raw_db, session["id"])
    assert synced.rate_count == 2 and synced.request_count == 2
    a.admit("acme", session["id"], synced)
    a.admit("acme", session["id"], synced)
    with pytest.raises(SessionRateLimited) as refused:
        a.admit("acme", session["id"], synced)
    assert refused.value.headers["Retry-After"] == "30"


async def test_a_failed_sync_keeps_the_counts(client, raw_db, database_url) -> None:
    session = await create(client, max_requests=10)
    limiter = RequestLimiter()
    for _ in range(2):
        limiter.admit("acme", session["id"], await counts_of(raw_db, session["id"]))
    closed = Database(make_settings(), database_url)  # never opened: every use fails
    with pytest.raises(RuntimeError):
        await limiter.sync(closed)
    working = Database(make_settings(), database_url)
    await working.open()
    try:
        await limiter.sync(working)
    finally:
        await working.close()
    assert (await counts_of(raw_db, session["id"])).request_count == 2
