"""The purge: batches, pacing, time budget, one purger at a time, the CLI command.

Sessions here expire for real (short idle timeouts and real time); nothing backdates an internal column.
The bulk tests insert rows that expired hours ago through `expired_rows` (see its docstring).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime

import httpx

from app.db import Database
from app.purge import PURGE_LOCK_KEY, purge_once
from app.sql import purge as purge_sql
from tests.helpers import (
    assert_problem,
    auth,
    create,
    events_of,
    expired_rows,
    make_settings,
    path,
    run_command,
    ts,
)


async def until_expired(*sessions: dict) -> None:
    """Sleep (real time) until every session's `expires_at` has passed."""
    latest = max(ts(session["expires_at"]) for session in sessions)
    await asyncio.sleep(max(0.0, (latest - datetime.now(UTC)).total_seconds()) + 0.05)


async def test_purge_deletes_expired_sessions_with_tombstone_event_and_counter(
    client: httpx.AsyncClient, raw_db, db
) -> None:
    expired = await create(client, idle_timeout_seconds=1, kind="basket")
    live = await create(client)
    assert (await purge_once(db, make_settings())).deleted["sessions"] == 0  # not yet due
    await until_expired(expired)
    result = await purge_once(db, make_settings())
    assert result.deleted["sessions"] == 1 and not result.skipped
    ids = {row["id"] for row in await raw_db.fetch("SELECT id FROM sessions")}
    assert ids == {live["id"]}
    # Still explains itself after the row is gone, and the event carries the real expiry time.
    body = assert_problem(await client.get(path(expired["id"]), headers=auth()), 404, "session-not-found")
    assert body["reason"] == "expired_idle"
    ((_, data),) = [event for event in await events_of(raw_db, expired["id"]) if event[0] == "session.ended"]
    assert data["reason"] == "expired_idle" and data["kind"] == "basket"
    assert ts(data["ended_at"]) == ts(expired["expires_at"])
    ended_at = await raw_db.fetchval("SELECT ended_at FROM session_tombstones WHERE id = $1", expired["id"])
    assert ended_at == ts(expired["expires_at"])
    stats = (await client.get("/v1/stats", headers=auth())).json()
    assert stats["ended_total"]["expired_idle"] == 1 and stats["live"] == 1


async def test_a_session_touched_past_its_first_expiry_is_rearmed_and_purged_at_its_real_one(
    client_with, raw_db, db
) -> None:
    async with client_with(touch_granularity_seconds=0) as client:
        session = await create(client, idle_timeout_seconds=2)
        await asyncio.sleep(1.0)
        touched = (await client.post(path(session["id"]) + "/touch", headers=auth())).json()
        await until_expired(session)  # the expiry it was created with: its first check comes due
        first = await purge_once(db, make_settings())
        assert first.deleted["sessions"] == 0 and first.rearmed == 1
        check_at = await raw_db.fetchval("SELECT check_at FROM sessions WHERE id = $1", session["id"])
        assert check_at == ts(touched["expires_at"])  # armed at its current expiry, not later
        assert (await purge_once(db, make_settings())).processed == 0  # and not due again before that
        await until_expired(touched)
        second = await purge_once(db, make_settings())
    assert second.deleted["sessions"] == 1
    ((_, data),) = [event for event in await events_of(raw_db, session["id"]) if event[0] == "session.ended"]
    assert ts(data["ended_at"]) == ts(touched["expires_at"])


async def test_the_purge_reads_only_due_rows_however_large_the_table(raw_db) -> None:
    # 100,000 live sessions and 10 expired ones: the statement's index scan returns the 10 and nothing
    # else, so a purge run costs what is due, not what is stored.
    await raw_db.execute(
        """INSERT INTO sessions (tenant, id, kind, metadata, version, idle_timeout_seconds,
                                 max_lifetime_seconds, created_at, last_seen_at, expires_at, check_at)
           SELECT 'bulk', 'live-' || n, 'mcp', '{}', 1, 1800, 28800, now(), now(),
                  now() + interval '1800 seconds', now() + interval '1800 seconds'
             FROM generate_series(1, 100000) AS n"""
    )
    await expired_rows(raw_db, 10)
    await raw_db.execute("ANALYZE sessions")
    sql, *values = purge_sql.PURGE_SESSIONS.bind(batch=5000, tombstone_seconds=86400, warning_seconds=0)
    run = raw_db.transaction()
    await run.start()
    try:  # EXPLAIN ANALYZE runs the statement: roll it back
        plan = "\n".join(row[0] for row in await raw_db.fetch("EXPLAIN ANALYZE " + sql, *values))
    finally:
        await run.rollback()
    scan = [line for line in plan.splitlines() if "ix_sessions_check_at" in line]
    assert scan and "rows=10" in scan[0], plan
    assert "Seq Scan on sessions" not in plan, plan


async def test_purge_of_200000_rows_runs_in_bounded_batches(raw_db, db) -> None:
    await expired_rows(raw_db, 200_000)
    settings = make_settings(
        purge_batch_size=5000,
        purge_time_budget_seconds=300,
        purge_max_rows_per_second=0,
        purge_max_busy_fraction=1,
    )
    result = await purge_once(db, settings)
    assert result.deleted["sessions"] == 200_000
    assert await raw_db.fetchval("SELECT count(*) FROM sessions") == 0
    session_batches = [w for w in result.batch_windows][: 200_000 // 5000 + 1]
    assert len(session_batches) >= 40  # bounded: never one giant DELETE
    assert await raw_db.fetchval("SELECT count(*) FROM session_tombstones WHERE tenant = 'bulk'") == 200_000
    assert await raw_db.fetchval("SELECT count(*) FROM session_events WHERE tenant = 'bulk'") == 200_000


async def test_purge_is_paced_to_its_rate_limit(raw_db, db) -> None:
    await expired_rows(raw_db, 3000)
    settings = make_settings(purge_batch_size=500, purge_max_rows_per_second=2000, purge_max_busy_fraction=1)
    result = await purge_once(db, settings)
    assert result.deleted["sessions"] == 3000
    # After its sixth batch the run has deleted 3,000 rows: at 2,000 rows/s that is 1.5 s at the earliest.
    assert result.seconds >= 1.45, result.seconds
    gaps = [b[0] - a[1] for a, b in zip(result.batch_windows, result.batch_windows[1:], strict=False)]
    assert max(gap.total_seconds() for gap in gaps) >= 0.1  # it waited between batches, not at the end


async def test_purge_pacing_never_outlasts_the_time_budget(raw_db, db) -> None:
    await expired_rows(raw_db, 3000)
    settings = make_settings(
        purge_batch_size=500,
        purge_max_rows_per_second=500,
        purge_time_budget_seconds=1.0,
        purge_max_busy_fraction=1,
    )
    result = await purge_once(db, settings)
    assert 500 <= result.deleted["sessions"] < 3000
    assert result.seconds < 2.0, result.seconds
    # No limits (0 rows/s, busy all the time) runs flat out: the rest goes in one run.
    flat_out = make_settings(purge_batch_size=500, purge_max_rows_per_second=0, purge_max_busy_fraction=1)
    rest = await purge_once(db, flat_out)
    assert result.deleted["sessions"] + rest.deleted["sessions"] == 3000


async def test_purge_rests_so_its_statements_take_at_most_their_share_of_the_run(raw_db, db) -> None:
    """PURGE_MAX_BUSY_FRACTION follows the database's load: the rest is measured in the batches' own time,
    so batches slowed by a busy database buy longer rests. No rate limit here: only the share paces."""
    await expired_rows(raw_db, 20_000)
    settings = make_settings(
        purge_batch_size=1000,
        purge_max_rows_per_second=0,
        purge_max_busy_fraction=0.25,
        purge_time_budget_seconds=300,
    )
    result = await purge_once(db, settings)
    assert result.deleted["sessions"] == 20_000
    busy = result.batch_seconds
    # Every batch but the last (it found less than a full batch and ended the run) was followed by a rest
    # that brought the statements' share down to a quarter; nor did it rest much longer than that.
    assert result.seconds >= (sum(busy) - busy[-1]) / 0.25 * 0.98, (result.seconds, sum(busy))
    assert result.seconds <= sum(busy) / 0.25 + 0.5, (result.seconds, sum(busy))
    # The rest comes after each full batch (about three times its length), not all at the end.
    windows = result.batch_windows[:20]
    for (began, done), (next_began, _) in itertools.pairwise(windows):
        assert (next_began - done) >= 2 * (done - began), windows


async def test_purge_batches_delete_by_tid_not_by_scanning_the_table(raw_db) -> None:
    # A key join back to the candidates let the planner hash a sequential scan of the whole table on every
    # batch; each DELETE must find its rows directly (TID scan), whatever the table's size.
    await raw_db.execute(
        """INSERT INTO sessions (tenant, id, kind, metadata, version, idle_timeout_seconds,
                                 max_lifetime_seconds, created_at, last_seen_at, expires_at, check_at)
           SELECT 'bulk', 'id-' || n, 'mcp', '{}', 1, 60, 3600, now() - interval '2 hours',
                  now() - interval '2 hours', now() + (n % 2 * 2 - 1) * interval '1 hour',
                  now() + (n % 2 * 2 - 1) * interval '1 hour'
             FROM generate_series(1, 20000) AS n;
           INSERT INTO session_tombstones (tenant, id, reason, ended_at, forget_after)
           SELECT 'bulk', 'gone-' || n, 'deleted', now() - interval '2 days',
                  now() + (n % 2 * 2 - 1) * interval '1 hour'
             FROM generate_series(1, 20000) AS n;
           INSERT INTO session_events (position, tenant, type, session_id, occurred_at, data)
           SELECT n, 'bulk', 'session.ended', 'gone-' || n, now() - (n % 2 * 3) * interval '1 day', '{}'
             FROM generate_series(1, 20000) AS n;
           INSERT INTO idempotency_keys (tenant, key, fingerprint, response, created_at, forget_after)
           SELECT 'bulk', 'key-' || n, 'f', '{}', now() - interval '2 days',
                  now() + (n % 2 * 2 - 1) * interval '1 hour'
             FROM generate_series(1, 20000) AS n;
           ANALYZE sessions, session_tombstones, session_events, idempotency_keys"""
    )
    for table, statement, args in (
        (
            "sessions",
            purge_sql.PURGE_SESSIONS,
            {"batch": 5000, "tombstone_seconds": 86400, "warning_seconds": 0},
        ),
        ("session_tombstones", purge_sql.PURGE_TOMBSTONES, {"batch": 5000}),
        ("idempotency_keys", purge_sql.PURGE_IDEMPOTENCY_KEYS, {"batch": 5000}),
        ("session_events", purge_sql.PURGE_EVENTS, {"batch": 5000, "retention_seconds": 86400}),
    ):
        sql, *values = statement.bind(**args)
        plan = "\n".join(row[0] for row in await raw_db.fetch("EXPLAIN " + sql, *values))
        assert f"Tid Scan on {table}" in plan and f"Seq Scan on {table}" not in plan, plan


async def test_purge_is_skipped_while_another_replica_holds_the_lock(client, raw_db, db) -> None:
    await until_expired(await create(client, idle_timeout_seconds=1))
    async with raw_db.transaction():
        assert await raw_db.fetchval("SELECT pg_try_advisory_xact_lock($1::bigint)", PURGE_LOCK_KEY)
        held = await purge_once(db, make_settings())
    assert held.skipped and held.deleted["sessions"] == 0
    released = await purge_once(db, make_settings())
    assert released.deleted["sessions"] == 1


async def test_two_purgers_never_work_at_the_same_time_and_delete_everything_once(
    database_url: str, raw_db
) -> None:
    await expired_rows(raw_db, 20_000)
    settings = make_settings(purge_batch_size=500, purge_time_budget_seconds=120)
    first, second = Database(settings, database_url), Database(settings, database_url)
    await first.open()
    await second.open()
    try:
        totals = 0
        windows = []
        while await raw_db.fetchval("SELECT count(*) FROM sessions") > 0:
            a, b = await asyncio.gather(purge_once(first, settings), purge_once(second, settings))
            totals += a.deleted["sessions"] + b.deleted["sessions"]
            windows += a.batch_windows + b.batch_windows
    finally:
        await first.close()
        await second.close()
    assert totals == 20_000
    windows.sort()
    for (_, end), (start, _) in itertools.pairwise(windows):
        assert end <= start, "two purge batches overlapped"


async def test_a_session_touched_during_purges_is_never_deleted(client_with, raw_db, db) -> None:
    async with client_with(touch_granularity_seconds=0) as client:
        kept = [await create(client, idle_timeout_seconds=1) for _ in range(20)]
        doomed = [await create(client, idle_timeout_seconds=1) for _ in range(20)]  # never touched
        stop = asyncio.Event()

        async def purge_continuously() -> int:
            deleted = 0
            while not stop.is_set():
                deleted += (await purge_once(db, make_settings())).deleted["sessions"]
                await asyncio.sleep(0)
            return deleted

        purger = asyncio.create_task(purge_continuously())
        for _ in range(12):  # 2.4 s: each 1 s-idle session lives only because it keeps being touched
            statuses = await asyncio.gather(
                *(client.post(path(session["id"]) + "/touch", headers=auth()) for session in kept)
            )
            assert {response.status_code for response in statuses} == {200}
            await asyncio.sleep(0.2)
        stop.set()
        assert await purger == 20
        remaining = {row["id"] for row in await raw_db.fetch("SELECT id FROM sessions")}
        assert remaining == {session["id"] for session in kept}
        assert not {session["id"] for session in doomed} & remaining


def test_purge_command_runs_once_and_prints_what_it_deleted(database_url: str) -> None:
    result = run_command(
        "purge", "--database-url", database_url, env={"SESSION_BROKER_PURGE_ENABLED": "false"}, timeout=60
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    tables = {"sessions", "leases", "in_flight", "pending", "tombstones", "idempotency_keys", "events"}
    assert set(summary["deleted"]) == tables
    assert summary["skipped"] is False and {"warned", "rearmed"} <= set(summary)
