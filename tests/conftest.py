"""Shared fixtures: a real PostgreSQL (embedded by default), the real ASGI app, a real uvicorn server.
Plain helpers (keys, request shorthands, the server launcher) live in `tests/helpers.py`.

Set BROKER_TEST_DATABASE_URL=postgresql://... to run against an external server instead of the
embedded one (its tables are truncated between tests; use a throwaway database).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.config import get_settings
from app.db import Database, asyncpg_dsn
from app.embedded import EmbeddedPostgres
from app.migrate import upgrade
from tests.helpers import (
    ADMIN_KEY,
    API_KEYS,
    LiveServer,
    make_settings,
    running_client,
    start_server,
    stop_server,
)

EXTERNAL_URL_ENV = "BROKER_TEST_DATABASE_URL"


@pytest.fixture(scope="session", autouse=True)
def _clean_environment() -> Iterator[None]:
    """Tests build their own settings; stray SESSION_BROKER_* variables must not leak in."""
    saved = {key: value for key, value in os.environ.items() if key.startswith("SESSION_BROKER_")}
    for key in saved:
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


@pytest.fixture
async def raw_db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection for arranging state and checking what the service wrote."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    await connection.execute(
        "TRUNCATE sessions, session_tombstones, session_counters, session_events, fleet_gauges, "
        "broker_state, gateway_request_totals, idempotency_keys, session_lifetime_counters, stats_snapshots"
    )
    yield connection
    await connection.close()


@pytest.fixture
async def client(database_url: str, raw_db: asyncpg.Connection) -> AsyncIterator[httpx.AsyncClient]:
    """The real app (default settings plus test keys) over ASGI, on a truncated database."""
    async with running_client(database_url) as client:
        yield client


@pytest.fixture
def client_with(database_url: str, raw_db: asyncpg.Connection) -> Callable[..., Any]:
    """`async with client_with(touch_granularity_seconds=0) as c:` for non-default settings."""
    return lambda **overrides: running_client(database_url, **overrides)


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


@pytest.fixture
async def db(database_url: str, raw_db: asyncpg.Connection) -> AsyncIterator[Database]:
    """A `Database` (the service's pool) on the truncated test database."""
    database = Database(make_settings(), database_url)
    await database.open()
    yield database
    await database.close()
