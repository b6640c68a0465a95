"""READ_DATABASE_URL: list pages and stats from a real streaming standby, within the stated staleness
bound; back to the primary while the standby lags too far or is down (never a 503 for that); get and
touch always on the primary."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.helpers import ACME_KEY, auth, path, run_command, start_server, stop_server
from tests.replication import ReplicatedCluster

MAX_LAG = 2.0


async def listed(api: httpx.AsyncClient) -> set[str]:
    page = await api.get("/v1/sessions", params={"limit": 1000})
    assert page.status_code == 200, page.text
    return {item["id"] for item in page.json()["items"]}


@pytest.fixture
def cluster() -> Iterator[ReplicatedCluster]:
    """Asynchronous replication: with a synchronous standby, stopping it would stop the primary's
    commits too, and this test stops it."""
    with ReplicatedCluster(synchronous=False) as replicated:
        yield replicated


async def test_lists_and_stats_read_from_a_standby_within_the_staleness_bound(
    cluster: ReplicatedCluster, tmp_path: Path
) -> None:
    migrated = await asyncio.to_thread(
        run_command, "migrate", "--database-url", cluster.primary.url(), timeout=120
    )
    assert migrated.returncode == 0, migrated.stderr
    env = {
        "SESSION_BROKER_DATABASE_URL": cluster.primary.url(),
        "SESSION_BROKER_READ_DATABASE_URL": cluster.standby.url(),
        "SESSION_BROKER_READ_MAX_LAG_SECONDS": str(MAX_LAG),
        "SESSION_BROKER_API_KEYS": f"acme={ACME_KEY}",
        "SESSION_BROKER_PURGE_ENABLED": "false",
    }
    server = await asyncio.to_thread(start_server, env, tmp_path / "server.log")
    standby = await asyncpg.connect(cluster.standby.url())
    try:
        async with httpx.AsyncClient(base_url=server.base_url, headers=auth(), timeout=30) as api:
            first = (await api.post("/v1/sessions")).json()["id"]
            deadline = time.monotonic() + MAX_LAG + 2
            while first not in await listed(api):  # replicated and read back within the bound
                assert time.monotonic() < deadline, "the standby's answer stayed staler than the bound"
                await asyncio.sleep(0.05)

            # Freeze replay: the standby keeps receiving WAL but applies none of it. Reads of a new session
            # come from the standby (so it is missing) until the standby is measured too far behind; from
            # then on they come from the primary. Get and touch never wait for the standby.
            await standby.execute("SELECT pg_wal_replay_pause()")
            second = (await api.post("/v1/sessions")).json()["id"]
            assert (await api.get(path(second))).status_code == 200
            assert (await api.post(path(second) + "/touch")).status_code == 200
            created = time.monotonic()
            assert second not in await listed(api), "the list did not come from the standby"
            while second not in await listed(api):
                assert time.monotonic() - created < MAX_LAG + 3, "reads stayed on a standby past the bound"
                await asyncio.sleep(0.1)
            assert (await api.get("/v1/stats")).json()["live"] == 2

            # The standby down altogether: reads are served by the primary, not refused.
            cluster.standby.stop()
            third = (await api.post("/v1/sessions")).json()["id"]
            assert third in await listed(api)
            assert (await api.get("/v1/stats")).status_code == 200
    finally:
        with contextlib.suppress(Exception):  # the standby was stopped under it
            await standby.close()
        await asyncio.to_thread(stop_server, server)
