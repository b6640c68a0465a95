"""Tombstones: an ended id explains itself and stays retired for a while; expiry does not retire."""

from __future__ import annotations

import asyncio

import httpx

from app.purge import purge_once
from tests.helpers import (
    assert_problem,
    auth,
    create,
    make_settings,
    path,
)


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
    await client.put(path("expired-one"), json={"idle_timeout_seconds": 1}, headers=auth())
    await asyncio.sleep(1.1)  # it really expires
    assert (await purge_once(db, make_settings())).deleted["sessions"] == 1
    assert (await client.put(path("expired-one"), headers=auth())).status_code == 201
