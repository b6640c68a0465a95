"""The HTTP edge reads every request the same way on every route, through the real server (uvicorn).

Touch and create are served by the lean hot path, the other routes by FastAPI; both must treat an
unfinished body as a client that went away (nothing written) and refuse a second Authorization or
Session-Principal header identically.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from tests.helpers import ACME_KEY, LiveServer, assert_problem, auth, path


def send_unfinished(server: LiveServer, method: str, target: str, body: bytes, declared: int) -> None:
    """Send a request whose body stops short of its Content-Length, then hang up."""
    address = urlsplit(server.base_url)
    with socket.create_connection((address.hostname, address.port), timeout=5) as connection:
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer {ACME_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
        )
        connection.sendall(head.encode() + body)


@pytest.mark.parametrize(
    ("method", "target"),
    [("POST", "/v1/sessions"), ("PUT", path("registered-but-cut-off"))],
    ids=["create-hot-path", "register-fastapi-route"],
)
async def test_a_body_cut_off_mid_way_writes_nothing(
    live_server: LiveServer, raw_db: asyncpg.Connection, method: str, target: str
) -> None:
    # The part that arrived is a complete JSON document: treated as the whole body, it would create.
    send_unfinished(live_server, method, target, b'{"kind":"cut-off"}', declared=200)
    async with httpx.AsyncClient(base_url=live_server.base_url) as client:
        await asyncio.sleep(0.5)  # the server has seen the hang-up by now
        listed = await client.get("/v1/sessions", params={"kind": "cut-off"}, headers=auth())
        assert listed.status_code == 200 and listed.json()["items"] == []
        # The same request sent whole does create: the test would notice a server that ignores bodies.
        whole = await client.request(method, target, json={"kind": "cut-off"}, headers=auth())
        assert whole.status_code == 201, whole.text
    assert await raw_db.fetchval("SELECT count(*) FROM sessions WHERE kind = 'cut-off'") == 1
    assert await raw_db.fetchval("SELECT count(*) FROM session_events WHERE type = 'session.created'") == 1


@pytest.mark.parametrize("header", ["Authorization", "Session-Principal"])
async def test_a_duplicated_identity_header_gets_the_same_400_on_every_route(
    live_server: LiveServer, raw_db: asyncpg.Connection, header: str
) -> None:
    async with httpx.AsyncClient(base_url=live_server.base_url) as client:
        created = await client.post("/v1/sessions", json={"principal": "alice"}, headers=auth())
        session_path = path(created.json()["id"])
        if header == "Authorization":
            headers = [
                ("Authorization", f"Bearer {ACME_KEY}"),
                ("Authorization", "Bearer someone-elses-key-xx"),
            ]
        else:
            headers = [*auth().items(), ("Session-Principal", "alice"), ("Session-Principal", "mallory")]
        answers = [
            await client.post(session_path + "/touch", headers=headers),  # hot path
            await client.get(session_path, headers=headers),  # FastAPI route
            await client.delete(session_path, headers=headers),
        ]
        bodies = [assert_problem(answer, 400, "duplicate-header") for answer in answers]
        assert bodies[0] == bodies[1] == bodies[2] and bodies[0]["header"] == header
        # Nothing happened to the session.
        assert (await client.get(session_path, headers=auth())).status_code == 200
