"""The property that lets the schema be sharded by tenant (Citus, `tenant` as the distribution column;
docs/scaling.md): every primary key and unique index starts with `tenant`, and no statement outside the
admin and maintenance ones spans tenants.

Both are checked on the real thing: the keys in the catalog of a database migrated by the real
migrations, and the statements the service really sends (every query of a two-tenant workload through
the real app, captured with asyncpg's query logger on the service's own pool connections) with the
tenants named in their parameters.

`broker_state (key)` and `session_events (position)` broke the first until migration 0010; the grouped
statements batched several tenants into one statement until the batcher grouped by tenant.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import asyncpg
import pytest

from app import events, fleet_gauges, repository
from app.models import Base
from app.purge import purge_once
from app.sql import fleet as fleet_sql
from app.sql import in_flight as in_flight_sql
from app.sql import leases as leases_sql
from app.sql import pending as pending_sql
from app.sql import purge as purge_sql
from app.sql import read as read_sql
from tests.helpers import path, running_client

TABLES = sorted(Base.metadata.tables)


@pytest.mark.parametrize("table", TABLES)
async def test_every_primary_key_and_unique_index_starts_with_tenant(
    raw_db: asyncpg.Connection, table
) -> None:
    keys = await raw_db.fetch(
        """SELECT i.indexrelid::regclass::text AS name, i.indisprimary AS is_primary,
                  (SELECT attname FROM pg_attribute
                    WHERE attrelid = i.indrelid AND attnum = i.indkey[0]) AS first_column
             FROM pg_index AS i
            WHERE i.indrelid = $1::regclass AND (i.indisunique OR i.indisprimary)""",
        table,
    )
    assert any(key["is_primary"] for key in keys), f"{table} has no primary key"
    assert [key["name"] for key in keys if key["first_column"] != "tenant"] == []


async def test_those_are_all_the_tables(raw_db: asyncpg.Connection) -> None:
    rows = await raw_db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert {row["tablename"] for row in rows} - {"alembic_version"} == set(TABLES)


# Tables with a `tenant` column: distributed by it on Citus (or, for `fleet_gauges` and the fleet's rows of
# `broker_state`, small reference tables: docs/scaling.md).
TENANT_TABLES = sorted(name for name, table in Base.metadata.tables.items() if "tenant" in table.c)
# Statements that are fleet-wide by design: admin figures, the purge, the fleet-gauge recount.
ADMIN_AND_MAINTENANCE = {
    read_sql.ALL_LIVE_BY_KIND.sql: "admin stats",
    read_sql.ALL_COUNTER_TOTALS.sql: "admin stats",
    purge_sql.PURGE_SESSIONS.sql: "purge",
    purge_sql.PURGE_TOMBSTONES.sql: "purge",
    purge_sql.PURGE_IDEMPOTENCY_KEYS.sql: "purge",
    purge_sql.PURGE_EVENTS.sql: "purge",
    leases_sql.PURGE_LEASES.sql: "purge",
    in_flight_sql.PURGE_IN_FLIGHT.sql: "purge",
    pending_sql.PURGE_PENDING.sql: "purge",
    in_flight_sql.ALL_IN_FLIGHT_COUNTS.sql: "fleet gauges",
    pending_sql.ALL_PENDING_COUNTS.sql: "fleet gauges",
    fleet_sql.CLAIM_GAUGE_REFRESH.sql: "fleet gauges",
    fleet_sql.COUNT_SESSIONS_CHUNK.sql: "fleet gauges",
    fleet_sql.READ_PURGE_BACKLOG.sql: "fleet gauges",
    fleet_sql.STORE_GAUGES.sql: "fleet gauges",
    fleet_sql.READ_GAUGES.sql: "fleet gauges",
}
ALPHA, BETA = "alpha-tenant", "beta-tenant"
KEYS = {ALPHA: "alpha-key-0123456789abcdef", BETA: "beta-key-0123456789abcdef"}


def tables_of(query: str) -> set[str]:
    return {
        table for table in TENANT_TABLES if re.search(rf"\b(FROM|JOIN|INTO|UPDATE|USING)\s+{table}\b", query)
    }


def tenants_named(arguments: tuple[Any, ...]) -> set[str]:
    named: set[str] = set()
    for value in arguments:
        values = value if isinstance(value, (list, tuple)) else [value]
        named.update(v for v in values if isinstance(v, str) and v in KEYS)
    return named


async def two_tenant_workload(database_url: str) -> list[tuple[str, tuple[Any, ...]]]:
    """Every kind of call, for two tenants at once where the service could mix them; the queries sent."""
    sent: list[tuple[str, tuple[Any, ...]]] = []
    from app import db as db_module

    original_init = db_module._init_connection

    async def init_and_log(connection: asyncpg.Connection) -> None:
        await original_init(connection)
        connection.add_query_logger(lambda record: sent.append((record.query, tuple(record.args or ()))))

    db_module._init_connection = init_and_log  # type: ignore[assignment]
    try:
        settings: dict[str, Any] = {
            "api_keys": ",".join(f"{tenant}={key}" for tenant, key in KEYS.items()),
            "touch_granularity_seconds": 0,
            "tombstone_retention_seconds": 1,
            "tenant_quotas": '{"beta-tenant": {"max_sessions_per_principal": 2, '
            '"quota_policy": "evict_oldest_idle"}}',
            "max_sessions_per_principal": 3,
        }
        async with running_client(database_url, **settings) as client:
            app = client.app  # type: ignore[attr-defined]
            alpha = {"Authorization": f"Bearer {KEYS[ALPHA]}"}
            beta = {"Authorization": f"Bearer {KEYS[BETA]}"}
            both = [alpha, beta] * 15
            created = await asyncio.gather(*(client.post("/v1/sessions", headers=h) for h in both))
            ids = [(h, r.json()["id"]) for h, r in zip(both, created, strict=True)]
            await asyncio.gather(*(client.post(path(i) + "/touch", headers=h) for h, i in ids))
            await asyncio.gather(
                *(
                    client.post(path(i) + "/touch", json={"method": "tools/call", "ok": True}, headers=h)
                    for h, i in ids[:6]
                )
            )
            for headers in (alpha, beta):
                await client.put(path("registered"), json={"principal": "p"}, headers=headers)
                await client.get(path("registered"), headers=headers)
                await client.patch(path("registered"), json={"owner": "gw"}, headers=headers)
                await client.post(path("registered") + "/rotate", headers=headers)
                await client.get("/v1/sessions", params={"owner": "gw"}, headers=headers)
                await client.get("/v1/stats", headers=headers)
                for _ in range(4):  # past the per-principal limit: the exact, locked path (and eviction)
                    await client.post("/v1/sessions", json={"principal": "q"}, headers=headers)
                await client.delete("/v1/sessions", params={"principal": "q"}, headers=headers)
                await client.delete(path(ids[0][1] if headers is alpha else ids[1][1]), headers=headers)
            runtime = app.broker.runtime
            db = runtime.db
            for tenant in KEYS:  # the event stream: where it starts, then one read
                start, first = await events.starting_point(db, tenant, 0)

                async def gone() -> bool:
                    return True

                async for _ in events.stream(db, tenant, start, first, gone, asyncio.Event()):
                    pass
            await runtime.analytics.flush(db)
            admin_settings = app.broker.settings
            await fleet_gauges.refresh(db, admin_settings)
            await fleet_gauges.publish(db, admin_settings)
            await asyncio.sleep(1.1)
            await purge_once(db, admin_settings)
            async with db.connection() as connection:
                await repository.SessionRepository(connection).live_by_kind(None)
                await repository.SessionRepository(connection).counter_totals(None)
    finally:
        db_module._init_connection = original_init  # type: ignore[assignment]
    return sent


async def test_no_statement_outside_the_admin_ones_spans_tenants(database_url: str, raw_db) -> None:
    sent = await two_tenant_workload(database_url)
    assert len({query for query, _ in sent}) > 20  # the workload did reach the service's statements
    spanning: dict[str, set[str]] = {}
    for query, arguments in sent:
        if query in ADMIN_AND_MAINTENANCE or not tables_of(query):
            continue
        named = tenants_named(arguments)
        if len(named) != 1:
            spanning.setdefault(" ".join(query.split())[:160], set()).update(named or {"<none>"})
    assert spanning == {}, "\n".join(f"{tenants}: {query}" for query, tenants in spanning.items())
