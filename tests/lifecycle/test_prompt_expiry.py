"""Prompt expiry, the way a fleet sees it: two real replicas (uvicorn processes) on one database with
PURGE_INTERVAL_SECONDS=1, sessions that really expire (1-2 s idle timeouts, real time), and a client of
the event stream. Nothing here moves a timestamp or any internal column.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from datetime import datetime

import asyncpg
import httpx
import pytest

from app.db import asyncpg_dsn
from tests.helpers import ADMIN_KEY, EventStream, LiveServer, metric_value, start_server, stop_server, ts

TENANT = "expiry"
KEY = "expiry-key-0123456789abcdef"
HEADERS = {"Authorization": f"Bearer {KEY}"}
INTERVAL = 1.0
BOUND = 5.0  # seconds from an expiry to its event reaching a stream client (README, "Lifecycle")
ENDED = f'session_broker_sessions_ended_total{{reason="expired_idle",tenant="{TENANT}"}}'


@pytest.fixture(scope="module")
def replicas(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LiveServer]]:
    env = {
        "SESSION_BROKER_DATABASE_URL": database_url,
        "SESSION_BROKER_API_KEYS": f"{TENANT}={KEY}",
        "SESSION_BROKER_ADMIN_API_KEYS": ADMIN_KEY,
        "SESSION_BROKER_PURGE_INTERVAL_SECONDS": str(INTERVAL),
    }
    directory = tmp_path_factory.mktemp("expiry")
    servers = [start_server(env, directory / f"replica-{n}.log") for n in ("a", "b")]
    yield servers
    for server in servers:
        if server.process.poll() is None:
            stop_server(server)


async def create_wave(servers: list[LiveServer], count: int) -> dict[str, datetime]:
    """`count` sessions with 1 or 2 s idle timeouts, spread over `servers`; their expiry by id."""
    expiries: dict[str, datetime] = {}
    limits = httpx.Limits(max_connections=16)
    clients = [httpx.AsyncClient(base_url=s.base_url, headers=HEADERS, limits=limits) for s in servers]
    try:

        async def one(n: int) -> None:
            client = clients[n % len(clients)]
            response = await client.post("/v1/sessions", json={"idle_timeout_seconds": 1 + n % 2})
            assert response.status_code == 201, response.text
            body = response.json()
            expiries[body["id"]] = ts(body["expires_at"])

        for start in range(0, count, 100):
            await asyncio.gather(*(one(n) for n in range(start, min(start + 100, count))))
    finally:
        for client in clients:
            await client.aclose()
    return expiries


async def ended_total(servers: list[LiveServer]) -> float:
    """expired_idle endings counted by these replicas' /metrics, summed (each counts what it purged)."""
    async with httpx.AsyncClient() as client:
        texts = [(await client.get(server.base_url + "/metrics")).text for server in servers]
    return sum(metric_value(text, ENDED) for text in texts)


async def check_wave(events: EventStream, expiries: dict[str, datetime], database_url: str) -> None:
    """Exactly one `session.ended` per session, with the real expiry as `ended_at`, within the bound of
    it at the client; and recorded in the database (tombstone, row gone) within 2 x the interval."""
    await events.wait_for(lambda: set(expiries) <= events.arrivals.keys(), timeout=BOUND + 10)
    late = []
    for session_id, expires_at in expiries.items():
        arrivals = events.of(session_id, "session.ended")
        assert len(arrivals) == 1, (session_id, arrivals)
        arrived, payload = arrivals[0]
        assert payload["data"]["reason"] == "expired_idle"
        assert ts(payload["data"]["ended_at"]) == expires_at  # the real expiry, not when it was noticed
        if arrived - expires_at.timestamp() > BOUND:
            late.append((session_id, arrived - expires_at.timestamp()))
    assert not late, f"{len(late)} expiries reached the client more than {BOUND} s late: {late[:5]}"
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        rows = await connection.fetch(
            """SELECT t.ended_at, t.forget_after - 86400 * interval '1 second' AS recorded_at
                 FROM session_tombstones AS t WHERE t.tenant = $1 AND t.id = ANY($2::text[])""",
            TENANT,
            list(expiries),
        )
        left = await connection.fetchval(
            "SELECT count(*) FROM sessions WHERE tenant = $1 AND id = ANY($2::text[])", TENANT, list(expiries)
        )
    finally:
        await connection.close()
    assert len(rows) == len(expiries) and left == 0
    delays = sorted((row["recorded_at"] - row["ended_at"]).total_seconds() for row in rows)
    assert delays[-1] <= 2 * INTERVAL, (
        f"recorded up to {delays[-1]:.2f} s after expiry (p50 {delays[len(delays) // 2]:.2f})"
    )


async def test_every_expiry_is_seen_once_and_promptly_by_a_fleet_and_after_a_replica_dies(
    replicas, database_url: str
) -> None:
    a, b = replicas
    before = await ended_total(replicas)
    async with EventStream(b, KEY, types={"session.ended"}) as events:
        first = await create_wave(replicas, 3000)
        await check_wave(events, first, database_url)
    # Counted once across the fleet: whichever replica purged a batch counted its sessions.
    assert await ended_total(replicas) - before == 3000

    os.kill(a.process.pid, signal.SIGKILL)  # dies mid-whatever: its batch transaction and lock go with it
    a.process.wait(timeout=10)
    before = await ended_total([b])
    async with EventStream(b, KEY, types={"session.ended"}) as events:
        second = await create_wave([b], 500)
        await check_wave(events, second, database_url)
    assert await ended_total([b]) - before == 500
    async with httpx.AsyncClient() as client:
        assert (await client.get(b.base_url + "/readyz")).status_code == 200
