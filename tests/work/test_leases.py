"""Stream leases over the real app and PostgreSQL, in real time (TTLs of 1-2 s): acquire, renew, release,
max_leases, races between replicas, fencing tokens across takeovers, expiry by the purge."""

from __future__ import annotations

import asyncio
import time

import httpx

from app.purge import purge_once
from tests.helpers import (
    ACME_KEY,
    ADMIN_KEY,
    API_KEYS,
    LiveServer,
    assert_problem,
    auth,
    create,
    events_of,
    eventually,
    make_settings,
    path,
    start_server,
    stop_server,
    ts,
)


def leases(session_id: str) -> str:
    return path(session_id) + "/leases"


async def acquire(client: httpx.AsyncClient, session_id: str, holder: str, ttl: int = 2) -> httpx.Response:
    return await client.post(leases(session_id), json={"holder": holder, "ttl_seconds": ttl}, headers=auth())


async def test_acquire_shows_owner_and_lease_then_second_is_refused(
    client: httpx.AsyncClient, raw_db
) -> None:
    session = await create(client)
    first = await acquire(client, session["id"], "http://10.0.0.1:8000")
    assert first.status_code == 201, first.text
    lease = first.json()
    assert lease["holder"] == "http://10.0.0.1:8000" and lease["ttl_seconds"] == 2
    shown = (await client.get(path(session["id"]), headers=auth())).json()
    assert shown["owner"] == "http://10.0.0.1:8000" and shown["owner_alive"] is True
    assert [item["lease_id"] for item in shown["leases"]] == [lease["lease_id"]]
    assert shown["max_leases"] == 1
    # The single slot is held: a second replica is told so, with when to try again.
    refused = await acquire(client, session["id"], "http://10.0.0.2:8000")
    body = assert_problem(refused, 409, "session-leases-full")
    assert body["max_leases"] == 1 and 1 <= int(refused.headers["Retry-After"]) <= 2
    assert [t for t, _ in await events_of(raw_db, session["id"])].count("session.lease_acquired") == 1


async def test_renew_release_and_lost(client: httpx.AsyncClient, raw_db) -> None:
    session = await create(client)
    lease = (await acquire(client, session["id"], "a", ttl=1)).json()
    renewed = await client.put(
        f"{leases(session['id'])}/{lease['lease_id']}", json={"ttl_seconds": 5}, headers=auth()
    )
    assert renewed.status_code == 200, renewed.text
    assert ts(renewed.json()["expires_at"]) > ts(lease["expires_at"])
    assert renewed.json()["fencing_token"] == lease["fencing_token"]
    released = await client.delete(f"{leases(session['id'])}/{lease['lease_id']}", headers=auth())
    assert released.status_code == 204
    lost = await client.put(f"{leases(session['id'])}/{lease['lease_id']}", headers=auth())
    assert_problem(lost, 409, "lease-lost")
    assert_problem(
        await client.delete(f"{leases(session['id'])}/{lease['lease_id']}", headers=auth()), 409, "lease-lost"
    )
    shown = (await client.get(path(session["id"]), headers=auth())).json()
    assert shown["owner_alive"] is False and shown["leases"] == []
    types = [t for t, _ in await events_of(raw_db, session["id"])]
    assert types.count("session.lease_released") == 1


async def test_bad_input_names_the_field_and_writes_nothing(client: httpx.AsyncClient, raw_db) -> None:
    session = await create(client)
    for body, field in (
        ({"holder": "a"}, "ttl_seconds"),
        ({"holder": "a", "ttl_seconds": 0}, "ttl_seconds"),
        ({"holder": "a", "ttl_seconds": 10**6}, "ttl_seconds"),
        ({"holder": "", "ttl_seconds": 2}, "holder"),
        ({"holder": "a", "ttl_seconds": 2, "tll": 1}, "tll"),
    ):
        response = await client.post(leases(session["id"]), json=body, headers=auth())
        problem = assert_problem(response, 422, "validation-error")
        assert field in {error["field"] for error in problem["errors"]}, problem
    patch = await client.patch(
        path(session["id"]),
        json={"max_leases": 0},
        headers={**auth(), "Content-Type": "application/merge-patch+json"},
    )
    assert_problem(patch, 422, "validation-error")
    assert await raw_db.fetchval("SELECT count(*) FROM session_leases") == 0
    assert_problem(await acquire(client, "no-such-session", "a"), 404, "session-not-found")
    # An id that was never issued (a NUL, a long one) is a lost lease, never a 500.
    for segment in ("%00x", "x" * 300, "%F0%9F%98%80"):
        renew = await client.put(f"{leases(session['id'])}/{segment}", headers=auth())
        assert_problem(renew, 409, "lease-lost")


async def test_another_principal_cannot_take_or_touch_a_lease(client: httpx.AsyncClient, raw_db) -> None:
    session = await create(client, principal="alice")
    bob = {**auth(), "Session-Principal": "bob"}
    refused = await client.post(leases(session["id"]), json={"holder": "x", "ttl_seconds": 2}, headers=bob)
    assert_problem(refused, 404, "session-not-found")
    lease = (await acquire(client, session["id"], "a")).json()
    assert_problem(
        await client.delete(f"{leases(session['id'])}/{lease['lease_id']}", headers=bob),
        404,
        "session-not-found",
    )
    assert await raw_db.fetchval("SELECT count(*) FROM session_leases") == 1


async def test_max_leases_is_settable(client: httpx.AsyncClient) -> None:
    session = await create(client)
    patched = await client.patch(
        path(session["id"]),
        json={"max_leases": 2.0},  # JSON has one number type
        headers={**auth(), "Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200 and patched.json()["max_leases"] == 2
    assert (await acquire(client, session["id"], "a")).status_code == 201
    assert (await acquire(client, session["id"], "b")).status_code == 201
    assert_problem(await acquire(client, session["id"], "c"), 409, "session-leases-full")


async def test_expired_lease_is_taken_over_at_once_with_a_larger_token_and_purged(
    client: httpx.AsyncClient, raw_db, db
) -> None:
    session = await create(client)
    tokens = []
    first = (await acquire(client, session["id"], "a", ttl=1)).json()
    tokens.append(first["fencing_token"])
    # Not renewed: past its TTL on the database clock the slot is free for the next replica at once,
    # although the session itself lives on (its idle timeout is the default 30 minutes).
    await asyncio.sleep(1.1)
    shown = (await client.get(path(session["id"]), headers=auth())).json()
    assert shown["owner"] == "a" and shown["owner_alive"] is False
    second = await acquire(client, session["id"], "b", ttl=1)
    assert second.status_code == 201, second.text
    tokens.append(second.json()["fencing_token"])
    await asyncio.sleep(1.1)
    # This time the purge removes the expired lease first; the takeover still follows at once.
    result = await purge_once(db, make_settings())
    assert result.deleted["leases"] == 1
    third = await acquire(client, session["id"], "c", ttl=1)
    tokens.append(third.json()["fencing_token"])
    assert tokens == sorted(set(tokens)), tokens  # strictly increasing
    assert_problem(
        await client.put(f"{leases(session['id'])}/{first['lease_id']}", headers=auth()), 409, "lease-lost"
    )
    events = [(t, d) for t, d in await events_of(raw_db, session["id"]) if t.startswith("session.lease_")]
    assert [t for t, _ in events] == [
        "session.lease_acquired",
        "session.lease_lost",  # a's, replaced by b's acquisition
        "session.lease_acquired",
        "session.lease_lost",  # b's, removed by the purge
        "session.lease_acquired",
    ]
    assert [d["holder"] for t, d in events if t == "session.lease_lost"] == ["a", "b"]


async def test_lease_not_renewed_expires_within_ttl_plus_purge_interval(
    client_with, raw_db, database_url: str
) -> None:
    async with client_with(purge_enabled=True, purge_interval_seconds=0.5) as client:
        session = await create(client)
        lease = (await acquire(client, session["id"], "a", ttl=1)).json()
        started = time.monotonic()

        async def gone() -> bool:
            return not await raw_db.fetchval("SELECT count(*) FROM session_leases")

        assert await eventually(gone, timeout=5, interval=0.05)
        waited = time.monotonic() - started
    # TTL 1 s + at most 1.5 purge intervals (the loop's jitter) + a little slack for the run itself.
    assert waited <= 1 + 0.75 + 0.5, waited
    lost = [d for t, d in await events_of(raw_db, session["id"]) if t == "session.lease_lost"]
    assert [d["lease_id"] for d in lost] == [lease["lease_id"]]


async def test_two_replicas_race_for_the_single_lease_exactly_one_wins(
    database_url: str, raw_db, tmp_path
) -> None:
    env = {
        "SESSION_BROKER_DATABASE_URL": database_url,
        "SESSION_BROKER_API_KEYS": API_KEYS,
        "SESSION_BROKER_ADMIN_API_KEYS": ADMIN_KEY,
        "SESSION_BROKER_PURGE_ENABLED": "false",
    }
    first = start_server(env, tmp_path / "a.log")
    second = start_server(env, tmp_path / "b.log")
    assert first.api_key == ACME_KEY
    try:
        for _ in range(5):
            async with httpx.AsyncClient(base_url=first.base_url, headers=auth()) as http:
                session_id = (await http.post("/v1/sessions", json={})).json()["id"]
            statuses = await asyncio.to_thread(_race_two, first, second, session_id)
            assert sorted(statuses) == [201, 409], statuses
        assert await raw_db.fetchval("SELECT count(*) FROM session_leases") == 5
    finally:
        stop_server(first)
        stop_server(second)


def _race_two(first: LiveServer, second: LiveServer, session_id: str) -> list[int]:
    import concurrent.futures
    import threading

    barrier = threading.Barrier(2)

    def attempt(server: LiveServer) -> int:
        with httpx.Client(base_url=server.base_url, headers=auth()) as http:
            http.get("/healthz")  # connected before the barrier
            barrier.wait()
            return http.post(
                leases(session_id), json={"holder": server.base_url, "ttl_seconds": 5}
            ).status_code

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        return list(pool.map(attempt, (first, second)))
