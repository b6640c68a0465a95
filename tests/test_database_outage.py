"""A database outage is 503 + Retry-After on every call (never 404/401/500), bounded in time, and the
service recovers by itself when the database returns."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from app.embedded import EmbeddedPostgres
from app.migrate import upgrade
from tests.helpers import assert_problem, auth, path, running_client

pytestmark = pytest.mark.outage
FAST_FAIL = {
    "db_connect_timeout_seconds": 1,
    "db_acquire_timeout_seconds": 1,
    "db_statement_timeout_seconds": 1,
    "retry_after_seconds": 3,
}


@pytest.fixture
def own_database() -> Iterator[EmbeddedPostgres]:
    """A database server of this test's own, so stopping it disturbs no other test."""
    directory = Path(tempfile.mkdtemp(prefix="sb-outage-"))
    directory.chmod(0o755)
    server = EmbeddedPostgres(directory)
    upgrade(server.url)
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


def calls(session_id: str) -> list[tuple[str, str, dict]]:
    return [
        ("GET", path(session_id), {}),
        ("POST", path(session_id) + "/touch", {}),
        ("PATCH", path(session_id), {"json": {"owner": "gw"}}),
        ("DELETE", path(session_id), {}),
        ("PUT", path("registered-during-outage"), {}),
        ("POST", "/v1/sessions", {"json": {}}),
        ("GET", "/v1/sessions", {}),
        ("GET", "/v1/stats", {}),
    ]


async def assert_all_unavailable(client: httpx.AsyncClient, session_id: str, budget_seconds: float) -> None:
    for method, url, kwargs in calls(session_id):
        started = time.monotonic()
        response = await client.request(method, url, headers=auth(), **kwargs)
        elapsed = time.monotonic() - started
        assert_problem(response, 503, "database-unavailable")
        assert response.headers["retry-after"] == "3"
        assert elapsed < budget_seconds, f"{method} {url} took {elapsed:.1f}s"
    ready = await client.get("/readyz")
    assert ready.status_code == 503 and ready.headers["retry-after"] == "3"
    assert (await client.get("/healthz")).status_code == 200  # liveness never depends on the database


async def wait_until_served(client: httpx.AsyncClient, url: str, timeout: float = 20) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(url, headers=auth())
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.2)


async def test_stopped_database_is_503_then_recovers(own_database: EmbeddedPostgres) -> None:
    async with running_client(own_database.url, **FAST_FAIL) as client:
        created = await client.post("/v1/sessions", json={"metadata": {"survives": True}}, headers=auth())
        session_id = created.json()["id"]

        own_database.server.stop()
        await assert_all_unavailable(client, session_id, budget_seconds=4)

        own_database.server.ensure_postgres_running()
        recovered = await wait_until_served(client, path(session_id))
        assert recovered.status_code == 200
        assert recovered.json()["metadata"] == {"survives": True}
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.post(path(session_id) + "/touch", headers=auth())).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert "session_broker_unavailable_responses_total" in metrics


def postgres_processes(server: EmbeddedPostgres) -> list[psutil.Process]:
    postmaster = psutil.Process(server.server.get_pid())
    return [postmaster, *postmaster.children(recursive=True)]


async def test_a_hung_database_is_503_within_the_timeouts(own_database: EmbeddedPostgres) -> None:
    """A server that accepts nothing and answers nothing (frozen, or a network black hole)."""
    async with running_client(own_database.url, **FAST_FAIL) as client:
        created = await client.post("/v1/sessions", headers=auth())
        session_id = created.json()["id"]
        frozen = postgres_processes(own_database)
        for process in frozen:
            os.kill(process.pid, signal.SIGSTOP)
        try:
            # acquire/connect/statement timeouts are 1 s each: every call must answer well within a few.
            await assert_all_unavailable(client, session_id, budget_seconds=4)
        finally:
            for process in frozen:
                os.kill(process.pid, signal.SIGCONT)
        recovered = await wait_until_served(client, path(session_id))
        assert recovered.status_code == 200
