"""Idempotent create and rotation (Idempotency-Key), through both paths: a retry gets the first answer
instead of a second session; another request with the key is refused; keys are per tenant and forgotten
by the purge after their retention."""

from __future__ import annotations

import asyncio
import json

import httpx

from app.purge import purge_once
from tests.helpers import GLOBEX_KEY, assert_problem, auth, make_settings, path


def keyed(key: str, api_key: str | None = None) -> dict[str, str]:
    return {**(auth(api_key) if api_key else auth()), "Idempotency-Key": key}


BODY = {"principal": "alice", "metadata": {"clientInfo": {"name": "x"}}, "idle_timeout_seconds": 600}


async def test_two_creates_with_one_key_make_one_session_and_the_same_response(
    client: httpx.AsyncClient, raw_db
) -> None:
    first = await client.post("/v1/sessions", json=BODY, headers=keyed("k-1"))
    await asyncio.sleep(0.01)
    second = await client.post("/v1/sessions", json=BODY, headers=keyed("k-1"))
    assert first.status_code == second.status_code == 201
    assert second.content == first.content  # byte for byte: the same session, as it was created
    for header in ("Location", "ETag", "Content-Type"):
        assert second.headers[header] == first.headers[header]
    assert second.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert await raw_db.fetchval("SELECT count(*) FROM sessions") == 1
    # The same request in another spelling (key order) is the same request.
    reordered = json.dumps(dict(reversed(list(BODY.items()))))
    third = await client.post(
        "/v1/sessions", content=reordered, headers={**keyed("k-1"), "Content-Type": "application/json"}
    )
    assert third.content == first.content
    stats = (await client.get("/v1/stats", headers=auth())).json()
    assert stats["created_total"] == 1


async def test_the_same_key_with_another_body_is_422_and_creates_nothing(
    client: httpx.AsyncClient, raw_db
) -> None:
    assert (await client.post("/v1/sessions", json=BODY, headers=keyed("k-2"))).status_code == 201
    other = await client.post("/v1/sessions", json={**BODY, "principal": "bob"}, headers=keyed("k-2"))
    body = assert_problem(other, 422, "idempotency-key-reused")
    assert body["field"] == "Idempotency-Key"
    assert await raw_db.fetchval("SELECT count(*) FROM sessions") == 1


async def test_keys_are_per_tenant(client: httpx.AsyncClient) -> None:
    acme = (await client.post("/v1/sessions", json=BODY, headers=keyed("shared"))).json()
    globex = await client.post("/v1/sessions", json=BODY, headers=keyed("shared", GLOBEX_KEY))
    assert globex.status_code == 201 and "Idempotent-Replayed" not in globex.headers
    assert globex.json()["id"] != acme["id"]


async def test_concurrent_creates_with_one_key_make_one_session(client: httpx.AsyncClient, raw_db) -> None:
    responses = await asyncio.gather(
        *(client.post("/v1/sessions", json=BODY, headers=keyed("k-race")) for _ in range(10))
    )
    assert {response.status_code for response in responses} == {201}
    assert len({response.content for response in responses}) == 1
    assert await raw_db.fetchval("SELECT count(*) FROM sessions") == 1
    assert await raw_db.fetchval("SELECT count(*) FROM session_events WHERE type = 'session.created'") == 1


async def test_a_create_near_its_quota_is_idempotent_too(client_with, raw_db) -> None:
    # A principal limit of 2 leaves less than the headroom: every create takes the near-limit protocol.
    async with client_with(tenant_quotas=json.dumps({"acme": {"max_sessions_per_principal": 2}})) as client:
        first = await client.post("/v1/sessions", json=BODY, headers=keyed("k-quota"))
        again = await client.post("/v1/sessions", json=BODY, headers=keyed("k-quota"))
        assert first.status_code == again.status_code == 201 and again.content == first.content
        assert (await client.post("/v1/sessions", json=BODY, headers=auth())).status_code == 201
        full = await client.post("/v1/sessions", json=BODY, headers=keyed("k-full"))
        assert_problem(full, 429, "quota-exceeded")  # a refusal is not remembered: a later retry may succeed
    assert await raw_db.fetchval("SELECT count(*) FROM idempotency_keys") == 1


async def test_a_retried_rotation_answers_with_the_session_it_rotated_to(client: httpx.AsyncClient) -> None:
    session = (await client.post("/v1/sessions", json=BODY, headers=auth())).json()
    first = await client.post(path(session["id"]) + "/rotate", headers=keyed("rot-1"))
    again = await client.post(path(session["id"]) + "/rotate", headers=keyed("rot-1"))
    assert first.status_code == again.status_code == 201 and again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    # Without the key the retry would say the old id has ended; another principal does not learn the new id.
    assert_problem(
        await client.post(path(session["id"]) + "/rotate", headers=auth()), 404, "session-not-found"
    )
    spoofed = {**keyed("rot-1"), "Session-Principal": "mallory"}
    assert_problem(
        await client.post(path(session["id"]) + "/rotate", headers=spoofed), 422, "idempotency-key-reused"
    )


async def test_bad_and_duplicate_keys(client: httpx.AsyncClient, raw_db) -> None:
    for bad in ("", "x" * 256, "with space"):
        response = await client.post("/v1/sessions", json=BODY, headers=keyed(bad))
        body = assert_problem(response, 422, "validation-error")
        assert body["errors"][0]["field"] == "Idempotency-Key"
    twice = [
        (b"authorization", auth()["Authorization"].encode()),
        (b"idempotency-key", b"a"),
        (b"idempotency-key", b"b"),
    ]
    response = await client.post("/v1/sessions", json=BODY, headers=twice)
    assert_problem(response, 400, "duplicate-header")
    assert await raw_db.fetchval("SELECT count(*) FROM sessions") == 0


async def test_the_purge_forgets_a_key_after_its_retention(client_with, raw_db, db) -> None:
    async with client_with(idempotency_key_retention_seconds=1) as client:
        first = (await client.post("/v1/sessions", json=BODY, headers=keyed("k-old"))).json()
        await asyncio.sleep(1.1)
        # Past retention the key is not remembered even before the purge runs...
        later = await client.post("/v1/sessions", json=BODY, headers=keyed("k-old"))
        assert later.status_code == 201 and later.json()["id"] != first["id"]
        await asyncio.sleep(1.1)
        result = await purge_once(db, make_settings())
    assert result.deleted["idempotency_keys"] == 1  # ...and the purge removes its record
    assert await raw_db.fetchval("SELECT count(*) FROM idempotency_keys") == 0
