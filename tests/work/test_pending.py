"""Pending server-to-client requests over the real app and PostgreSQL, in real time: a reply hands over
once, replies to unknown, foreign or ended requests change nothing and are counted, deadlines end
requests as timed_out, a holder can cancel, and the figures show it all."""

from __future__ import annotations

import asyncio
import time

import httpx

from app.fleet_gauges import publish
from app.purge import purge_once
from tests.helpers import assert_problem, auth, create, events_of, make_settings, metric_value, path


def pending(session_id: str) -> str:
    return path(session_id) + "/pending"


def reply(request_id: object, result: object = None) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "result": result or {"action": "accept", "content": {"n": 1}}}


async def record(
    client: httpx.AsyncClient,
    session_id: str,
    request_id: object,
    timeout: int = 5,
    method: str = "elicitation/create",
) -> dict:
    response = await client.post(
        pending(session_id),
        json={"request_id": request_id, "method": method, "holder": "http://a:1", "timeout_seconds": timeout},
        headers=auth(),
    )
    assert response.status_code == 201, response.text
    recorded: dict = response.json()
    return recorded


async def refused_replies(client: httpx.AsyncClient, reason: str) -> float:
    text = (await client.get("/metrics")).text
    return metric_value(
        text, f'session_broker_pending_replies_refused_total{{reason="{reason}",tenant="acme"}}'
    )


async def test_a_reply_reaches_the_waiting_holder_once(client: httpx.AsyncClient, raw_db) -> None:
    session = await create(client)
    recorded = await record(client, session["id"], 7)
    assert recorded["state"] == "pending" and recorded["request_id"] == 7

    async def waiter() -> dict:
        url = f"{pending(session['id'])}/{recorded['pending_id']}?wait_seconds=5"
        got: dict = (await client.get(url, headers=auth())).json()
        return got

    waiting = asyncio.create_task(waiter())
    await asyncio.sleep(0.2)
    started = time.monotonic()
    answered = await client.post(path(session["id"]) + "/replies", json=reply(7), headers=auth())
    assert answered.status_code == 200, answered.text
    assert answered.json()["state"] == "answered" and answered.json()["holder"] == "http://a:1"
    seen = await waiting
    assert time.monotonic() - started < 0.5
    assert seen["state"] == "answered" and seen["response"] == reply(7)
    # A second reply to the same request changes nothing.
    before = await refused_replies(client, "ended")
    again = await client.post(
        path(session["id"]) + "/replies", json=reply(7, {"action": "decline"}), headers=auth()
    )
    assert assert_problem(again, 409, "pending-request-ended")["state"] == "answered"
    assert await refused_replies(client, "ended") == before + 1
    stored = await raw_db.fetchval("SELECT response::text FROM session_pending_requests")
    assert '"accept"' in stored
    types = [t for t, _ in await events_of(raw_db, session["id"])]
    assert types.count("session.request_answered") == 1


async def test_unknown_and_foreign_replies_change_nothing_and_are_counted(
    client: httpx.AsyncClient, raw_db
) -> None:
    mine = await create(client, principal="alice")
    other = await create(client, principal="alice")
    bob = await create(client, principal="bob")
    await record(client, mine["id"], 1)
    before = await refused_replies(client, "unknown")
    alice = {**auth(), "Session-Principal": "alice"}
    # No such id in this session; the id of a request of another session; another principal's session.
    assert_problem(
        await client.post(path(mine["id"]) + "/replies", json=reply(2), headers=alice),
        404,
        "pending-request-not-found",
    )
    assert_problem(
        await client.post(path(other["id"]) + "/replies", json=reply(1), headers=alice),
        404,
        "pending-request-not-found",
    )
    as_bob = {**auth(), "Session-Principal": "bob"}
    assert_problem(
        await client.post(path(mine["id"]) + "/replies", json=reply(1), headers=as_bob),
        404,
        "session-not-found",
    )
    assert_problem(
        await client.post(path(bob["id"]) + "/replies", json=reply(1), headers=alice),
        404,
        "session-not-found",
    )
    # "1" is not 1.
    assert_problem(
        await client.post(path(mine["id"]) + "/replies", json=reply("1"), headers=alice),
        404,
        "pending-request-not-found",
    )
    assert await refused_replies(client, "unknown") == before + 5
    assert await raw_db.fetchval("SELECT state FROM session_pending_requests") == "pending"


async def test_deadline_times_out_and_cancel(client: httpx.AsyncClient, raw_db, db) -> None:
    session = await create(client)
    short = await record(client, session["id"], "a", timeout=1, method="sampling/createMessage")
    held = await record(client, session["id"], "b", timeout=30, method="roots/list")
    stats = (await client.get("/v1/stats", headers=auth())).json()["pending"]
    assert stats["pending"] == 2 and stats["completions"] == 1
    assert stats["by_method"] == {"roots/list": 1, "sampling/createMessage": 1}
    await publish(db, make_settings())  # the fleet gauges show them too
    text = (await client.get("/metrics")).text
    series = 'session_broker_pending_requests_open{method="%s",tenant="acme"}'
    assert metric_value(text, series % "sampling/createMessage") == 1  # the active completions
    assert metric_value(text, series % "roots/list") == 1
    url = f"{pending(session['id'])}/{short['pending_id']}?wait_seconds=3"
    started = time.monotonic()
    timed_out = (await client.get(url, headers=auth())).json()
    assert timed_out["state"] == "timed_out" and time.monotonic() - started < 1.5
    late = await client.post(path(session["id"]) + "/replies", json=reply("a"), headers=auth())
    assert assert_problem(late, 409, "pending-request-ended")["state"] == "timed_out"
    cancelled = await client.delete(f"{pending(session['id'])}/{held['pending_id']}", headers=auth())
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert_problem(
        await client.delete(f"{pending(session['id'])}/{held['pending_id']}", headers=auth()),
        409,
        "pending-request-ended",
    )
    assert (await purge_once(db, make_settings())).deleted["pending"] == 1  # the timeout, recorded
    stats = (await client.get("/v1/stats", headers=auth())).json()["pending"]
    assert stats["pending"] == 0
    assert stats["ended"] == {
        "answered": {},
        "cancelled": {"roots/list": 1},
        "timed_out": {"sampling/createMessage": 1},
    }
    types = [t for t, _ in await events_of(raw_db, session["id"])]
    assert types.count("session.request_timed_out") == 1 and types.count("session.request_cancelled") == 1
    # An ended id may be used again (SDK sessions adopted by several replicas number requests on their own).
    again = await record(client, session["id"], "a", timeout=5)
    assert again["pending_id"] != short["pending_id"]
    exists = await client.post(
        pending(session["id"]),
        json={"request_id": "a", "method": "x", "holder": "h", "timeout_seconds": 5},
        headers=auth(),
    )
    assert_problem(exists, 409, "pending-request-exists")


async def test_bad_input_names_the_field(client: httpx.AsyncClient, raw_db) -> None:
    session = await create(client)
    base = {"request_id": 1, "method": "elicitation/create", "holder": "h", "timeout_seconds": 5}
    for body, field in (
        ({**base, "request_id": 1.5}, "request_id"),
        ({**base, "request_id": None}, "request_id"),
        ({**base, "request_id": 2**63}, "request_id"),  # ids are at most 64-bit (the schema says so)
        ({**base, "request_id": -(2**63) - 1}, "request_id"),
        ({**base, "request_id": 3.13e23}, "request_id"),
        ({**base, "timeout_seconds": 0}, "timeout_seconds"),
        ({**base, "timeout_seconds": 10**7}, "timeout_seconds"),
        ({k: v for k, v in base.items() if k != "holder"}, "holder"),
    ):
        problem = assert_problem(
            await client.post(pending(session["id"]), json=body, headers=auth()), 422, "validation-error"
        )
        assert field in {error["field"] for error in problem["errors"]}, problem
    for body in (
        {"jsonrpc": "2.0", "id": 1},
        {"jsonrpc": "2.0", "id": 1, "result": {}, "error": {}},
        {"id": 1, "result": {}},
        {"jsonrpc": "2.0", "id": 2**63, "error": {}},
    ):
        assert_problem(
            await client.post(path(session["id"]) + "/replies", json=body, headers=auth()),
            422,
            "validation-error",
        )
    assert await raw_db.fetchval("SELECT count(*) FROM session_pending_requests") == 0
    # The extremes of 64 bits are ids like any other, and 1503.0 is the integer 1503 (JSON Schema's view).
    for request_id in (2**63 - 1, -(2**63), 1503.0):
        recorded = await record(client, session["id"], request_id)
        assert recorded["request_id"] == int(request_id) and type(recorded["request_id"]) is int
        answered = await client.post(path(session["id"]) + "/replies", json=reply(request_id), headers=auth())
        assert answered.status_code == 200, answered.text
    # The client's response reaches the holder exactly as sent, whatever the size of its integers.
    exact = {"content": {"n": 10**30, "m": -(2**70)}, "action": "accept"}
    recorded = await record(client, session["id"], "exact")
    answered = await client.post(path(session["id"]) + "/replies", json=reply("exact", exact), headers=auth())
    assert answered.status_code == 200, answered.text
    got = await client.get(f"{pending(session['id'])}/{recorded['pending_id']}", headers=auth())
    assert got.json()["response"]["result"] == exact
