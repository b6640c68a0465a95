"""Limits on what a client may send and for how long, through the real server (uvicorn + the app).

Unauthenticated clients could send a 64 MB header (answered 200), or hold connections open with an
unfinished header or body for as long as they liked, each holding its buffers.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import psutil
import pytest

from tests.helpers import ACME_KEY, API_KEYS, LiveServer, start_server, stop_server

HEADER_TIMEOUT, BODY_TIMEOUT, MAX_CONNECTIONS = 1.0, 1.0, 20


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(
        {
            "SESSION_BROKER_DATABASE_URL": database_url,
            "SESSION_BROKER_API_KEYS": API_KEYS,
            "SESSION_BROKER_PURGE_ENABLED": "false",
            "SESSION_BROKER_HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
            "SESSION_BROKER_HTTP_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
            "SESSION_BROKER_HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        },
        tmp_path_factory.mktemp("limits") / "server.log",
    )
    yield live
    stop_server(live)


def connect(server: LiveServer) -> socket.socket:
    address = urlsplit(server.base_url)
    return socket.create_connection((address.hostname, address.port), timeout=10)


def answer_of(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def rss(server: LiveServer) -> int:
    return int(psutil.Process(server.process.pid).memory_info().rss)


def test_a_huge_header_is_431_and_closes_the_connection(server: LiveServer) -> None:
    before = rss(server)
    with connect(server) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: broker\r\nX-Big: ")
        try:
            for _ in range(64):  # up to 64 MB, unless the server has hung up long before
                connection.sendall(b"a" * 1024 * 1024)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = answer_of(connection)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"urn:session-broker:problem:headers-too-large" in answer
    assert rss(server) - before < 32 * 1024 * 1024


def test_stalled_unfinished_headers_hold_no_memory_and_are_closed(server: LiveServer) -> None:
    before = rss(server)
    stalled = [connect(server) for _ in range(4)]
    try:
        for connection in stalled:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: broker\r\nX-Big: ")
            try:
                for _ in range(32):
                    connection.sendall(b"a" * 1024 * 1024)
            except (BrokenPipeError, ConnectionResetError):
                pass
        assert rss(server) - before < 32 * 1024 * 1024  # not 4 x 32 MB buffered
        for connection in stalled:
            assert answer_of(connection).startswith(b"HTTP/1.1 431")
    finally:
        for connection in stalled:
            connection.close()


def test_a_slow_header_is_408_after_the_header_timeout(server: LiveServer) -> None:
    with connect(server) as connection:
        started = time.monotonic()
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: broker\r\n")  # and never the blank line
        answer = answer_of(connection)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"urn:session-broker:problem:request-timeout" in answer
    assert HEADER_TIMEOUT * 0.9 <= waited < HEADER_TIMEOUT + 2


def test_a_connection_that_sends_nothing_is_closed(server: LiveServer) -> None:
    with connect(server) as connection:
        started = time.monotonic()
        answer = answer_of(connection)
        assert time.monotonic() - started < HEADER_TIMEOUT + 2
    assert answer.startswith(b"HTTP/1.1 408")


async def test_a_slow_body_is_408_and_writes_nothing(server: LiveServer, raw_db: asyncpg.Connection) -> None:
    with connect(server) as connection:
        connection.sendall(
            f"POST /v1/sessions HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer {ACME_KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n".encode()
            + b'{"kind": "slow"'
        )
        started = time.monotonic()
        connection.settimeout(BODY_TIMEOUT + 5)
        first = connection.recv(65536)
        waited = time.monotonic() - started
    assert first.startswith(b"HTTP/1.1 408"), first[:200]
    assert BODY_TIMEOUT * 0.9 <= waited < BODY_TIMEOUT + 2
    assert await raw_db.fetchval("SELECT count(*) FROM sessions WHERE kind = 'slow'") == 0


def test_connections_beyond_the_limit_are_refused(server: LiveServer) -> None:
    held = [connect(server) for _ in range(MAX_CONNECTIONS)]
    try:
        with connect(server) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: broker\r\nConnection: close\r\n\r\n")
            assert answer_of(extra).startswith(b"HTTP/1.1 503")
    finally:
        for connection in held:
            connection.close()
    time.sleep(0.2)
    with connect(server) as again:  # once they are gone, the server answers again
        again.sendall(b"GET /healthz HTTP/1.1\r\nHost: broker\r\nConnection: close\r\n\r\n")
        assert answer_of(again).startswith(b"HTTP/1.1 200")


def test_ordinary_requests_are_untouched_by_the_limits(server: LiveServer, tmp_path: Path) -> None:
    with connect(server) as connection:
        connection.sendall(
            f"POST /v1/sessions HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer {ACME_KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".encode()
        )
        assert answer_of(connection).startswith(b"HTTP/1.1 201")


def test_large_bodies_on_one_kept_alive_connection_are_not_counted_as_headers(server: LiveServer) -> None:
    body = b'{"metadata": {"blob": "' + b"z" * 60_000 + b'"}}'
    request = (
        f"POST /v1/sessions HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer {ACME_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with connect(server) as connection:
        connection.sendall(
            request * 3 + request.replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n", 1)
        )
        answer = answer_of(connection)
    assert answer.count(b"HTTP/1.1 201 Created") == 4, answer[:300]
