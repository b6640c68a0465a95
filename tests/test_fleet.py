"""Two real service instances (uvicorn processes) on one PostgreSQL: what must hold with N replicas."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import asyncpg
import httpx
import pytest

from app.db import asyncpg_dsn
from tests.helpers import ADMIN_KEY, LiveServer, start_server, stop_server

TENANTS = {name: f"{name}-key-0123456789abcdef" for name in ("events", "resume", "gap", "purging", "quota")}
SECRET = "s3cr3t-value-never-in-events"


def key(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TENANTS[tenant]}"}


def path(session_id: str) -> str:
    return "/v1/sessions/" + quote(session_id, safe="")


@pytest.fixture(scope="module")
def replicas(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LiveServer]]:
    env = {
        "SESSION_BROKER_DATABASE_URL": database_url,
        "SESSION_BROKER_API_KEYS": ",".join(f"{tenant}={value}" for tenant, value in TENANTS.items()),
        "SESSION_BROKER_ADMIN_API_KEYS": ADMIN_KEY,
        "SESSION_BROKER_PURGE_INTERVAL_SECONDS": "0.3",
        "SESSION_BROKER_TENANT_QUOTAS": json.dumps({"quota": {"max_sessions_per_principal": 5}}),
    }
    directory = tmp_path_factory.mktemp("replicas")
    servers = [start_server(env, directory / f"replica-{n}.log") for n in ("a", "b")]
    yield servers
    for server in servers:
        if server.process.poll() is None:
            stop_server(server)


async def read_events(
    server: LiveServer,
    tenant: str,
    count: int,
    last_event_id: str | None = None,
    timeout: float = 20,
    include_open: bool = False,
) -> list[dict[str, str]]:
    """Open the SSE stream and return the first `count` frames (parsed; `stream.open` only if asked)."""
    headers = key(tenant)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    frames: list[dict[str, str]] = []

    async def collect() -> None:
        async with (
            httpx.AsyncClient(timeout=None) as client,
            client.stream("GET", server.base_url + "/v1/events", headers=headers) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            frame: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line == "":
                    if "event" in frame and (frame["event"] != "stream.open" or include_open):
                        frames.append(frame)
                        if len(frames) >= count:
                            return
                    frame = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(": ")
                    frame[name] = value

    await asyncio.wait_for(collect(), timeout)
    return frames


async def test_events_from_instance_a_reach_a_client_of_instance_b_in_order(replicas) -> None:
    a, b = replicas
    reader = asyncio.create_task(read_events(b, "events", count=6, last_event_id="0"))
    async with httpx.AsyncClient(base_url=a.base_url, headers=key("events")) as api:
        created = (
            await api.post("/v1/sessions", json={"principal": "alice", "metadata": {"api_token": SECRET}})
        ).json()
        assert (await api.post(path(created["id"]) + "/touch")).status_code == 200  # touches emit nothing
        await api.patch(path(created["id"]), json={"owner": "gw-2", "metadata": {"password": SECRET}})
        rotated = (await api.post(path(created["id"]) + "/rotate")).json()
        await api.delete(path(rotated["id"]))
        await api.put(path("sdk/minted+id"), json={"principal": "bob"})
        assert (await api.delete("/v1/sessions", params={"principal": "bob"})).json() == {"revoked": 1}
    frames = await reader
    assert [frame["event"] for frame in frames] == [
        "session.created",
        "session.updated",
        "session.rotated",
        "session.ended",
        "session.created",
        "session.ended",
    ]
    ids = [int(frame["id"]) for frame in frames]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    payloads = [json.loads(frame["data"]) for frame in frames]
    assert payloads[0]["session_id"] == created["id"] and payloads[0]["data"]["how"] == "created"
    assert payloads[1]["data"]["changed"] == ["metadata", "owner"]
    assert payloads[2]["data"]["old_id"] == created["id"] and payloads[2]["data"]["new_id"] == rotated["id"]
    assert payloads[3]["data"]["reason"] == "deleted"
    assert payloads[4]["session_id"] == "sdk/minted+id" and payloads[4]["data"]["how"] == "registered"
    assert payloads[5]["data"]["reason"] == "revoked"
    assert SECRET not in json.dumps(frames)


async def test_reconnecting_with_last_event_id_loses_nothing(replicas) -> None:
    a, b = replicas
    async with httpx.AsyncClient(base_url=a.base_url, headers=key("resume")) as api:
        for n in range(10):
            await api.put(path(f"resume-{n}"))
    first = await read_events(b, "resume", count=4, last_event_id="0")
    rest = await read_events(a, "resume", count=6, last_event_id=first[-1]["id"])  # another replica
    seen = [json.loads(frame["data"])["session_id"] for frame in first + rest]
    assert seen == [f"resume-{n}" for n in range(10)]


async def test_a_client_too_far_behind_is_told_so(replicas, database_url: str) -> None:
    a, b = replicas
    async with httpx.AsyncClient(base_url=a.base_url, headers=key("gap")) as api:
        for n in range(3):
            await api.put(path(f"gap-{n}"))
    frames = await read_events(b, "gap", count=3, last_event_id="0")
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:  # age the events past retention, and let the purge (the replicas' own, or this one) remove them
        await connection.execute(
            "UPDATE session_events SET occurred_at = now() - interval '30 days' WHERE tenant = 'gap'"
        )
        async with httpx.AsyncClient() as admin:
            purge = await admin.post(
                a.base_url + "/v1/admin/purge", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
            )
        assert purge.status_code == 200
        for _ in range(50):
            if not await connection.fetchval("SELECT count(*) FROM session_events WHERE tenant = 'gap'"):
                break
            await asyncio.sleep(0.1)
        assert await connection.fetchval("SELECT count(*) FROM session_events WHERE tenant = 'gap'") == 0
    finally:
        await connection.close()
    async with httpx.AsyncClient(base_url=a.base_url, headers=key("gap")) as api:
        await api.put(path("gap-after"))
    resumed = await read_events(b, "gap", count=2, last_event_id=frames[0]["id"])
    assert resumed[0]["event"] == "stream.gap"
    assert json.loads(resumed[1]["data"])["session_id"] == "gap-after"


async def test_quotas_hold_under_concurrent_creates_on_both_instances(replicas) -> None:
    a, b = replicas
    async with (
        httpx.AsyncClient(base_url=a.base_url, headers=key("quota")) as on_a,
        httpx.AsyncClient(base_url=b.base_url, headers=key("quota")) as on_b,
    ):
        responses = await asyncio.gather(
            *(api.post("/v1/sessions", json={"principal": "carol"}) for api in [on_a, on_b] * 15)
        )
        assert sorted(response.status_code for response in responses) == [201] * 5 + [429] * 25
        listed = (await on_b.get("/v1/sessions", params={"principal": "carol"})).json()
        assert len(listed["items"]) == 5


def test_logs_never_contain_raw_ids_or_secrets(replicas) -> None:
    text = "".join(Path(server.log_path).read_text(errors="replace") for server in replicas)
    assert "sdk/minted+id" not in text and "resume-3" not in text
    assert SECRET not in text


async def test_a_stream_opened_before_any_event_resumes_from_where_it_started(replicas) -> None:
    a, b = replicas
    (opened,) = await read_events(b, "resume", count=1, include_open=True)
    assert opened["event"] == "stream.open" and opened["id"].isdigit()
    async with httpx.AsyncClient(base_url=a.base_url, headers=key("resume")) as api:
        await api.put(path("after-open"))
    (event,) = await read_events(a, "resume", count=1, last_event_id=opened["id"])
    assert json.loads(event["data"])["session_id"] == "after-open"
