"""Fleet gauges: the chunked recount agrees with an exact count and reaches /metrics."""

from __future__ import annotations

import asyncio

from app import fleet_gauges
from app.sql import fleet as fleet_sql
from tests.helpers import auth, create, make_settings


async def test_fleet_gauges_recount_in_block_chunks_agrees_with_an_exact_count(raw_db, db) -> None:
    # 3,000 rows over two tenants and three kinds; a third of them expired (not yet purged).
    await raw_db.execute(
        """INSERT INTO sessions (tenant, id, kind, metadata, version, idle_timeout_seconds,
                                 max_lifetime_seconds, created_at, last_seen_at, expires_at, check_at)
           SELECT CASE WHEN n % 2 = 0 THEN 'acme' ELSE 'globex' END, 'id-' || n, 'kind-' || (n % 3),
                  '{}', 1, 60, 600, now() - interval '2 minutes', now() - interval '2 minutes',
                  now() + CASE WHEN n % 3 = 0 THEN -60 ELSE 60 END * interval '1 second',
                  now() + CASE WHEN n % 3 = 0 THEN -60 ELSE 60 END * interval '1 second'
             FROM generate_series(1, 3000) AS n"""
    )
    blocks = await raw_db.fetchval("SELECT pg_relation_size('sessions') / current_setting('block_size')::int")
    assert blocks > 10  # so one block per chunk really means many chunks
    # Each chunk must read only its own blocks (a TID range scan); a filtered scan of the whole table per
    # chunk would make the recount quadratic in the table's size.
    await raw_db.execute("ANALYZE sessions")
    sql, *values = fleet_sql.COUNT_SESSIONS_CHUNK.bind(start=(0, 0), stop=(2, 0))
    plan = await raw_db.fetch("EXPLAIN " + sql, *values)
    assert "Tid Range Scan" in "\n".join(row[0] for row in plan)
    settings = make_settings(stats_refresh_seconds=60)
    assert await fleet_gauges.refresh(db, settings, chunk_blocks=1)
    expected = {
        (row["tenant"], row["kind"]): row["live"]
        for row in await raw_db.fetch(
            "SELECT tenant, kind, count(*) AS live FROM sessions WHERE expires_at > now() GROUP BY 1, 2"
        )
    }
    stored = {
        (row["tenant"], row["kind"]): row["live"] for row in await raw_db.fetch("SELECT * FROM fleet_gauges")
    }
    assert stored == expected and sum(stored.values()) == 2000
    # The backlog is what the README says: expired rows not yet purged.
    backlog = await raw_db.fetchval(
        "SELECT value FROM broker_state WHERE tenant = '' AND key = 'purge_backlog'"
    )
    assert backlog == 1000
    # Claimed for this interval: a second replica (or a second call) does not count again.
    assert not await fleet_gauges.refresh(db, settings, chunk_blocks=1)


async def test_fleet_gauges_export_live_sessions(client_with, raw_db) -> None:
    async with client_with(stats_refresh_seconds=0.2) as client:
        await create(client, kind="basket")
        await create(client, kind="basket")

        async def exported() -> bool:
            text = (await client.get("/metrics")).text
            return 'session_broker_sessions_live{kind="basket",tenant="acme"} 2.0' in text

        for _ in range(50):
            if await exported():
                break
            await asyncio.sleep(0.1)
        assert await exported()


async def test_client_chosen_kinds_cannot_flood_the_live_gauge(client_with, raw_db) -> None:
    async with client_with(stats_refresh_seconds=0.2, metrics_top_kinds=5) as client:
        for n in range(40):
            await create(client, kind=f"flood-{n:02d}")
        await create(client, kind="flood-39")

        async def series() -> list[str]:
            text = (await client.get("/metrics")).text
            return [
                line
                for line in text.splitlines()
                if line.startswith("session_broker_sessions_live{") and 'tenant="acme"' in line
            ]

        # Until a recount that saw every session is exported. (`other` alone is no sign: a recount that ran
        # before the second flood-39 also sums to 35 there, with flood-04 in its place.)
        for _ in range(50):
            if 'session_broker_sessions_live{kind="flood-39",tenant="acme"} 2.0' in await series():
                break
            await asyncio.sleep(0.1)
        exported = await series()
        assert len(exported) == 6, exported  # five kinds by name, and `other`
        assert 'session_broker_sessions_live{kind="flood-39",tenant="acme"} 2.0' in exported
        assert 'session_broker_sessions_live{kind="other",tenant="acme"} 35.0' in exported
        # GET /v1/stats still counts every kind.
        assert len((await client.get("/v1/stats", headers=auth())).json()["by_kind"]) == 40
