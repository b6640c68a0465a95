"""Per-session request limits on one replica (both paths): max_requests and max_requests_per_minute, their
tenant defaults, patching them, and what a refused touch answers and leaves alone."""

from __future__ import annotations

import asyncio
import json

import httpx

from tests.helpers import assert_problem, auth, create, events_of, metric_value, path, ts


async def touch(client: httpx.AsyncClient, session_id: str) -> httpx.Response:
    return await client.post(path(session_id) + "/touch", headers=auth())


async def test_the_sixth_touch_in_a_minute_is_rate_limited_with_retry_after(
    client: httpx.AsyncClient,
) -> None:
    session = await create(client, max_requests_per_minute=5)
    assert session["max_requests_per_minute"] == 5 and session["max_requests"] == 0
    assert [(await touch(client, session["id"])).status_code for _ in range(5)] == [200] * 5
    refused = await touch(client, session["id"])
    body = assert_problem(refused, 429, "session-rate-limited")
    # The window is the session's first minute: the rest of it, in whole seconds.
    assert 50 <= int(refused.headers["Retry-After"]) <= 60 and body["retry_after"] == int(
        refused.headers["Retry-After"]
    )
    assert body["limit"] == 5
    assert (await client.get(path(session["id"]), headers=auth())).status_code == 200  # still readable
    text = (await client.get("/metrics")).text
    series = 'session_broker_session_requests_limited_total{limit="max_requests_per_minute",tenant="acme"}'
    assert metric_value(text, series) >= 1


async def test_the_fourth_touch_past_max_requests_is_refused_for_good(client_with) -> None:
    async with client_with(touch_granularity_seconds=0, request_limit_sync_seconds=0.2) as client:
        session = await create(client, max_requests=3)
        assert [(await touch(client, session["id"])).status_code for _ in range(3)] == [200] * 3
        body = assert_problem(await touch(client, session["id"]), 429, "session-request-limit")
        assert body["limit"] == 3 and "Retry-After" not in (await touch(client, session["id"])).headers
        await asyncio.sleep(0.5)  # synced: now the database knows the count too
        before = (await client.get(path(session["id"]), headers=auth())).json()
        assert_problem(await touch(client, session["id"]), 429, "session-request-limit")
        after = (await client.get(path(session["id"]), headers=auth())).json()
        # A refused touch does not keep the session alive (granularity 0: an admitted one would write).
        assert after["expires_at"] == before["expires_at"] and after["last_seen_at"] == before["last_seen_at"]


async def test_tenant_defaults_apply_when_the_create_omits_the_limits(client_with) -> None:
    quotas = json.dumps({"acme": {"default_max_requests_per_minute": 1}})
    async with client_with(default_max_requests_per_session=2, tenant_quotas=quotas) as client:
        defaulted = await create(client)
        assert (defaulted["max_requests"], defaulted["max_requests_per_minute"]) == (2, 1)
        unlimited = await create(client, max_requests=0, max_requests_per_minute=0)
        assert [(await touch(client, unlimited["id"])).status_code for _ in range(4)] == [200] * 4
        assert (await touch(client, defaulted["id"])).status_code == 200
        assert_problem(await touch(client, defaulted["id"]), 429, "session-rate-limited")
        limits = (await client.get("/v1/stats", headers=auth())).json()["limits"]
        assert limits["default_max_requests_per_session"] == 2
        assert limits["default_max_requests_per_minute"] == 1


async def test_patching_the_limits(client: httpx.AsyncClient, raw_db) -> None:
    session = await create(client)
    assert (await touch(client, session["id"])).status_code == 200
    headers = {**auth(), "Content-Type": "application/merge-patch+json"}
    patched = await client.patch(
        path(session["id"]), content=json.dumps({"max_requests": 1}), headers=headers
    )
    assert patched.status_code == 200 and patched.json()["max_requests"] == 1
    # Touches are counted while a limit is set (an unlimited session costs nothing): from now on.
    assert (await touch(client, session["id"])).status_code == 200
    assert_problem(await touch(client, session["id"]), 429, "session-request-limit")
    cleared = await client.patch(path(session["id"]), content='{"max_requests": null}', headers=headers)
    assert cleared.json()["max_requests"] == 0
    assert (await touch(client, session["id"])).status_code == 200
    updates = [data for kind, data in await events_of(raw_db, session["id"]) if kind == "session.updated"]
    assert [(u["changed"], u["max_requests"]) for u in updates] == [
        (["max_requests"], 1),
        (["max_requests"], 0),
    ]


async def test_bad_limits_are_422_naming_the_field_and_create_nothing(
    client: httpx.AsyncClient, raw_db
) -> None:
    for field, value in [("max_requests", -1), ("max_requests_per_minute", "5"), ("max_requests", 1.5)]:
        response = await client.post("/v1/sessions", json={field: value}, headers=auth())
        body = assert_problem(response, 422, "validation-error")
        assert [error["field"] for error in body["errors"]] == [field]
    assert await raw_db.fetchval("SELECT count(*) FROM sessions") == 0


async def test_a_registered_id_that_expired_starts_counting_afresh(client_with) -> None:
    async with client_with(request_limit_sync_seconds=0.2) as client:
        first = await client.put(
            path("reused-limited"), json={"max_requests": 1, "idle_timeout_seconds": 1}, headers=auth()
        )
        assert first.status_code == 201
        assert (await touch(client, "reused-limited")).status_code == 200
        assert_problem(await touch(client, "reused-limited"), 429, "session-request-limit")
        await asyncio.sleep(1.3)  # it expires for real; its id may be registered again
        again = await client.put(path("reused-limited"), json={"max_requests": 1}, headers=auth())
        assert again.status_code == 201 and ts(again.json()["created_at"]) > ts(first.json()["created_at"])
        assert (await touch(client, "reused-limited")).status_code == 200  # the old count is not its count
