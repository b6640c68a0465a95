"""Shared fixtures: a real PostgreSQL (embedded by default), the real ASGI app, a real uvicorn server.
Plain helpers (keys, request shorthands, the server launcher) live in `tests/helpers.py`.

Set BROKER_TEST_DATABASE_URL=postgresql://... to run against an external server instead of the
embedded one (its tables are truncated between tests; use a throwaway database).

`pytest --pgbouncer` runs the modules in PGBOUNCER_MODULES a second time with the service reaching the
database through a real PgBouncer in transaction pooling mode (prepared statements off): `database_url`
is then PgBouncer's URL, migrated through it by `session-broker migrate`, while `raw_db` and
`direct_database_url` (the tests' own view of the data) still go straight to PostgreSQL. `make test`
runs both.
"""

from __future__ import annotations

import asyncio
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
    PGBOUNCER_ENV,
    LiveServer,
    make_settings,
    run_command,
    running_client,
    start_server,
    stop_server,
    via_pgbouncer,
)
from tests.pgbouncer import PgBouncer
from tests.replication import ReplicatedCluster

EXTERNAL_URL_ENV = "BROKER_TEST_DATABASE_URL"
# The slice that runs again through PgBouncer: between them they send every statement the service has
# (single and grouped create and touch, register, get, patch, delete, list, stats, revoke, rotate,
# quotas near their limit with transaction-scoped advisory locks, the purge loop and command, fleet
# gauges, the analytics flush, live event streams, the migration), in-process and as real processes.
PGBOUNCER_MODULES = (
    "tests/api",
    "tests/lifecycle",
    "tests/test_touch_batch.py",
    "tests/test_patch_and_list.py",
    "tests/test_expiry_and_binding.py",
    "tests/test_tenancy_and_auth.py",
    "tests/test_http_edge.py",
    "tests/test_row_lock_isolation.py",
    "tests/test_fleet.py",
    "tests/test_pgbouncer.py",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--pgbouncer",
        action="store_true",
        default=False,
        help="serve the test database through a real PgBouncer (transaction pooling, prepared statements "
        "off) and run the modules of PGBOUNCER_MODULES only",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--pgbouncer"):
        os.environ[PGBOUNCER_ENV] = "1"  # read by tests/helpers.py and by the server processes it starts


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--pgbouncer"):
        return
    root = Path(str(config.rootpath))
    keep = [root / module for module in PGBOUNCER_MODULES]

    def through_pgbouncer(item: pytest.Item) -> bool:
        # The FastAPI-route twin of a both-paths test sends the same statements as its hot-path run.
        callspec = getattr(item, "callspec", None)
        same_statements = callspec is not None and callspec.params.get("hot_paths") is False
        path = Path(str(item.path))
        return any(path == module or module in path.parents for module in keep) and not same_statements

    selected = [item for item in items if through_pgbouncer(item)]
    deselected = [item for item in items if not through_pgbouncer(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


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
def direct_database_url(embedded_server: EmbeddedPostgres | None) -> str:
    """The test database itself (never through a pooler): for arranging state and checking results."""
    return os.environ.get(EXTERNAL_URL_ENV) or embedded_server.url  # type: ignore[union-attr]


@pytest.fixture(scope="session")
def pgbouncer(direct_database_url: str) -> Iterator[PgBouncer]:
    """A real PgBouncer in transaction pooling mode in front of the test database."""
    bouncer = PgBouncer(direct_database_url)
    yield bouncer
    bouncer.stop()


@pytest.fixture
def replicated_cluster() -> Iterator[ReplicatedCluster]:
    """A fresh primary with a synchronous streaming standby (TCP on 127.0.0.1), stopped afterwards."""
    with ReplicatedCluster(synchronous=True) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest, direct_database_url: str) -> str:
    """The URL the service under test uses, with the schema at head."""
    if not via_pgbouncer():
        upgrade(direct_database_url)
        return direct_database_url
    url = request.getfixturevalue("pgbouncer").url()
    migrated = run_command("migrate", "--database-url", url)
    assert migrated.returncode == 0, migrated.stderr
    return url


@pytest.fixture
async def raw_db(database_url: str, direct_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection for arranging state and checking what the service wrote."""
    connection = await asyncpg.connect(asyncpg_dsn(direct_database_url))
    await connection.execute(
        "TRUNCATE sessions, session_tombstones, session_counters, session_events, fleet_gauges, "
        "broker_state, gateway_request_totals, idempotency_keys, session_lifetime_counters, stats_snapshots, "
        "session_leases, session_in_flight, session_pending_requests"
    )
    yield connection
    await connection.close()


@pytest.fixture
async def client(database_url: str, raw_db: asyncpg.Connection) -> AsyncIterator[httpx.AsyncClient]:
    """The real app (default settings plus test keys) over ASGI, on a truncated database."""
    async with running_client(database_url) as client:
        yield client


@pytest.fixture
def release_backends(request: pytest.FixtureRequest, raw_db: asyncpg.Connection) -> Callable[[], Any]:
    """`await release_backends()` once an app has stopped: its database backends have exited (a backend
    flushes its pending statistics when it exits). Stopping the app closes its pool, which does that
    directly; through PgBouncer the server connections outlive their clients, so PgBouncer is told to
    close them (RECONNECT) and the backends are waited for."""

    async def release() -> None:
        if not via_pgbouncer():
            return
        request.getfixturevalue("pgbouncer").admin("RECONNECT")
        for _ in range(100):
            if not await raw_db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'session-broker'"
            ):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("PgBouncer kept its server connections open")

    return release


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
