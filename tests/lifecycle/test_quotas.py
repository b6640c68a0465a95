"""Quotas: reject or evict at a limit, overrides per tenant, exact under concurrency."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.helpers import (
    GLOBEX_KEY,
    age,
    assert_problem,
    auth,
    create,
    events_of,
    make_settings,
    path,
)


async def test_reject_policy_answers_429_naming_the_limit(client_with) -> None:
    async with client_with(max_sessions_per_principal=2) as client:
        for _ in range(2):
            await create(client, principal="alice")
        response = await client.post("/v1/sessions", json={"principal": "alice"}, headers=auth())
        problem = assert_problem(response, 429, "quota-exceeded")
        assert problem["scope"] == "principal" and problem["limit"] == 2
        assert int(response.headers["retry-after"]) > 0
        assert (
            await client.post("/v1/sessions", json={"principal": "bob"}, headers=auth())
        ).status_code == 201
        stats = (await client.get("/v1/stats", headers=auth())).json()
        assert stats["live"] == 3 and stats["limits"]["max_sessions_per_principal"] == 2


async def test_expired_sessions_do_not_count_against_a_quota(client_with, raw_db) -> None:
    async with client_with(max_sessions_per_client=1) as client:
        first = await create(client, client_id="claude", idle_timeout_seconds=60)
        await age(raw_db, first["id"], 61)
        assert (
            await client.post("/v1/sessions", json={"client_id": "claude"}, headers=auth())
        ).status_code == 201


async def test_evict_oldest_idle_ends_the_least_recently_seen(client_with, raw_db) -> None:
    async with client_with(max_sessions_per_tenant=3, quota_policy="evict_oldest_idle") as client:
        sessions = [await create(client) for _ in range(3)]
        await age(raw_db, sessions[1]["id"], 100)  # the least recently seen
        fourth = await client.post("/v1/sessions", headers=auth())
        assert fourth.status_code == 201
        body = assert_problem(
            await client.get(path(sessions[1]["id"]), headers=auth()), 404, "session-not-found"
        )
        assert body["reason"] == "evicted"
        assert [t for t, _ in await events_of(raw_db, sessions[1]["id"])][-1] == "session.ended"
        assert (await client.get("/v1/stats", headers=auth())).json()["live"] == 3
        metrics = (await client.get("/metrics")).text
        assert 'session_broker_quota_evictions_total{scope="tenant",tenant="acme"} 1.0' in metrics


async def test_tenant_overrides(client_with) -> None:
    overrides = json.dumps({"globex": {"max_sessions_per_tenant": 1}})
    async with client_with(tenant_quotas=overrides) as client:
        assert (await client.post("/v1/sessions", headers=auth(GLOBEX_KEY))).status_code == 201
        assert (await client.post("/v1/sessions", headers=auth(GLOBEX_KEY))).status_code == 429
        assert (await client.post("/v1/sessions", headers=auth())).status_code == 201  # acme: defaults


async def test_concurrent_creates_do_not_overshoot(client_with) -> None:
    async with client_with(max_sessions_per_principal=5, db_pool_max_size=30) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/sessions", json={"principal": "alice"}, headers=auth()) for _ in range(40))
        )
        assert sorted(response.status_code for response in responses) == [201] * 5 + [429] * 35
        listed = await client.get("/v1/sessions", params={"principal": "alice"}, headers=auth())
        assert len(listed.json()["items"]) == 5


@pytest.mark.parametrize(
    "value",
    ['{"acme": {"max_sessions_per_principl": 5}}', "[1]", "{not json", '{"acme": {"quota_policy": "drop"}}'],
)
def test_bad_tenant_quotas_fail_at_start(value: str) -> None:
    from app.config import ConfigurationError
    from app.quotas import Quotas

    with pytest.raises(ConfigurationError, match="SESSION_BROKER_TENANT_QUOTAS"):
        Quotas(make_settings(tenant_quotas=value))
