"""Revocation: end every live session matching the filters, idempotently."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from app.db import asyncpg_dsn
from tests.helpers import (
    GLOBEX_KEY,
    assert_problem,
    auth,
    create,
    events_of,
    path,
)


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


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"limit": "5"},
        {"principal": ""},
        {"all": "false"},
        {"all": "yes"},
        {"all": "true", "principal": "alice"},
    ],
)
async def test_revoke_needs_a_filter(client: httpx.AsyncClient, params: dict) -> None:
    await create(client, principal="alice")
    assert_problem(
        await client.delete("/v1/sessions", params=params, headers=auth()), 422, "validation-error"
    )
    assert (await client.get("/v1/stats", headers=auth())).json()["live"] == 1


async def test_all_true_clears_every_live_session_of_the_tenant_and_only_it(
    client: httpx.AsyncClient, raw_db
) -> None:
    ours = [await create(client, principal=f"p{n}") for n in range(3)] + [await create(client)]
    theirs = await client.post("/v1/sessions", headers=auth(GLOBEX_KEY))
    response = await client.delete("/v1/sessions", params={"all": "true"}, headers=auth())
    assert response.status_code == 200 and response.json() == {"revoked": 4}
    for session in ours:
        body = assert_problem(await client.get(path(session["id"]), headers=auth()), 404, "session-not-found")
        assert body["reason"] == "revoked"
        assert ("session.ended", "revoked") in [
            (t, d.get("reason")) for t, d in await events_of(raw_db, session["id"])
        ]
    assert (await client.get(path(theirs.json()["id"]), headers=auth(GLOBEX_KEY))).status_code == 200
    again = await client.delete("/v1/sessions", params={"all": "true"}, headers=auth())
    assert again.json() == {"revoked": 0}
    stats = (await client.get("/v1/stats", headers=auth())).json()
    assert stats["live"] == 0 and stats["ended_total"]["revoked"] == 4


async def test_all_true_clears_more_than_one_batch(client: httpx.AsyncClient, raw_db) -> None:
    await raw_db.execute(
        """INSERT INTO sessions (tenant, id, kind, metadata, version, idle_timeout_seconds,
                                 max_lifetime_seconds, created_at, last_seen_at, expires_at, check_at)
           SELECT 'acme', 'many-' || n, 'mcp', '{}', 1, 600, 3600, now(), now(),
                  now() + interval '600 seconds', now() + interval '600 seconds'
             FROM generate_series(1, 2500) AS n"""
    )
    response = await client.delete("/v1/sessions", params={"all": "true"}, headers=auth())
    assert response.json() == {"revoked": 2500}
    assert await raw_db.fetchval("SELECT count(*) FROM sessions") == 0
