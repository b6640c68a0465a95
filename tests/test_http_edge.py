"""The HTTP edge reads every request the same way on every route, through the real server (uvicorn).

Touch and create are served by the lean hot path, the other routes by FastAPI; both must treat an
unfinished body as a client that went away (nothing written) and refuse a second Authorization or
Session-Principal header identically.
"""

from __future__ import annotations

import asyncio
import json
import re
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


def raw_request(server: LiveServer, head: str | bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send one request exactly as written (header bytes untouched by any client library)."""
    address = urlsplit(server.base_url)
    head_bytes = head.encode("utf-8") if isinstance(head, str) else head
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(head_bytes + b"\r\nConnection: close\r\n\r\n" + body)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("sent", ["alice ", "alice\t", " alice", "josé@example", "josé@example "])
async def test_session_principal_is_trimmed_and_utf8_on_every_route(
    live_server: LiveServer, raw_db: asyncpg.Connection, sent: str
) -> None:
    owner = sent.strip()
    async with httpx.AsyncClient(base_url=live_server.base_url) as client:
        created = await client.post("/v1/sessions", json={"principal": owner + "  "}, headers=auth())
        assert created.json()["principal"] == owner  # stored trimmed, too
        session_id = created.json()["id"]
    for method, target in (("POST", path(session_id) + "/touch"), ("GET", path(session_id))):
        status, _ = raw_request(
            live_server,
            f"{method} {target} HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer {ACME_KEY}\r\n"
            f"Session-Principal: {sent}\r\nContent-Length: 0",
        )
        assert status == 200, (method, sent)
        status, body = raw_request(
            live_server,
            f"{method} {target} HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer {ACME_KEY}\r\n"
            f"Session-Principal: mallory{sent[-1] if sent[-1].isspace() else ''}\r\nContent-Length: 0",
        )
        assert status == 404, (method, body)


async def test_a_principal_that_is_not_utf8_is_refused_naming_the_header(live_server: LiveServer) -> None:
    head = f"GET {path('any')} HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer {ACME_KEY}\r\n".encode()
    status, body = raw_request(live_server, head + b"Session-Principal: jos\xe9")  # latin-1, not UTF-8
    assert status == 422
    assert json.loads(body)["errors"] == [{"field": "Session-Principal", "message": "must be UTF-8 text"}]


async def test_a_last_event_id_beyond_64_bits_is_422_and_one_ahead_of_the_head_says_so(
    live_server: LiveServer,
) -> None:
    async with httpx.AsyncClient(base_url=live_server.base_url, timeout=10) as client:
        too_big = await client.get("/v1/events", headers={**auth(), "Last-Event-ID": str(2**63)})
        problem = assert_problem(too_big, 422, "validation-error")
        assert problem["errors"][0]["field"] == "Last-Event-ID"
        async with client.stream(
            "GET", "/v1/events", headers={**auth(), "Last-Event-ID": str(2**63 - 1)}
        ) as stream:
            assert stream.status_code == 200
            frame = b""
            async for chunk in stream.aiter_bytes():
                frame += chunk
                if b"\n\n" in frame:
                    break
    lines = dict(line.split(": ", 1) for line in frame.decode().split("\n\n")[0].splitlines())
    assert lines["event"] == "stream.gap"
    data = json.loads(lines["data"])
    assert data["last_event_id"] == str(2**63 - 1) and int(data["resumed_after"]) == int(lines["id"])
    assert int(lines["id"]) < 2**63 - 1 and "ahead of the newest event" in data["detail"]


async def test_a_trailing_slash_is_a_404_problem_not_a_redirect_built_from_host(
    live_server: LiveServer,
) -> None:
    async with httpx.AsyncClient(base_url=live_server.base_url, follow_redirects=False) as client:
        for method in ("POST", "GET"):
            answer = await client.request(method, "/v1/sessions/", headers={**auth(), "Host": "evil.example"})
            assert "location" not in answer.headers
            assert_problem(answer, 404, "not-found")


async def test_docs_are_served_from_the_package_without_any_outside_address(live_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live_server.base_url) as client:
        page = await client.get("/docs")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        addresses = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", page.text)
        urls = {url for pair in addresses for url in pair if url}
        assert urls and all(url.startswith("/") for url in urls), urls  # nothing from a CDN
        for url in urls:
            asset = await client.get(url)
            assert asset.status_code == 200, url
        script = await client.get("/docs/assets/swagger-ui-bundle.js")
        assert "SwaggerUIBundle" in script.text and len(script.content) > 500_000
        contract = await client.get("/openapi.json")
        assert contract.json()["openapi"].startswith("3.1")
