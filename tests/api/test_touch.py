"""Touch: the hot path. One statement; throttled by the granularity; monotonic; capped by lifetime."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import httpx
import pytest

from app.db import asyncpg_dsn
from tests.helpers import age, assert_problem, auth, create, metric_value, path, ts


async def updates_of_sessions_table(raw_db: asyncpg.Connection) -> int:
    await raw_db.execute("SELECT pg_stat_clear_snapshot()")
    return int(await raw_db.fetchval("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'sessions'"))


async def test_touch_slides_idle_expiry_and_returns_small_body(client: httpx.AsyncClient, raw_db) -> None:
    session = await create(client, idle_timeout_seconds=600)
    await age(raw_db, session["id"], 300)
    response = await client.post(path(session["id"]) + "/touch", headers=auth())
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", "expires_at"}
    row = await raw_db.fetchrow(
        "SELECT now() AS now, expires_at, last_seen_at FROM sessions WHERE id = $1", session["id"]
    )
    assert ts(body["expires_at"]) == row["expires_at"]
    # Database clock: expiry is last_seen_at + idle timeout, and last_seen_at is (about) the db's now.
    assert row["expires_at"] - row["last_seen_at"] == timedelta(seconds=600)
    assert abs((row["now"] - row["last_seen_at"]).total_seconds()) < 5


async def settled_updates(raw_db: asyncpg.Connection) -> int:
    """n_tup_upd once every writer's backend has exited (exit flushes its pending statistics)."""
    previous = -1
    for _ in range(50):
        current = await updates_of_sessions_table(raw_db)
        if current == previous:
            return current
        previous = current
        await asyncio.sleep(0.3)
    raise AssertionError("pg_stat_user_tables.n_tup_upd did not settle")


async def test_touch_within_granularity_writes_nothing(
    client_with, raw_db, direct_database_url, release_backends
) -> None:
    """A throttled touch is a read: pg_stat_user_tables.n_tup_upd must not move, nor the row version."""
    async with client_with() as client:
        session = await create(client)
    await release_backends()
    aging = await asyncpg.connect(asyncpg_dsn(direct_database_url))
    await age(aging, session["id"], 120)  # past the 60 s default granularity: the next touch writes
    await aging.close()
    baseline = await settled_updates(raw_db)

    async with client_with() as client:  # closing the app closes its pool, flushing its statistics
        written = await client.post(path(session["id"]) + "/touch", headers=auth())
    await release_backends()
    assert written.status_code == 200
    after_write = await settled_updates(raw_db)
    assert after_write == baseline + 1  # the check can see a write
    row_version = await raw_db.fetchval("SELECT xmin::text FROM sessions WHERE id = $1", session["id"])

    async with client_with() as client:
        for _ in range(25):
            again = await client.post(path(session["id"]) + "/touch", headers=auth())
            assert again.status_code == 200 and again.json()["expires_at"] == written.json()["expires_at"]
    await release_backends()
    assert await settled_updates(raw_db) == after_write
    assert (
        await raw_db.fetchval("SELECT xmin::text FROM sessions WHERE id = $1", session["id"]) == row_version
    )


async def test_granularity_zero_writes_every_touch(client_with, raw_db) -> None:
    async with client_with(touch_granularity_seconds=0) as client:
        session = await create(client)
        seen = []
        for _ in range(3):
            response = await client.post(path(session["id"]) + "/touch", headers=auth())
            seen.append(ts(response.json()["expires_at"]))
            await asyncio.sleep(0.01)
        assert seen[0] < seen[1] < seen[2]


async def test_granularity_is_bounded_by_a_tenth_of_short_idle_timeouts(
    client: httpx.AsyncClient, raw_db
) -> None:
    """A 10 s idle session must still be kept alive by touches every few seconds (threshold 1 s, not 60 s)."""
    session = await create(client, idle_timeout_seconds=10)
    await age(raw_db, session["id"], 2)
    before = ts(session["expires_at"]) - timedelta(seconds=2)
    touched = await client.post(path(session["id"]) + "/touch", headers=auth())
    assert ts(touched.json()["expires_at"]) >= before + timedelta(seconds=1.9)


async def test_touch_is_capped_by_the_absolute_lifetime(client: httpx.AsyncClient, raw_db) -> None:
    session = await create(client, idle_timeout_seconds=600, max_lifetime_seconds=900)
    await age(raw_db, session["id"], 500)  # idle expiry in 100 s; lifetime ends in 400 s
    touched = (await client.post(path(session["id"]) + "/touch", headers=auth())).json()
    deadline = await raw_db.fetchval(
        "SELECT created_at + max_lifetime_seconds * interval '1 second' FROM sessions WHERE id = $1",
        session["id"],
    )
    assert ts(touched["expires_at"]) == deadline


async def test_touch_never_moves_expiry_backwards(client: httpx.AsyncClient, raw_db) -> None:
    session = await create(client, idle_timeout_seconds=600)
    # A previous (e.g. faster) writer already pushed expiry further than this touch would.
    await raw_db.execute(
        "UPDATE sessions SET expires_at = expires_at + interval '100 seconds', "
        "last_seen_at = last_seen_at + interval '100 seconds' WHERE id = $1",
        session["id"],
    )
    pushed = await raw_db.fetchrow(
        "SELECT expires_at, last_seen_at FROM sessions WHERE id = $1", session["id"]
    )
    touched = (await client.post(path(session["id"]) + "/touch", headers=auth())).json()
    assert ts(touched["expires_at"]) == pushed["expires_at"]
    row = await raw_db.fetchrow("SELECT expires_at, last_seen_at FROM sessions WHERE id = $1", session["id"])
    assert row["expires_at"] >= pushed["expires_at"] and row["last_seen_at"] >= pushed["last_seen_at"]


async def test_touch_does_not_change_version_or_metadata(client: httpx.AsyncClient, raw_db) -> None:
    session = await create(client, metadata={"k": 1})
    await age(raw_db, session["id"], 120)
    await client.post(path(session["id"]) + "/touch", headers=auth())
    got = (await client.get(path(session["id"]), headers=auth())).json()
    assert got["version"] == 1 and got["metadata"] == {"k": 1}


async def test_touch_missing_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post(path("ghost") + "/touch", headers=auth()), 404, "session-not-found")


async def test_touch_accepts_an_analytics_body_and_validates_it(client: httpx.AsyncClient) -> None:
    session = await create(client)
    ok = await client.post(
        path(session["id"]) + "/touch",
        json={"method": "tools/call", "ok": False, "duration_ms": 12.5},
        headers=auth(),
    )
    assert ok.status_code == 200
    bad = await client.post(path(session["id"]) + "/touch", json={"methd": "tools/call"}, headers=auth())
    problem = assert_problem(bad, 422, "validation-error")
    assert problem["errors"][0]["field"] in {"methd", "method"}
    negative = await client.post(
        path(session["id"]) + "/touch", json={"method": "ping", "duration_ms": -1}, headers=auth()
    )
    assert_problem(negative, 422, "validation-error")


async def test_concurrent_touches_all_succeed_and_expiry_only_grows(client_with, raw_db) -> None:
    async with client_with(touch_granularity_seconds=0) as client:
        session = await create(client)
        responses = await asyncio.gather(
            *(client.post(path(session["id"]) + "/touch", headers=auth()) for _ in range(40))
        )
        assert {response.status_code for response in responses} == {200}
        final = await raw_db.fetchval("SELECT expires_at FROM sessions WHERE id = $1", session["id"])
        assert final == max(ts(response.json()["expires_at"]) for response in responses)


TOOLS_CALL = 'session_broker_gateway_requests_total{method="tools/call",tenant="acme"}'


async def test_touch_analytics_reach_stats_fleet_wide_without_a_write_per_touch(client_with, raw_db) -> None:
    async with client_with() as client:
        session = await create(client)
        before = metric_value((await client.get("/metrics")).text, TOOLS_CALL)
        for method, ok, duration in [
            ("tools/call", True, 10.0),
            ("tools/call", False, 30.0),
            ("tools/call", True, None),
            ("resources/read", True, 5.0),
            ("x-vendor/custom", True, 1.0),
        ]:
            body = {"method": method, "ok": ok} | ({"duration_ms": duration} if duration is not None else {})
            assert (
                await client.post(path(session["id"]) + "/touch", json=body, headers=auth())
            ).status_code == 200
        # Counted in memory only: nothing is in the table before the flush...
        assert await raw_db.fetchval("SELECT count(*) FROM gateway_request_totals") == 0
        requests = (await client.get("/v1/stats", headers=auth())).json()["requests"]
        assert requests["requests_total"] == 5 and requests["errors_total"] == 1
        assert requests["success_rate"] == 0.8
        busiest = {entry["method"]: entry for entry in requests["busiest_methods"]}
        assert busiest["tools/call"]["requests"] == 3 and busiest["tools/call"]["mean_duration_ms"] == 20.0
        assert "other" in busiest and "x-vendor/custom" not in busiest  # bounded method names
        assert metric_value((await client.get("/metrics")).text, TOOLS_CALL) == before + 3
    # ...and shutting down flushed it, so another replica (a new app here) sees the same totals.
    assert await raw_db.fetchval("SELECT sum(requests) FROM gateway_request_totals") == 5
    async with client_with() as other_replica:
        stats = (await other_replica.get("/v1/stats", headers=auth())).json()
        assert stats["requests"]["requests_total"] == 5


@pytest.mark.parametrize(
    ("headers", "content", "status"),
    [
        ({}, None, 401),
        ({"Authorization": "Bearer admin-key-0123456789abcdef"}, None, 403),
        ({**auth(), "content-type": "text/plain"}, b'{"method":"ping"}', 415),
        ({**auth(), "content-type": "application/json"}, b"{oops", 422),
        ({**auth(), "content-type": "application/json"}, b'{"method":"ping","extra":1}', 422),
        (
            {**auth(), "content-type": "application/json"},
            b'{"method":"ping","pad":"' + b"x" * 200_000 + b'"}',
            413,
        ),
    ],
)
async def test_touch_errors_are_the_same_problems_on_both_paths(
    client: httpx.AsyncClient, headers: dict, content: bytes | None, status: int
) -> None:
    session = await create(client)
    response = await client.post(path(session["id"]) + "/touch", headers=headers, content=content)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_touch_is_labelled_by_route_template_on_both_paths(client: httpx.AsyncClient) -> None:
    session = await create(client)
    await client.post(path(session["id"]) + "/touch", headers=auth())
    metrics = (await client.get("/metrics")).text
    assert 'route="/v1/sessions/{session_id}/touch"' in metrics
    assert session["id"] not in metrics
