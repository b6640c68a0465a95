"""Rotation: a live session moves to a new minted id atomically."""

from __future__ import annotations

import httpx

from tests.helpers import (
    assert_problem,
    auth,
    create,
    events_of,
    path,
)


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
