"""The admin surface: figures across tenants and an on-demand purge, for admin keys only."""

from __future__ import annotations

import asyncio

import httpx

from tests.helpers import (
    ADMIN_KEY,
    GLOBEX_KEY,
    assert_problem,
    auth,
    create,
)


async def test_admin_stats_cross_tenants_and_only_for_admins(client: httpx.AsyncClient) -> None:
    await create(client)
    await client.post("/v1/sessions", headers=auth(GLOBEX_KEY))
    await client.post("/v1/sessions", headers=auth(GLOBEX_KEY))
    stats = await client.get("/v1/admin/stats", headers=auth(ADMIN_KEY))
    assert stats.status_code == 200
    by_tenant = {entry["tenant"]: entry["live"] for entry in stats.json()["tenants"]}
    assert by_tenant == {"acme": 1, "globex": 2} and stats.json()["live"] == 3
    assert_problem(await client.get("/v1/admin/stats", headers=auth()), 403, "admin-required")
    assert_problem(await client.get("/v1/admin/stats"), 401, "unauthorized")
    assert_problem(await client.post("/v1/admin/purge", headers=auth()), 403, "admin-required")


async def test_admin_can_trigger_a_purge(client: httpx.AsyncClient, raw_db) -> None:
    await create(client, idle_timeout_seconds=1)
    await asyncio.sleep(1.1)  # it really expires
    response = await client.post("/v1/admin/purge", headers=auth(ADMIN_KEY))
    assert response.status_code == 200
    assert response.json()["deleted"]["sessions"] == 1 and response.json()["skipped"] is False
