"""Shared fixtures: a real PostgreSQL (embedded by default), the real ASGI app, a real uvicorn server.

Set SESSION_BROKER_TEST_DATABASE_URL=postgresql://... to run against an external server instead of the
embedded one (its tables are truncated between tests; use a throwaway database).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.config import Settings, get_settings, load_settings
from app.db import asyncpg_dsn
from app.embedded import EmbeddedPostgres
from app.main import create_app
from app.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
ACME_KEY = "acme-key-0123456789abcdef"
GLOBEX_KEY = "globex-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef"
API_KEYS = f"acme={ACME_KEY},globex={GLOBEX_KEY}"
EXTERNAL_URL_ENV = "SESSION_BROKER_TEST_DATABASE_URL"


def auth(key: str = ACME_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session", autouse=True)
def _clean_environment() -> Iterator[None]:
    """Tests build their own settings; stray SESSION_BROKER_* variables must not leak in."""
    saved = {key: value for key, value in os.environ.items() if key.startswith("SESSION_BROKER_")}
    for key in saved:
        if key != EXTERNAL_URL_ENV:
            del os.environ[key]
    get_settings.cache_clear()
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres | None]:
    if os.environ.get(EXTERNAL_URL_ENV):
        yield None
        return
    # Not under pytest's 0700 tmp dirs: the embedded postgres runs as its own OS user and must reach it.
    directory = Path(tempfile.mkdtemp(prefix="sb-test-pg-"))
    directory.chmod(0o755)
    server = EmbeddedPostgres(directory)
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(embedded_server: EmbeddedPostgres | None) -> str:
    url = os.environ.get(EXTERNAL_URL_ENV) or embedded_server.url  # type: ignore[union-attr]
    upgrade(url)
    return url


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"api_keys": API_KEYS, "admin_api_keys": ADMIN_KEY, "log_format": "text"}
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
async def raw_db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection for arranging state and checking what the service wrote."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    await connection.execute(
        "TRUNCATE sessions, session_tombstones, session_counters, session_events, fleet_gauges, "
        "broker_state, gateway_request_totals"
    )
    yield connection
    await connection.close()


@asynccontextmanager
async def running_client(
    url: str, hot_paths: bool = True, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(**overrides), database_url=url, hot_paths=hot_paths)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://broker.test") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.fixture
async def client(database_url: str, raw_db: asyncpg.Connection) -> AsyncIterator[httpx.AsyncClient]:
    """The real app (default settings plus test keys) over ASGI, on a truncated database."""
    async with running_client(database_url) as client:
        yield client


@pytest.fixture
def client_with(database_url: str, raw_db: asyncpg.Connection) -> Callable[..., Any]:
    """`async with client_with(touch_granularity_seconds=0) as c:` for non-default settings."""
    return lambda **overrides: running_client(database_url, **overrides)


@dataclass
class LiveServer:
    base_url: str
    api_key: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(env_overrides: dict[str, str], log_path: Path, timeout: float = 60.0) -> LiveServer:
    """Run `session-broker serve` as a real process and wait until /readyz answers 200."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("SESSION_BROKER_")}
    env.update({"SESSION_BROKER_PORT": str(port), "SESSION_BROKER_LOG_FORMAT": "json", **env_overrides})
    with log_path.open("wb") as log_file:
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
            if httpx.get(base_url + "/readyz", timeout=1).status_code == 200:
                return LiveServer(base_url, ACME_KEY, process, log_path)
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server did not become ready:\n{log_path.read_text()}")


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def live_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real uvicorn process serving the app on the test database (tenant `acme`'s key in `.api_key`).

    It lives for the whole session next to every other test, so it must not purge: its loop (every
    15-45 s) would delete rows that purge tests expire on purpose and race their own purge runs."""
    log_path = tmp_path_factory.mktemp("live") / "server.log"
    server = start_server(
        {
            "SESSION_BROKER_DATABASE_URL": database_url,
            "SESSION_BROKER_API_KEYS": API_KEYS,
            "SESSION_BROKER_ADMIN_API_KEYS": ADMIN_KEY,
            "SESSION_BROKER_PURGE_ENABLED": "false",
        },
        log_path,
    )
    yield server
    stop_server(server)


async def eventually(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.1) -> Any:
    """Poll an async check until it returns a truthy value (for effects that are asynchronous by design,
    like PostgreSQL's cumulative statistics)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(interval)
