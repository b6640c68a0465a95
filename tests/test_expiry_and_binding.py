"""Expiry without any purge, and the Session-Principal binding."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.helpers import age, assert_problem, auth, create, metric_value, path


async def test_an_idle_expired_session_does_not_exist_for_any_call(client: httpx.AsyncClient, raw_db) -> None:
    session = await create(client, idle_timeout_seconds=60, kind="basket")
    await age(raw_db, session["id"], 61)
    assert await raw_db.fetchval("SELECT count(*) FROM sessions") == 1  # no purge has run
    for response in (
        await client.get(path(session["id"]), headers=auth()),
        await client.post(path(session["id"]) + "/touch", headers=auth()),
        await client.patch(path(session["id"]), json={"owner": "x"}, headers=auth()),
        await client.delete(path(session["id"]), headers=auth()),
    ):
        assert assert_problem(response, 404, "session-not-found")["reason"] == "expired_idle"
    assert (await client.get("/v1/sessions", params={"kind": "basket"}, headers=auth())).json()["items"] == []
    assert (await client.get("/v1/stats", headers=auth())).json()["live"] == 0
    assert await raw_db.fetchval("SELECT count(*) FROM sessions") == 1  # reads never delete (lesson 8)


async def test_lifetime_expiry_is_reported_as_such(client: httpx.AsyncClient, raw_db) -> None:
    session = await create(client, idle_timeout_seconds=600, max_lifetime_seconds=300)
    await age(raw_db, session["id"], 301)
    body = assert_problem(await client.get(path(session["id"]), headers=auth()), 404, "session-not-found")
    assert body["reason"] == "expired_lifetime"


async def test_an_expired_unpurged_id_can_be_registered_again(client: httpx.AsyncClient, raw_db) -> None:
    old = await client.put(
        path("reused"), json={"metadata": {"old": True}, "idle_timeout_seconds": 60}, headers=auth()
    )
    assert old.status_code == 201
    await age(raw_db, "reused", 61)
    new = await client.put(path("reused"), json={"metadata": {"new": True}}, headers=auth())
    assert new.status_code == 201
    assert new.json()["metadata"] == {"new": True}
    assert new.json()["version"] > old.json()["version"]  # an old ETag never matches the new session
    stats = (await client.get("/v1/stats", headers=auth())).json()
    assert stats["ended_total"]["expired_idle"] == 1 and stats["created_total"] == 2


async def test_real_time_expiry_with_a_one_second_idle_timeout(client: httpx.AsyncClient) -> None:
    session = await create(client, idle_timeout_seconds=1)
    assert (await client.get(path(session["id"]), headers=auth())).status_code == 200
    await asyncio.sleep(1.2)
    assert (await client.post(path(session["id"]) + "/touch", headers=auth())).status_code == 404


BOUND = {"Session-Principal": "https://issuer|alice"}
OTHER = {"Session-Principal": "https://issuer|mallory"}


async def test_principal_mismatch_is_exactly_a_missing_session_and_harms_nothing(
    client: httpx.AsyncClient, raw_db
) -> None:
    session = await create(client, principal="https://issuer|alice", metadata={"k": "v"})
    series = 'session_broker_binding_mismatches_total{operation="touch",tenant="acme"}'
    mismatches_before = metric_value((await client.get("/metrics")).text, series)
    before = await raw_db.fetchrow("SELECT xmin::text AS x, * FROM sessions WHERE id = $1", session["id"])
    missing = (await client.get(path("missing"), headers={**auth(), **OTHER})).json()
    for response in (
        await client.get(path(session["id"]), headers={**auth(), **OTHER}),
        await client.post(path(session["id"]) + "/touch", headers={**auth(), **OTHER}),
        await client.patch(path(session["id"]), json={"metadata": None}, headers={**auth(), **OTHER}),
        await client.delete(path(session["id"]), headers={**auth(), **OTHER}),
    ):
        assert response.status_code == 404
        assert response.json() == missing
    after = await raw_db.fetchrow("SELECT xmin::text AS x, * FROM sessions WHERE id = $1", session["id"])
    assert dict(after) == dict(before)
    # The registry is per process and shared by every test in it: count this test's mismatch only.
    assert metric_value((await client.get("/metrics")).text, series) == mismatches_before + 1
    # The rightful principal (and a caller that sends no principal) still reach it.
    assert (await client.get(path(session["id"]), headers={**auth(), **BOUND})).status_code == 200
    assert (await client.post(path(session["id"]) + "/touch", headers={**auth(), **BOUND})).status_code == 200
    assert (await client.delete(path(session["id"]), headers={**auth(), **BOUND})).status_code == 204


async def test_mismatch_can_be_configured_to_403(client_with) -> None:
    async with client_with(principal_mismatch_status="403") as client:
        session = await create(client, principal="alice")
        response = await client.get(path(session["id"]), headers={**auth(), "Session-Principal": "bob"})
        assert_problem(response, 403, "principal-mismatch")


async def test_unbound_sessions_accept_any_principal(client: httpx.AsyncClient) -> None:
    session = await create(client)
    assert (await client.get(path(session["id"]), headers={**auth(), **OTHER})).status_code == 200


@pytest.mark.parametrize("ttl", [0, -1, 86401, 2**31, 2**63])
async def test_ttl_edge_values_are_rejected(client: httpx.AsyncClient, ttl: int) -> None:
    response = await client.post("/v1/sessions", json={"idle_timeout_seconds": ttl}, headers=auth())
    assert_problem(response, 422, "validation-error")


async def test_ttl_bounds_are_inclusive(client: httpx.AsyncClient) -> None:
    for ttl in (1, 86400):
        assert (
            await client.post("/v1/sessions", json={"idle_timeout_seconds": ttl}, headers=auth())
        ).status_code == 201
    assert (
        await client.post("/v1/sessions", json={"max_lifetime_seconds": 604800}, headers=auth())
    ).status_code == 201
