"""Lifecycle in one process: purge, tombstones, revocation, rotation, quotas, admin surface."""

from __future__ import annotations

import asyncio
import itertools
import json

import asyncpg
import httpx
import pytest

from app import fleet_gauges
from app.db import Database, asyncpg_dsn
from app.purge import (
    _PURGE_EVENTS,
    _PURGE_SESSIONS,
    _PURGE_TOMBSTONES,
    PURGE_LOCK_KEY,
    purge_once,
)
from tests.helpers import (
    ADMIN_KEY,
    GLOBEX_KEY,
    age,
    assert_problem,
    auth,
    create,
    make_settings,
    path,
    run_command,
)


async def events_of(raw_db: asyncpg.Connection, session_id: str) -> list[tuple[str, dict]]:
    rows = await raw_db.fetch(
        "SELECT type, data FROM session_events WHERE session_id = $1 ORDER BY position", session_id
    )
    return [(row["type"], json.loads(row["data"])) for row in rows]


@pytest.fixture
async def db(database_url: str, raw_db: asyncpg.Connection):
    database = Database(make_settings(), database_url)
    await database.open()
    yield database
    await database.close()


async def expire_all(raw_db: asyncpg.Connection, seconds: int = 700) -> None:
    """Move every session `seconds` into the past (past expiry and past its purge_after step)."""
    await raw_db.execute(
        """UPDATE sessions SET created_at = created_at - $1 * interval '1 second',
               last_seen_at = last_seen_at - $1 * interval '1 second',
               expires_at = LEAST(expires_at, now()) - $1 * interval '1 second',
               purge_after = LEAST(purge_after, now()) - $1 * interval '1 second'""",
        seconds,
    )


# --- purge ------------------------------------------------------------------------------------------


async def test_purge_deletes_expired_sessions_with_tombstone_event_and_counter(
    client: httpx.AsyncClient, raw_db, db
) -> None:
    expired = await create(client, idle_timeout_seconds=60, kind="basket")
    await expire_all(raw_db)
    live = await create(client)
    result = await purge_once(db, make_settings())
    assert result.deleted["sessions"] == 1 and not result.skipped
    ids = {row["id"] for row in await raw_db.fetch("SELECT id FROM sessions")}
    assert ids == {live["id"]}
    # Still explains itself after the row is gone, and the event carries the real expiry time.
    body = assert_problem(await client.get(path(expired["id"]), headers=auth()), 404, "session-not-found")
    assert body["reason"] == "expired_idle"
    ((_, data),) = [event for event in await events_of(raw_db, expired["id"]) if event[0] == "session.ended"]
    assert data["reason"] == "expired_idle" and data["kind"] == "basket"
    ended_at = await raw_db.fetchval("SELECT ended_at FROM session_tombstones WHERE id = $1", expired["id"])
    assert ended_at is not None and data["ended_at"].startswith(ended_at.strftime("%Y-%m-%dT%H:%M:%S"))
    stats = (await client.get("/v1/stats", headers=auth())).json()
    assert stats["ended_total"]["expired_idle"] == 1 and stats["live"] == 1


async def expired_rows(raw_db: asyncpg.Connection, count: int) -> None:
    """`count` sessions of tenant `bulk`, past expiry and past their purge_after step."""
    await raw_db.execute(
        """INSERT INTO sessions (tenant, id, kind, metadata, version, idle_timeout_seconds,
                                 max_lifetime_seconds, created_at, last_seen_at, expires_at, purge_after)
           SELECT 'bulk', 'old-' || n, 'mcp', '{}', 1, 60, 3600, now() - interval '2 hours',
                  now() - interval '2 hours', now() - interval '1 hour', now() - interval '50 minutes'
             FROM generate_series(1, $1::int) AS n""",
        count,
    )


async def test_purge_of_200000_rows_runs_in_bounded_batches(raw_db, db) -> None:
    await expired_rows(raw_db, 200_000)
    settings = make_settings(
        purge_batch_size=5000, purge_time_budget_seconds=300, purge_max_rows_per_second=0
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
    settings = make_settings(purge_batch_size=500, purge_max_rows_per_second=2000)
    result = await purge_once(db, settings)
    assert result.deleted["sessions"] == 3000
    # After its sixth batch the run has deleted 3,000 rows: at 2,000 rows/s that is 1.5 s at the earliest.
    assert result.seconds >= 1.45, result.seconds
    gaps = [b[0] - a[1] for a, b in zip(result.batch_windows, result.batch_windows[1:], strict=False)]
    assert max(gap.total_seconds() for gap in gaps) >= 0.1  # it waited between batches, not at the end


async def test_purge_pacing_never_outlasts_the_time_budget(raw_db, db) -> None:
    await expired_rows(raw_db, 3000)
    settings = make_settings(
        purge_batch_size=500, purge_max_rows_per_second=500, purge_time_budget_seconds=1.0
    )
    result = await purge_once(db, settings)
    assert 500 <= result.deleted["sessions"] < 3000
    assert result.seconds < 2.0, result.seconds
    # Unlimited (0) runs flat out: the rest goes in one run, with no sleeping to speak of.
    rest = await purge_once(db, make_settings(purge_batch_size=500, purge_max_rows_per_second=0))
    assert result.deleted["sessions"] + rest.deleted["sessions"] == 3000


async def test_purge_batches_delete_by_tid_not_by_scanning_the_table(raw_db) -> None:
    # A key join back to the candidates let the planner hash a sequential scan of the whole table on every
    # batch; each DELETE must find its rows directly (TID scan), whatever the table's size.
    await raw_db.execute(
        """INSERT INTO sessions (tenant, id, kind, metadata, version, idle_timeout_seconds,
                                 max_lifetime_seconds, created_at, last_seen_at, expires_at, purge_after)
           SELECT 'bulk', 'id-' || n, 'mcp', '{}', 1, 60, 3600, now() - interval '2 hours',
                  now() - interval '2 hours', now() + (n % 2 * 2 - 1) * interval '1 hour',
                  now() + (n % 2 * 2 - 1) * interval '50 minutes'
             FROM generate_series(1, 20000) AS n;
           INSERT INTO session_tombstones (tenant, id, reason, ended_at, forget_after)
           SELECT 'bulk', 'gone-' || n, 'deleted', now() - interval '2 days',
                  now() + (n % 2 * 2 - 1) * interval '1 hour'
             FROM generate_series(1, 20000) AS n;
           INSERT INTO session_events (position, tenant, type, session_id, occurred_at, data)
           SELECT n, 'bulk', 'session.ended', 'gone-' || n, now() - (n % 2 * 3) * interval '1 day', '{}'
             FROM generate_series(1, 20000) AS n;
           ANALYZE sessions, session_tombstones, session_events"""
    )
    for table, statement, args in (
        ("sessions", _PURGE_SESSIONS, (5000, 86400)),
        ("session_tombstones", _PURGE_TOMBSTONES, (5000,)),
        ("session_events", _PURGE_EVENTS, (5000, 86400)),
    ):
        plan = "\n".join(row[0] for row in await raw_db.fetch("EXPLAIN " + statement, *args))
        assert f"Tid Scan on {table}" in plan and f"Seq Scan on {table}" not in plan, plan


async def test_purge_is_skipped_while_another_replica_holds_the_lock(client, raw_db, db) -> None:
    await create(client, idle_timeout_seconds=60)
    await expire_all(raw_db)
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
        doomed = [await create(client, idle_timeout_seconds=60) for _ in range(20)]
        await raw_db.execute(
            "UPDATE sessions SET expires_at = now() - interval '1 second', "
            "purge_after = now() - interval '1 second'"
            " WHERE id = ANY($1::text[])",
            [session["id"] for session in doomed],
        )
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


def test_purge_command_runs_once_and_prints_what_it_deleted(database_url: str) -> None:
    result = run_command(
        "purge", "--database-url", database_url, env={"SESSION_BROKER_PURGE_ENABLED": "false"}, timeout=60
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary["deleted"]) == {"sessions", "tombstones", "events"} and summary["skipped"] is False


# --- tombstones -------------------------------------------------------------------------------------


async def test_tombstones_are_forgotten_after_retention(client_with, raw_db, db) -> None:
    async with client_with(tombstone_retention_seconds=1) as client:
        session = await create(client)
        await client.delete(path(session["id"]), headers=auth())
        assert (await client.put(path(session["id"]), headers=auth())).status_code == 409
        await asyncio.sleep(1.1)
        await purge_once(db, make_settings())
        assert await raw_db.fetchval("SELECT count(*) FROM session_tombstones") == 0
        body = (await client.get(path(session["id"]), headers=auth())).json()
        assert body["status"] == 404 and "reason" not in body
        assert (await client.put(path(session["id"]), headers=auth())).status_code == 201


async def test_a_deleted_id_cannot_come_back_but_an_expired_one_can(
    client: httpx.AsyncClient, raw_db, db
) -> None:
    await client.put(path("deleted-one"), headers=auth())
    await client.delete(path("deleted-one"), headers=auth())
    retired = await client.put(path("deleted-one"), headers=auth())
    assert assert_problem(retired, 409, "session-id-retired")["reason"] == "deleted"
    await client.put(path("expired-one"), json={"idle_timeout_seconds": 60}, headers=auth())
    await expire_all(raw_db)
    await purge_once(db, make_settings())
    assert (await client.put(path("expired-one"), headers=auth())).status_code == 201


# --- revocation -------------------------------------------------------------------------------------


async def test_revoke_all_sessions_of_a_principal(client: httpx.AsyncClient, raw_db) -> None:
    alice = [await create(client, principal="alice", client_id=f"c{i}") for i in range(3)]
    bob = await create(client, principal="bob")
    other_tenant = await client.post("/v1/sessions", json={"principal": "alice"}, headers=auth(GLOBEX_KEY))
    response = await client.delete("/v1/sessions", params={"principal": "alice"}, headers=auth())
    assert response.status_code == 200 and response.json() == {"revoked": 3}
    for session in alice:
        body = assert_problem(await client.get(path(session["id"]), headers=auth()), 404, "session-not-found")
        assert body["reason"] == "revoked"
        assert ("session.ended", "revoked") in [
            (t, d.get("reason")) for t, d in await events_of(raw_db, session["id"])
        ]
    assert (await client.get(path(bob["id"]), headers=auth())).status_code == 200
    assert (await client.get(path(other_tenant.json()["id"]), headers=auth(GLOBEX_KEY))).status_code == 200
    again = await client.delete("/v1/sessions", params={"principal": "alice"}, headers=auth())
    assert again.json() == {"revoked": 0}  # idempotent under retries
    stats = (await client.get("/v1/stats", headers=auth())).json()
    assert stats["ended_total"]["revoked"] == 3


async def test_revoke_waits_for_a_concurrent_touch_and_still_ends_the_session(
    client: httpx.AsyncClient, raw_db, direct_database_url: str
) -> None:
    session = await create(client, principal="alice")
    # A touch of that session is in flight: it holds the row lock when the revocation starts.
    toucher = await asyncpg.connect(asyncpg_dsn(direct_database_url))
    try:
        touching = toucher.transaction()
        await touching.start()
        await toucher.execute(
            "UPDATE sessions SET last_seen_at = now(), expires_at = expires_at + interval '1 second' "
            "WHERE id = $1",
            session["id"],
        )
        revoking = asyncio.create_task(
            client.delete("/v1/sessions", params={"principal": "alice"}, headers=auth())
        )
        await asyncio.sleep(0.5)
        assert not revoking.done()  # waiting for the touch's lock, not skipping the session
        await touching.commit()
        response = await revoking
    finally:
        await toucher.close()
    # The revocation's snapshot predates the touch's new row version; it must end that version anyway.
    assert response.json() == {"revoked": 1}
    body = assert_problem(await client.get(path(session["id"]), headers=auth()), 404, "session-not-found")
    assert body["reason"] == "revoked"


async def test_revoke_by_client_and_owner_together(client: httpx.AsyncClient) -> None:
    await create(client, client_id="c1", owner="gw-1")
    await create(client, client_id="c1", owner="gw-2")
    response = await client.delete(
        "/v1/sessions", params={"client_id": "c1", "owner": "gw-2"}, headers=auth()
    )
    assert response.json() == {"revoked": 1}


@pytest.mark.parametrize("params", [{}, {"limit": "5"}, {"principal": ""}])
async def test_revoke_needs_a_filter(client: httpx.AsyncClient, params: dict) -> None:
    await create(client, principal="alice")
    assert_problem(
        await client.delete("/v1/sessions", params=params, headers=auth()), 422, "validation-error"
    )
    assert (await client.get("/v1/stats", headers=auth())).json()["live"] == 1


# --- rotation ---------------------------------------------------------------------------------------


async def test_rotate_moves_the_session_to_a_new_id_atomically(client: httpx.AsyncClient, raw_db) -> None:
    old = await create(client, principal="alice", metadata={"k": "v"}, owner="gw-1", idle_timeout_seconds=600)
    response = await client.post(
        path(old["id"]) + "/rotate", headers={**auth(), "Session-Principal": "alice"}
    )
    assert response.status_code == 201
    new = response.json()
    assert new["id"] != old["id"] and len(new["id"]) == 43
    assert response.headers["location"] == path(new["id"])
    for field in (
        "kind",
        "principal",
        "client_id",
        "owner",
        "metadata",
        "created_at",
        "expires_at",
        "idle_timeout_seconds",
        "max_lifetime_seconds",
    ):
        assert new[field] == old[field], field
    assert new["version"] == old["version"] + 1
    body = assert_problem(await client.get(path(old["id"]), headers=auth()), 404, "session-not-found")
    assert body["reason"] == "rotated"
    assert (await client.get(path(new["id"]), headers=auth())).status_code == 200
    ((kind, data),) = await events_of(raw_db, new["id"])
    assert kind == "session.rotated" and data == {**data, "old_id": old["id"], "new_id": new["id"]}
    assert (await client.put(path(old["id"]), headers=auth())).status_code == 409


async def test_rotate_respects_binding_and_missing(client: httpx.AsyncClient) -> None:
    session = await create(client, principal="alice")
    mismatch = await client.post(
        path(session["id"]) + "/rotate", headers={**auth(), "Session-Principal": "eve"}
    )
    assert_problem(mismatch, 404, "session-not-found")
    assert (await client.get(path(session["id"]), headers=auth())).status_code == 200
    assert_problem(await client.post(path("ghost") + "/rotate", headers=auth()), 404, "session-not-found")


# --- quotas -----------------------------------------------------------------------------------------


async def test_reject_policy_answers_429_naming_the_limit(client_with) -> None:
    async with client_with(max_sessions_per_principal=2) as client:
        for _ in range(2):
            await create(client, principal="alice")
        response = await client.post("/v1/sessions", json={"principal": "alice"}, headers=auth())
        problem = assert_problem(response, 429, "quota-exceeded")
        assert problem["scope"] == "principal" and problem["limit"] == 2
        assert int(response.headers["retry-after"]) > 0
        assert (
            await client.post("/v1/sessions", json={"principal": "bob"}, headers=auth())
        ).status_code == 201
        stats = (await client.get("/v1/stats", headers=auth())).json()
        assert stats["live"] == 3 and stats["limits"]["max_sessions_per_principal"] == 2


async def test_expired_sessions_do_not_count_against_a_quota(client_with, raw_db) -> None:
    async with client_with(max_sessions_per_client=1) as client:
        first = await create(client, client_id="claude", idle_timeout_seconds=60)
        await age(raw_db, first["id"], 61)
        assert (
            await client.post("/v1/sessions", json={"client_id": "claude"}, headers=auth())
        ).status_code == 201


async def test_evict_oldest_idle_ends_the_least_recently_seen(client_with, raw_db) -> None:
    async with client_with(max_sessions_per_tenant=3, quota_policy="evict_oldest_idle") as client:
        sessions = [await create(client) for _ in range(3)]
        await age(raw_db, sessions[1]["id"], 100)  # the least recently seen
        fourth = await client.post("/v1/sessions", headers=auth())
        assert fourth.status_code == 201
        body = assert_problem(
            await client.get(path(sessions[1]["id"]), headers=auth()), 404, "session-not-found"
        )
        assert body["reason"] == "evicted"
        assert [t for t, _ in await events_of(raw_db, sessions[1]["id"])][-1] == "session.ended"
        assert (await client.get("/v1/stats", headers=auth())).json()["live"] == 3
        metrics = (await client.get("/metrics")).text
        assert 'session_broker_quota_evictions_total{scope="tenant",tenant="acme"} 1.0' in metrics


async def test_tenant_overrides(client_with) -> None:
    overrides = json.dumps({"globex": {"max_sessions_per_tenant": 1}})
    async with client_with(tenant_quotas=overrides) as client:
        assert (await client.post("/v1/sessions", headers=auth(GLOBEX_KEY))).status_code == 201
        assert (await client.post("/v1/sessions", headers=auth(GLOBEX_KEY))).status_code == 429
        assert (await client.post("/v1/sessions", headers=auth())).status_code == 201  # acme: defaults


async def test_concurrent_creates_do_not_overshoot(client_with) -> None:
    async with client_with(max_sessions_per_principal=5, db_pool_max_size=30) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/sessions", json={"principal": "alice"}, headers=auth()) for _ in range(40))
        )
        assert sorted(response.status_code for response in responses) == [201] * 5 + [429] * 35
        listed = await client.get("/v1/sessions", params={"principal": "alice"}, headers=auth())
        assert len(listed.json()["items"]) == 5


@pytest.mark.parametrize(
    "value",
    ['{"acme": {"max_sessions_per_principl": 5}}', "[1]", "{not json", '{"acme": {"quota_policy": "drop"}}'],
)
def test_bad_tenant_quotas_fail_at_start(value: str) -> None:
    from app.config import ConfigurationError
    from app.quotas import Quotas

    with pytest.raises(ConfigurationError, match="SESSION_BROKER_TENANT_QUOTAS"):
        Quotas(make_settings(tenant_quotas=value))


# --- admin ------------------------------------------------------------------------------------------


async def test_admin_stats_cross_tenants_and_only_for_admins(client: httpx.AsyncClient) -> None:
    await create(client)
    await client.post("/v1/sessions", headers=auth(GLOBEX_KEY))
    await client.post("/v1/sessions", headers=auth(GLOBEX_KEY))
    stats = await client.get("/v1/admin/stats", headers=auth(ADMIN_KEY))
    assert stats.status_code == 200
    by_tenant = {entry["tenant"]: entry["live"] for entry in stats.json()["tenants"]}
    assert by_tenant == {"acme": 1, "globex": 2} and stats.json()["live"] == 3
    assert_problem(await client.get("/v1/admin/stats", headers=auth()), 403, "admin-required")
    assert_problem(await client.get("/v1/admin/stats"), 401, "unauthorized")
    assert_problem(await client.post("/v1/admin/purge", headers=auth()), 403, "admin-required")


async def test_admin_can_trigger_a_purge(client: httpx.AsyncClient, raw_db) -> None:
    await create(client, idle_timeout_seconds=60)
    await expire_all(raw_db)
    response = await client.post("/v1/admin/purge", headers=auth(ADMIN_KEY))
    assert response.status_code == 200
    assert response.json()["deleted"]["sessions"] == 1 and response.json()["skipped"] is False


async def test_fleet_gauges_recount_in_block_chunks_agrees_with_an_exact_count(raw_db, db) -> None:
    # 3,000 rows over two tenants and three kinds; a third expired, half of those past purge_after.
    await raw_db.execute(
        """INSERT INTO sessions (tenant, id, kind, metadata, version, idle_timeout_seconds,
                                 max_lifetime_seconds, created_at, last_seen_at, expires_at, purge_after)
           SELECT CASE WHEN n % 2 = 0 THEN 'acme' ELSE 'globex' END, 'id-' || n, 'kind-' || (n % 3),
                  '{}', 1, 60, 600, now(), now(),
                  now() + CASE WHEN n % 3 = 0 THEN -60 ELSE 60 END * interval '1 second',
                  now() + CASE WHEN n % 6 = 0 THEN -30 ELSE 660 END * interval '1 second'
             FROM generate_series(1, 3000) AS n"""
    )
    blocks = await raw_db.fetchval("SELECT pg_relation_size('sessions') / current_setting('block_size')::int")
    assert blocks > 10  # so one block per chunk really means many chunks
    # Each chunk must read only its own blocks (a TID range scan); a filtered scan of the whole table per
    # chunk would make the recount quadratic in the table's size.
    await raw_db.execute("ANALYZE sessions")
    plan = await raw_db.fetch("EXPLAIN " + fleet_gauges._COUNT_CHUNK, (0, 0), (2, 0))
    assert "Tid Range Scan" in "\n".join(row[0] for row in plan)
    settings = make_settings(stats_refresh_seconds=60)
    assert await fleet_gauges.refresh(db, settings, chunk_blocks=1)
    expected = {
        (row["tenant"], row["kind"]): row["live"]
        for row in await raw_db.fetch(
            "SELECT tenant, kind, count(*) AS live FROM sessions WHERE expires_at > now() GROUP BY 1, 2"
        )
    }
    stored = {
        (row["tenant"], row["kind"]): row["live"] for row in await raw_db.fetch("SELECT * FROM fleet_gauges")
    }
    assert stored == expected and sum(stored.values()) == 2000
    backlog = await raw_db.fetchval("SELECT value FROM broker_state WHERE key = 'purge_backlog'")
    assert backlog == 500
    # Claimed for this interval: a second replica (or a second call) does not count again.
    assert not await fleet_gauges.refresh(db, settings, chunk_blocks=1)


async def test_fleet_gauges_export_live_sessions(client_with, raw_db) -> None:
    async with client_with(stats_refresh_seconds=0.2) as client:
        await create(client, kind="basket")
        await create(client, kind="basket")

        async def exported() -> bool:
            text = (await client.get("/metrics")).text
            return 'session_broker_sessions_live{kind="basket",tenant="acme"} 2.0' in text

        for _ in range(50):
            if await exported():
                break
            await asyncio.sleep(0.1)
        assert await exported()
