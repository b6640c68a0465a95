"""Why a session ended is told to its own principal (and to callers acting for none), never to another:
to another principal an ended session answers the 404 of an id that never existed, byte for byte.

Sessions end for real here: deleted, rotated, or idled out after 1 s in real time (then the purge, run
through the admin endpoint, records the expiry and deletes the row: the tombstone answers from then on).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx

from tests.helpers import ADMIN_KEY, assert_problem, auth, create, path

ALICE = {"Session-Principal": "https://issuer|alice"}
MALLORY = {"Session-Principal": "https://issuer|mallory"}


async def answers_to(client: httpx.AsyncClient, session_id: str, principal: dict[str, str]) -> list[bytes]:
    """The bodies of every call on the id that can answer 404, each acting for `principal`."""
    headers = {**auth(), **principal}
    responses = [
        await client.get(path(session_id), headers=headers),
        await client.post(path(session_id) + "/touch", headers=headers),
        await client.patch(path(session_id), json={"metadata": None}, headers=headers),
        await client.delete(path(session_id), headers=headers),
        await client.post(path(session_id) + "/rotate", headers=headers),
    ]
    assert [response.status_code for response in responses] == [404] * 5, [r.text for r in responses]
    return [response.content for response in responses]


async def never_existed(client: httpx.AsyncClient, principal: dict[str, str]) -> list[bytes]:
    return await answers_to(client, "never-existed-0123456789", principal)


async def deleted(client: httpx.AsyncClient) -> str:
    session = await create(client, principal="https://issuer|alice")
    assert (await client.delete(path(session["id"]), headers={**auth(), **ALICE})).status_code == 204
    return str(session["id"])


async def rotated(client: httpx.AsyncClient) -> str:
    session = await create(client, principal="https://issuer|alice")
    response = await client.post(path(session["id"]) + "/rotate", headers={**auth(), **ALICE})
    assert response.status_code == 201
    return str(session["id"])


async def idled_out(client: httpx.AsyncClient) -> str:
    session = await create(client, principal="https://issuer|alice", idle_timeout_seconds=1)
    await asyncio.sleep(1.2)
    return str(session["id"])


async def idled_out_and_purged(client: httpx.AsyncClient) -> str:
    session_id = await idled_out(client)
    purged = await client.post("/v1/admin/purge", headers=auth(ADMIN_KEY))
    assert purged.status_code == 200
    assert purged.json()["deleted"]["sessions"] >= 1  # the row is gone: its tombstone answers now
    return session_id


ENDINGS: dict[str, tuple[Callable[[httpx.AsyncClient], Awaitable[str]], str]] = {
    "deleted": (deleted, "deleted"),
    "rotated": (rotated, "rotated"),
    "expired, row not yet purged": (idled_out, "expired_idle"),
    "expired and purged": (idled_out_and_purged, "expired_idle"),
}


async def test_another_principal_gets_the_404_of_a_missing_session_whatever_ended_it(
    client: httpx.AsyncClient,
) -> None:
    missing = await never_existed(client, MALLORY)
    for name, (end, _) in ENDINGS.items():
        session_id = await end(client)
        assert await answers_to(client, session_id, MALLORY) == missing, name


async def test_its_own_principal_and_a_caller_acting_for_none_learn_the_reason(
    client: httpx.AsyncClient,
) -> None:
    for name, (end, reason) in ENDINGS.items():
        session_id = await end(client)
        for principal in (ALICE, {}):
            response = await client.get(path(session_id), headers={**auth(), **principal})
            assert assert_problem(response, 404, "session-not-found").get("reason") == reason, name
            touched = await client.post(path(session_id) + "/touch", headers={**auth(), **principal})
            assert assert_problem(touched, 404, "session-not-found").get("reason") == reason, name


async def test_an_unbound_session_tells_any_principal_why_it_ended(client: httpx.AsyncClient) -> None:
    session = await create(client)
    assert (await client.delete(path(session["id"]), headers=auth())).status_code == 204
    response = await client.get(path(session["id"]), headers={**auth(), **MALLORY})
    assert assert_problem(response, 404, "session-not-found")["reason"] == "deleted"
