"""The broker behind a real PgBouncer in transaction pooling mode, as real processes (`serve`, `migrate`,
`purge`), with prepared statements off (SESSION_BROKER_DB_PREPARED_STATEMENTS=false).

The rest of the API and lifecycle suite runs through PgBouncer too (`pytest --pgbouncer`, see
conftest.py); this module covers what lives in the processes and in PgBouncer itself: the migration
command, the purge command, a live event stream, and PgBouncer's own outages (PAUSE, KILL).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.db import asyncpg_dsn
from tests.helpers import (
    ACME_KEY,
    ADMIN_KEY,
    LiveServer,
    auth,
    path,
    run_command,
    start_server,
    stop_server,
)
from tests.pgbouncer import PgBouncer

PREPARED_OFF = {"SESSION_BROKER_DB_PREPARED_STATEMENTS": "false"}


def server_env(url: str, **extra: str) -> dict[str, str]:
    return {
        "SESSION_BROKER_DATABASE_URL": url,
        "SESSION_BROKER_API_KEYS": f"acme={ACME_KEY}",
        "SESSION_BROKER_ADMIN_API_KEYS": ADMIN_KEY,
        **PREPARED_OFF,
        **extra,
    }


@pytest.fixture(scope="module")
def pooled_server(
    database_url: str, pgbouncer: PgBouncer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """`session-broker serve` through the shared PgBouncer (the schema is at head: `database_url`)."""
    env = server_env(
        pgbouncer.url(),
        SESSION_BROKER_PURGE_ENABLED="false",  # the purge command below does it
        SESSION_BROKER_TOMBSTONE_RETENTION_SECONDS="1",  # so the purge has real-time work
    )
    server = start_server(env, tmp_path_factory.mktemp("pooled") / "server.log")
    yield server
    stop_server(server)


async def test_migrate_runs_through_pgbouncer_on_an_empty_database(
    direct_database_url: str, pgbouncer: PgBouncer
) -> None:
    admin = await asyncpg.connect(asyncpg_dsn(direct_database_url))
    await admin.execute("DROP DATABASE IF EXISTS migrated_via_pgbouncer")
    await admin.execute("CREATE DATABASE migrated_via_pgbouncer")
    try:
        migrated = await asyncio.to_thread(
            run_command,
            "migrate",
            "--database-url",
            pgbouncer.url("migrated_via_pgbouncer"),
            env=PREPARED_OFF,
        )
        assert migrated.returncode == 0, migrated.stderr
        fresh = await asyncpg.connect(
            asyncpg_dsn(direct_database_url).replace("/postgres?", "/migrated_via_pgbouncer?")
        )
        try:
            tables = {r["tablename"] for r in await fresh.fetch("SELECT tablename FROM pg_tables")}
            head = await fresh.fetchval("SELECT version_num FROM alembic_version")
        finally:
            await fresh.close()
        assert {"sessions", "session_events", "broker_state", "gateway_request_totals"} <= tables
        assert migrated.stdout.strip().endswith(head)
        again = await asyncio.to_thread(  # idempotent: a second run (the next helm upgrade) is a no-op
            run_command,
            "migrate",
            "--database-url",
            pgbouncer.url("migrated_via_pgbouncer"),
            env=PREPARED_OFF,
        )
        assert again.returncode == 0, again.stderr
    finally:
        pgbouncer.admin("KILL migrated_via_pgbouncer")  # PgBouncer's idle server connection to it
        await admin.execute("DROP DATABASE migrated_via_pgbouncer WITH (FORCE)")
        await admin.close()


async def read_frames(base_url: str, count: int, last_event_id: str) -> list[dict[str, str]]:
    frames: list[dict[str, str]] = []
    headers = {**auth(), "Last-Event-ID": last_event_id}
    async with (
        httpx.AsyncClient(timeout=None) as client,
        client.stream("GET", base_url + "/v1/events", headers=headers) as response,
    ):
        assert response.status_code == 200
        frame: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line == "":
                if frame.get("event", "").startswith("session."):
                    frames.append(frame)
                    if len(frames) == count:
                        return frames
                frame = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                frame[name] = value
    return frames


async def test_a_served_api_works_through_pgbouncer_with_a_live_event_stream(
    pooled_server: LiveServer, raw_db
) -> None:
    base = pooled_server.base_url
    async with httpx.AsyncClient(base_url=base, headers=auth()) as api:
        opened = await api.post("/v1/sessions", json={"principal": "alice"})
        assert opened.status_code == 201
        # The stream is live: it is open before the events below are written.
        reader = asyncio.create_task(read_frames(base, 43, last_event_id="0"))
        await asyncio.sleep(0.5)
        many = await asyncio.gather(*(api.post("/v1/sessions", json={"kind": "k"}) for _ in range(40)))
        assert {response.status_code for response in many} == {201}  # grouped creates
        ids = [response.json()["id"] for response in many]
        touched = await asyncio.gather(*(api.post(path(session_id) + "/touch") for session_id in ids))
        assert {response.status_code for response in touched} == {200}  # grouped touches
        session_id = opened.json()["id"]
        patched = await api.patch(path(session_id), json={"metadata": {"a": 1}}, headers={"If-Match": '"1"'})
        assert patched.status_code == 200
        assert (await api.get(path(session_id))).json()["metadata"] == {"a": 1}
        assert len((await api.get("/v1/sessions", params={"kind": "k", "limit": 100})).json()["items"]) == 40
        assert (await api.get("/v1/stats")).json()["live"] == 41
        assert (await api.delete(path(ids[0]))).status_code == 204
        frames = await asyncio.wait_for(reader, 20)
    kinds = [frame["event"] for frame in frames]
    assert kinds[0] == "session.created" and kinds.count("session.created") == 41
    assert "session.updated" in kinds and kinds[-1] == "session.ended"
    positions = [int(frame["id"]) for frame in frames]
    assert positions == sorted(set(positions))
    assert json.loads(frames[-1]["data"])["session_id"] == ids[0]


async def test_the_purge_command_runs_through_pgbouncer(pooled_server: LiveServer, pgbouncer, raw_db) -> None:
    async with httpx.AsyncClient(base_url=pooled_server.base_url, headers=auth()) as api:
        ended = [(await api.post("/v1/sessions")).json()["id"] for _ in range(3)]
        for session_id in ended:
            assert (await api.delete(path(session_id))).status_code == 204
    await asyncio.sleep(1.2)  # their tombstones are past the 1 s retention now (real time)
    result = await asyncio.to_thread(
        run_command, "purge", "--database-url", pgbouncer.url(), env={**PREPARED_OFF}
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["deleted"]["tombstones"] >= 3 and summary["skipped"] is False
    assert not await raw_db.fetchval(
        "SELECT count(*) FROM session_tombstones WHERE id = ANY($1::text[])", ended
    )


@pytest.fixture
def private_pgbouncer(direct_database_url: str, database_url: str) -> Iterator[PgBouncer]:
    """A PgBouncer of this test's own, so pausing or killing it disturbs no other test."""
    bouncer = PgBouncer(direct_database_url)
    yield bouncer
    bouncer.stop()


OUTAGE_TIMEOUTS = {
    "SESSION_BROKER_DB_CONNECT_TIMEOUT_SECONDS": "1",
    "SESSION_BROKER_DB_ACQUIRE_TIMEOUT_SECONDS": "1",
    "SESSION_BROKER_DB_STATEMENT_TIMEOUT_SECONDS": "1",
    "SESSION_BROKER_RETRY_AFTER_SECONDS": "3",
}


@pytest.mark.parametrize("outage", ["PAUSE", "KILL"])
async def test_a_pgbouncer_outage_is_503_and_recovers_when_it_ends(
    private_pgbouncer: PgBouncer, tmp_path, outage: str
) -> None:
    env = server_env(private_pgbouncer.url(), SESSION_BROKER_PURGE_ENABLED="false", **OUTAGE_TIMEOUTS)
    server = await asyncio.to_thread(start_server, env, tmp_path / "server.log")
    try:
        async with httpx.AsyncClient(base_url=server.base_url, headers=auth(), timeout=30) as api:
            session_id = (await api.post("/v1/sessions")).json()["id"]
            await asyncio.to_thread(private_pgbouncer.admin, f"{outage} postgres")
            try:
                slowest = 0.0
                for method, url in [
                    ("POST", path(session_id) + "/touch"),
                    ("GET", path(session_id)),
                    ("POST", "/v1/sessions"),
                    ("GET", "/v1/sessions"),
                ]:
                    started = time.monotonic()
                    response = await api.request(method, url)
                    slowest = max(slowest, time.monotonic() - started)
                    assert response.status_code == 503, (method, url, response.text)
                    assert response.headers["retry-after"] == "3"
            finally:
                await asyncio.to_thread(private_pgbouncer.admin, "RESUME postgres")
            resumed = time.monotonic()
            deadline = resumed + 20
            while (got := await api.get(path(session_id))).status_code == 503:
                assert time.monotonic() < deadline, "did not recover after RESUME"
                await asyncio.sleep(0.1)
            assert got.status_code == 200
            assert (await api.post(path(session_id) + "/touch")).status_code == 200
            recovered = time.monotonic() - resumed
            print(f"\nPGBOUNCER {outage}: slowest 503 {slowest:.2f} s, served {recovered:.2f} s after RESUME")
    finally:
        await asyncio.to_thread(stop_server, server)


async def test_prepared_statements_left_on_behind_pgbouncer_answer_503_and_name_the_setting(
    private_pgbouncer: PgBouncer, raw_db: asyncpg.Connection, tmp_path: Path
) -> None:
    """PgBouncer 1.18 in transaction mode with the statement cache left on (a misconfiguration): under
    concurrency a statement prepared on one server connection is executed on another. That made ~76 % of
    creates answer 500; it must be 503 with Retry-After, and the log must say which setting to change."""
    env = server_env(
        private_pgbouncer.url(),
        SESSION_BROKER_PURGE_ENABLED="false",
        SESSION_BROKER_DB_PREPARED_STATEMENTS="true",
    )
    server = await asyncio.to_thread(start_server, env, tmp_path / "server.log")
    try:
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
        async with httpx.AsyncClient(
            base_url=server.base_url, headers=auth(), limits=limits, timeout=30
        ) as api:
            answers = []
            for _ in range(6):
                answers += await asyncio.gather(
                    *(api.post("/v1/sessions", json={"kind": "pooled"}) for _ in range(50))
                )
    finally:
        await asyncio.to_thread(stop_server, server)
    statuses = {answer.status_code for answer in answers}
    assert statuses <= {201, 503}, statuses
    unavailable = [answer for answer in answers if answer.status_code == 503]
    assert unavailable, "the misconfiguration never showed (no statement ran on another server connection)"
    assert all(answer.headers["retry-after"] for answer in unavailable)
    created = sum(1 for answer in answers if answer.status_code == 201)
    assert await raw_db.fetchval("SELECT count(*) FROM sessions WHERE kind = 'pooled'") == created
    advice = [
        line
        for line in server.log_text().splitlines()
        if "SESSION_BROKER_DB_PREPARED_STATEMENTS=false" in line
    ]
    assert len(advice) == 1, advice  # said once, not once per request
