"""Group touch: many touches in one statement must answer exactly what single touches would."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from app.db import Database
from app.repository import SessionRepository
from tests.helpers import age, auth, create, make_settings, metric_value, path

TOUCH_STATEMENTS = 'session_broker_db_query_duration_seconds_count{operation="touch"}'


async def test_touch_many_answers_each_row_like_a_single_touch(
    client: httpx.AsyncClient, raw_db, database_url
) -> None:
    due = await create(client, principal="alice")
    throttled = await create(client)
    expired = await create(client, idle_timeout_seconds=60)
    deleted = await create(client)
    bound = await create(client, principal="alice")
    await age(raw_db, due["id"], 120)
    await age(raw_db, expired["id"], 61)
    await age(raw_db, bound["id"], 120)
    await client.delete(path(deleted["id"]), headers=auth())
    keys = [
        ("acme", due["id"], "alice"),
        ("acme", throttled["id"], None),
        ("acme", expired["id"], None),
        ("acme", deleted["id"], None),
        ("acme", "never-existed", None),
        ("acme", bound["id"], "mallory"),
        ("globex", throttled["id"], None),  # another tenant's view of the same id
    ]
    db = Database(make_settings(), database_url)
    await db.open()
    try:
        async with db.connection() as connection:
            outcomes = await SessionRepository(connection).touch_many(
                keys, granularity_seconds=60, async_commit=True
            )
    finally:
        await db.close()
    summary = [(o.found, o.written, o.due, o.ended_reason) for o in outcomes]
    assert summary == [
        (True, True, True, None),
        (True, False, False, None),
        (False, False, False, "expired_idle"),
        (False, False, False, "deleted"),
        (False, False, False, None),
        (True, False, True, None),  # due, but bound to alice: not written (the service answers 404)
        (False, False, False, None),
    ]
    assert outcomes[5].principal == "alice"
    assert await raw_db.fetchval("SELECT version FROM sessions WHERE id = $1", bound["id"]) == 1


async def test_concurrent_mixed_touches_through_the_api(client_with, raw_db) -> None:
    async with client_with(touch_granularity_seconds=0, db_pool_max_size=4) as client:
        live = [await create(client, principal=f"p{i % 3}") for i in range(12)]
        gone = await create(client)
        await client.delete(path(gone["id"]), headers=auth())
        requests = []
        for session in live:
            owner = session["principal"]
            requests += [
                (session["id"], owner, 200),
                (session["id"], None, 200),
                (session["id"], "intruder", 404),  # same session, other principal: next batch
                (session["id"], owner, 200),  # duplicate: shares the answer
            ]
        requests += [(gone["id"], None, 404), ("missing", None, 404)]
        statements_before = metric_value((await client.get("/metrics")).text, TOUCH_STATEMENTS)
        responses = await asyncio.gather(
            *(
                client.post(
                    path(session_id) + "/touch",
                    headers={**auth(), **({"Session-Principal": principal} if principal else {})},
                )
                for session_id, principal, _ in requests
            )
        )
        assert [response.status_code for response in responses] == [expected for *_, expected in requests]
        assert responses[-2].json()["reason"] == "deleted"
        statements = metric_value((await client.get("/metrics")).text, TOUCH_STATEMENTS) - statements_before
        assert 0 < statements < len(requests)  # they really were grouped
        # Expiry only ever moved forward, and every live session was written at least once.
        rows = await raw_db.fetch(
            "SELECT id, version, last_seen_at, created_at FROM sessions WHERE id = ANY($1)",
            [s["id"] for s in live],
        )
        assert all(row["last_seen_at"] > row["created_at"] for row in rows)
        assert Counter(row["version"] for row in rows) == Counter({1: 12})  # touches never bump versions


CREATE_STATEMENTS = 'session_broker_db_query_duration_seconds_count{operation="create"}'


async def test_concurrent_creates_are_grouped_and_each_is_complete(client_with, raw_db) -> None:
    async with client_with(db_pool_max_size=4) as client:
        before = metric_value((await client.get("/metrics")).text, CREATE_STATEMENTS)
        bodies = [
            {"kind": "mcp", "principal": f"user-{i % 5}", "client_id": "claude", "metadata": {"n": i}}
            for i in range(60)
        ]
        responses = await asyncio.gather(
            *(client.post("/v1/sessions", json=body, headers=auth()) for body in bodies)
        )
        assert [response.status_code for response in responses] == [201] * 60
        sessions = [response.json() for response in responses]
        assert [session["metadata"] for session in sessions] == [body["metadata"] for body in bodies]
        assert len({session["id"] for session in sessions}) == 60
        assert all(
            response.headers["location"].endswith(s["id"])
            for response, s in zip(responses, sessions, strict=True)
        )
        statements = metric_value((await client.get("/metrics")).text, CREATE_STATEMENTS) - before
        assert 0 < statements < 60  # grouped
        stats = (await client.get("/v1/stats", headers=auth())).json()
        assert stats["created_total"] == 60 and stats["live"] == 60
    created_events = await raw_db.fetch(
        "SELECT session_id, data FROM session_events WHERE type = 'session.created'"
    )
    assert {row["session_id"] for row in created_events} == {session["id"] for session in sessions}
    positions = await raw_db.fetchval("SELECT count(DISTINCT position) FROM session_events")
    assert positions == 60


@pytest.mark.parametrize("many", [False, True], ids=["single", "grouped"])
@pytest.mark.parametrize("async_commit", [True, False], ids=["async", "synchronous"])
async def test_touch_statements_choose_their_own_commit_mode(
    client: httpx.AsyncClient, database_url: str, raw_db, many: bool, async_commit: bool
) -> None:
    session = await create(client)
    db = Database(make_settings(), database_url)
    await db.open()
    try:
        async with db.connection() as connection, connection.transaction():
            # Inside an explicit transaction the statement's local setting is still visible afterwards:
            # exactly what its own implicit transaction's commit reads.
            repo = SessionRepository(connection)
            if many:
                outcomes = await repo.touch_many(
                    [("acme", session["id"], None), ("acme", "x", None)],
                    granularity_seconds=0,
                    async_commit=async_commit,
                )
            else:
                outcomes = [
                    await repo.touch(
                        "acme",
                        session["id"],
                        principal=None,
                        granularity_seconds=0,
                        async_commit=async_commit,
                    )
                ]
            assert outcomes[0].written
            mode = await connection.fetchval("SHOW synchronous_commit")
    finally:
        await db.close()
    assert mode == ("off" if async_commit else "on")
