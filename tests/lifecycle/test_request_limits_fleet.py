"""Request limits across two real replicas (REQUEST_LIMIT_SYNC_SECONDS=1): exact when touches are further
apart than a sync, and within the README's bound when they race (never more than N x the limit, here 2x),
refused everywhere once the replicas have synced."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from tests.helpers import LiveServer, start_server, stop_server

KEY = "limits-key-0123456789abcdef"
HEADERS = {"Authorization": f"Bearer {KEY}"}
SYNC = 1.0


@pytest.fixture(scope="module")
def replicas(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LiveServer]]:
    env = {
        "SESSION_BROKER_DATABASE_URL": database_url,
        "SESSION_BROKER_API_KEYS": f"limits={KEY}",
        "SESSION_BROKER_PURGE_ENABLED": "false",
        "SESSION_BROKER_REQUEST_LIMIT_SYNC_SECONDS": str(SYNC),
    }
    directory = tmp_path_factory.mktemp("limits")
    servers = [start_server(env, directory / f"replica-{n}.log") for n in ("a", "b")]
    yield servers
    for server in servers:
        stop_server(server)


async def touch(client: httpx.AsyncClient, session_id: str) -> httpx.Response:
    return await client.post("/v1/sessions/" + quote(session_id, safe="") + "/touch")


@pytest.fixture
async def apis(replicas) -> list[httpx.AsyncClient]:
    clients = [httpx.AsyncClient(base_url=server.base_url, headers=HEADERS) for server in replicas]
    yield clients
    for client in clients:
        await client.aclose()


async def test_touches_further_apart_than_a_sync_are_limited_exactly(apis) -> None:
    session = (await apis[0].post("/v1/sessions", json={"max_requests_per_minute": 5})).json()
    statuses = []
    for n in range(6):  # alternating replicas, each touch after the other replica has synced
        response = await touch(apis[n % 2], session["id"])
        statuses.append(response.status_code)
        await asyncio.sleep(SYNC * 1.5)
    assert statuses == [200] * 5 + [429]
    assert response.json()["type"] == "urn:session-broker:problem:session-rate-limited"
    assert int(response.headers["Retry-After"]) >= 1
    lifetime = (await apis[1].post("/v1/sessions", json={"max_requests": 3})).json()
    statuses = []
    for n in range(4):
        statuses.append((await touch(apis[n % 2], lifetime["id"])).status_code)
        await asyncio.sleep(SYNC * 1.5)
    assert statuses == [200] * 3 + [429]
    assert (await apis[0].get("/v1/sessions/" + quote(lifetime["id"], safe=""))).status_code == 200


async def test_racing_touches_stay_within_the_bound_and_are_refused_everywhere_after_a_sync(apis) -> None:
    for body, limit, problem in (
        ({"max_requests_per_minute": 5}, 5, "session-rate-limited"),
        ({"max_requests": 3}, 3, "session-request-limit"),
    ):
        session = (await apis[0].post("/v1/sessions", json=body)).json()
        burst = await asyncio.gather(*(touch(apis[n % 2], session["id"]) for n in range(4 * limit)))
        admitted = sum(response.status_code == 200 for response in burst)
        # Each replica admits at most the limit on its own; the other's unsynced touches are the overshoot.
        assert limit <= admitted <= 2 * limit, (body, admitted)
        assert {response.status_code for response in burst} == {200, 429}
        await asyncio.sleep(SYNC * 2)
        for api in apis:
            refused = await touch(api, session["id"])
            assert refused.status_code == 429 and refused.json()["type"].endswith(problem)
