"""In-flight marks over the real app and PostgreSQL, in real time: a long request keeps its session from
idle expiry, idle expiry applies again after it, the absolute lifetime still ends it, and a mark that is
not renewed (its replica died) lets the session go."""

from __future__ import annotations

import asyncio
import time

import httpx

from app.fleet_gauges import publish
from app.purge import purge_once
from tests.helpers import assert_problem, auth, create, make_settings, metric_value, path, ts


def marks(session_id: str) -> str:
    return path(session_id) + "/in-flight"


async def begin(client: httpx.AsyncClient, session_id: str, ttl: int, **extra: object) -> dict:
    response = await client.post(marks(session_id), json={"ttl_seconds": ttl, **extra}, headers=auth())
    assert response.status_code == 201, response.text
    mark: dict = response.json()
    return mark


async def test_a_3_second_call_outlives_a_1_second_idle_timeout_then_idle_expiry_applies(
    client: httpx.AsyncClient, raw_db, db
) -> None:
    session = await create(client, idle_timeout_seconds=1)
    mark = await begin(client, session["id"], ttl=2, method="tools/call", holder="replica-a")
    assert mark["method"] == "tools/call" and mark["holder"] == "replica-a"
    started = time.monotonic()
    while time.monotonic() - started < 3:  # the call runs 3 s; its replica renews the mark every 0.5 s
        await asyncio.sleep(0.5)
        renewed = await client.put(
            f"{marks(session['id'])}/{mark['mark_id']}", json={"ttl_seconds": 2}, headers=auth()
        )
        assert renewed.status_code == 200, renewed.text
        assert (await client.get(path(session["id"]), headers=auth())).status_code == 200
        await purge_once(db, make_settings())  # the purge does not end it either
    stats = (await client.get("/v1/stats", headers=auth())).json()
    assert stats["in_flight"]["requests"] == 1 and stats["in_flight"]["by_method"] == {"tools/call": 1}
    await publish(db, make_settings())
    gauge = 'session_broker_in_flight_requests{tenant="acme"}'
    assert metric_value((await client.get("/metrics")).text, gauge) == 1
    ended = await client.delete(f"{marks(session['id'])}/{mark['mark_id']}", headers=auth())
    assert ended.status_code == 200, ended.text
    assert ended.json()["held"] is True
    # Live after the call, with an idle timeout counted from the call's end ...
    shown = (await client.get(path(session["id"]), headers=auth())).json()
    assert ts(shown["expires_at"]) <= ts(shown["last_seen_at"]) + __import__("datetime").timedelta(
        seconds=1.01
    )
    # ... and then idle expiry applies again.
    await asyncio.sleep(1.1)
    body = assert_problem(await client.get(path(session["id"]), headers=auth()), 404, "session-not-found")
    assert body["reason"] == "expired_idle"
    assert (await purge_once(db, make_settings())).deleted["sessions"] == 1
    assert await raw_db.fetchval("SELECT count(*) FROM session_in_flight") == 0


async def test_a_mark_that_is_not_renewed_lets_the_session_expire(
    client: httpx.AsyncClient, raw_db, db
) -> None:
    session = await create(client, idle_timeout_seconds=1)
    mark = await begin(client, session["id"], ttl=2)
    await asyncio.sleep(1.3)
    assert (await client.get(path(session["id"]), headers=auth())).status_code == 200  # held past idle
    await asyncio.sleep(0.9)
    assert_problem(await client.get(path(session["id"]), headers=auth()), 404, "session-not-found")
    # The replica that comes back cannot revive it.
    late = await client.put(
        f"{marks(session['id'])}/{mark['mark_id']}", json={"ttl_seconds": 2}, headers=auth()
    )
    assert_problem(late, 404, "session-not-found")
    result = await purge_once(db, make_settings())
    assert result.deleted["sessions"] == 1


async def test_the_absolute_lifetime_still_ends_a_session_with_a_request_in_flight(
    client: httpx.AsyncClient,
) -> None:
    session = await create(client, idle_timeout_seconds=1, max_lifetime_seconds=2)
    mark = await begin(client, session["id"], ttl=30)
    assert ts(mark["session_expires_at"]) == ts(session["created_at"]) + __import__("datetime").timedelta(
        seconds=2
    )
    await asyncio.sleep(2.1)
    body = assert_problem(await client.get(path(session["id"]), headers=auth()), 404, "session-not-found")
    assert body["reason"] == "expired_lifetime"


async def test_a_lapsed_mark_is_purged_and_renewing_it_is_refused(
    client: httpx.AsyncClient, raw_db, db
) -> None:
    session = await create(client)  # 30 minutes idle: the session outlives the mark
    mark = await begin(client, session["id"], ttl=1)
    await asyncio.sleep(1.1)
    late = await client.put(
        f"{marks(session['id'])}/{mark['mark_id']}", json={"ttl_seconds": 2}, headers=auth()
    )
    assert_problem(late, 404, "in-flight-mark-not-found")
    assert (await purge_once(db, make_settings())).deleted["in_flight"] == 1
    assert_problem(
        await client.delete(f"{marks(session['id'])}/{mark['mark_id']}", headers=auth()),
        404,
        "in-flight-mark-not-found",
    )


async def test_bad_input_and_other_principals(client: httpx.AsyncClient, raw_db) -> None:
    session = await create(client, principal="alice")
    for body, field in (
        ({}, "ttl_seconds"),
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"ttl_seconds": 10**6}, "ttl_seconds"),
        ({"ttl_seconds": "2"}, "ttl_seconds"),
        ({"ttl_seconds": 2, "metod": "x"}, "metod"),
    ):
        problem = assert_problem(
            await client.post(marks(session["id"]), json=body, headers=auth()), 422, "validation-error"
        )
        assert field in {error["field"] for error in problem["errors"]}, problem
    bob = {**auth(), "Session-Principal": "bob"}
    assert_problem(
        await client.post(marks(session["id"]), json={"ttl_seconds": 2}, headers=bob),
        404,
        "session-not-found",
    )
    assert await raw_db.fetchval("SELECT count(*) FROM session_in_flight") == 0
