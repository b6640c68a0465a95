"""Helpers shared by test modules: keys, request shorthands, a real server process, polling.

Fixtures live in `conftest.py` files; plain functions and constants live here, so no test module
imports from another.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx

from app.config import Settings, load_settings
from app.main import create_app

ROOT = Path(__file__).resolve().parent.parent
ACME_KEY = "acme-key-0123456789abcdef"
GLOBEX_KEY = "globex-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef"
API_KEYS = f"acme={ACME_KEY},globex={GLOBEX_KEY}"
PROBLEM = "application/problem+json"
# Set (by `pytest --pgbouncer`, see conftest.py) when the service under test reaches the database through
# PgBouncer in transaction pooling mode: every service the tests build then runs with prepared
# statements off, as the README tells operators to.
PGBOUNCER_ENV = "BROKER_TEST_PGBOUNCER"


def via_pgbouncer() -> bool:
    return os.environ.get(PGBOUNCER_ENV) == "1"


def database_env() -> dict[str, str]:
    """Environment a broker process needs for the test database's connection path."""
    return {"SESSION_BROKER_DB_PREPARED_STATEMENTS": "false"} if via_pgbouncer() else {}


def auth(key: str = ACME_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_settings(**overrides: Any) -> Settings:
    """Test settings. The purge loop is off unless a test turns it on (`purge_enabled=True`): at its
    default interval of a second it would race the tests that run `purge_once` themselves."""
    values: dict[str, Any] = {
        "api_keys": API_KEYS,
        "admin_api_keys": ADMIN_KEY,
        "log_format": "text",
        "purge_enabled": False,
    }
    if via_pgbouncer():
        values["db_prepared_statements"] = False
    values.update(overrides)
    return load_settings(**values)


@asynccontextmanager
async def running_client(
    url: str, hot_paths: bool = True, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The real app with its lifespan, over httpx's ASGI transport (`client.app` is the app)."""
    app = create_app(make_settings(**overrides), database_url=url, hot_paths=hot_paths)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://broker.test") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def path(session_id: str) -> str:
    return "/v1/sessions/" + quote(session_id, safe="")


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"] == f"urn:session-broker:problem:{slug}"
    assert body["title"] and body["detail"]
    return body


async def create(client: httpx.AsyncClient, **body: object) -> dict[str, Any]:
    response = await client.post("/v1/sessions", json=body, headers=auth())
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def age(raw_db: asyncpg.Connection, session_id: str, seconds: float) -> None:
    """Pretend the session was last seen `seconds` ago (moves its public timestamps back together), for
    what reads and touches decide from them. The purge's `check_at` stays: the purge does not see an aged
    session early, so purge tests let sessions really expire instead."""
    await raw_db.execute(
        """UPDATE sessions SET created_at = created_at - $2 * interval '1 second',
                               last_seen_at = last_seen_at - $2 * interval '1 second',
                               expires_at = expires_at - $2 * interval '1 second'
            WHERE tenant = 'acme' AND id = $1""",
        session_id,
        seconds,
    )


def metric_value(text: str, series: str) -> float:
    """A sample's value in Prometheus text (0 when the series is absent: the registry is per process)."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


@dataclass
class LiveServer:
    base_url: str
    api_key: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    env_overrides: dict[str, str],
    log_path: Path,
    timeout: float = 60.0,
    ready_path: str = "/readyz",
    port: int | None = None,
) -> LiveServer:
    """Run `session-broker serve` as a real process and wait until `ready_path` answers 200 (use
    `/healthz` for a server whose database is not usable yet). On `port` to restart a server where its
    clients expect it; a free port by default."""
    port = port or free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("SESSION_BROKER_")}
    env.update(
        {
            "SESSION_BROKER_PORT": str(port),
            "SESSION_BROKER_LOG_FORMAT": "json",
            **database_env(),
            **env_overrides,
        }
    )
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(base_url + ready_path, timeout=1).status_code == 200:
                return LiveServer(base_url, ACME_KEY, process, log_path)
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server did not become ready:\n{log_path.read_text()}")


def run_command(
    *arguments: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `session-broker <arguments>` as a real process (no SESSION_BROKER_* variables inherited)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("SESSION_BROKER_")}
    environment.update({"SESSION_BROKER_LOG_FORMAT": "text", **database_env(), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


async def eventually(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.1) -> Any:
    """Poll an async check until it returns a truthy value (for effects that are asynchronous by design,
    like PostgreSQL's cumulative statistics)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(interval)


async def events_of(raw_db: asyncpg.Connection, session_id: str) -> list[tuple[str, dict[str, Any]]]:
    rows = await raw_db.fetch(
        "SELECT type, data FROM session_events WHERE session_id = $1 ORDER BY position", session_id
    )
    return [(row["type"], json.loads(row["data"])) for row in rows]


async def expired_rows(raw_db: asyncpg.Connection, count: int) -> None:
    """`count` sessions of tenant `bulk` that expired an hour ago, for batch sizes no test can create over
    HTTP in reasonable time. Each row is what a create two hours ago (60 s idle timeout, no expiry
    warnings) would have written and no touch has changed since: `check_at` is its `expires_at`, as
    `fragments.first_expiry` sets it. So the purge must find them through its real selection (the
    check_at index), exactly as it finds sessions that expired on their own; no column is set to look due
    beyond what the expiry itself implies."""
    await raw_db.execute(
        """INSERT INTO sessions (tenant, id, kind, metadata, version, idle_timeout_seconds,
                                 max_lifetime_seconds, created_at, last_seen_at, expires_at, check_at)
           SELECT 'bulk', 'old-' || n, 'mcp', '{}', 1, 60, 3600, now() - interval '2 hours',
                  now() - interval '2 hours', now() - interval '2 hours' + interval '60 seconds',
                  now() - interval '2 hours' + interval '60 seconds'
             FROM generate_series(1, $1::int) AS n""",
        count,
    )


class EventStream:
    """A client of one server's `GET /v1/events` (from now on) that notes when each frame of `types`
    arrives: `arrivals[session_id]` is a list of (arrival time, event type, payload)."""

    def __init__(self, server: LiveServer, api_key: str, types: set[str]) -> None:
        self.server = server
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.types = types
        self.arrivals: dict[str, list[tuple[float, str, dict[str, Any]]]] = {}
        self.opened = asyncio.Event()
        self.arrived = asyncio.Event()  # set on every frame of `types`
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EventStream:
        self._task = asyncio.create_task(self._read())
        await asyncio.wait_for(self.opened.wait(), 10)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _read(self) -> None:
        async with (
            httpx.AsyncClient(timeout=None) as client,
            client.stream("GET", self.server.base_url + "/v1/events", headers=self.headers) as response,
        ):
            assert response.status_code == 200
            frame: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line == "":
                    if frame.get("event") == "stream.open":
                        self.opened.set()
                    elif frame.get("event") in self.types:
                        payload = json.loads(frame["data"])
                        entry = (time.time(), frame["event"], payload)
                        self.arrivals.setdefault(payload["session_id"], []).append(entry)
                        self.arrived.set()
                    frame = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(": ")
                    frame[name] = value

    def of(self, session_id: str, event_type: str) -> list[tuple[float, dict[str, Any]]]:
        """(arrival time, payload) of the frames of one type for one session."""
        return [
            (at, payload) for at, kind, payload in self.arrivals.get(session_id, []) if kind == event_type
        ]

    async def wait_for(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wait until `done()` holds (checked as frames arrive) or `timeout` passes; whether it held."""
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), max(0.0, deadline - time.monotonic()))
        return done()
