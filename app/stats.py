"""The figures behind `GET /v1/stats` (one tenant, counted on demand) and `GET /v1/admin/stats` (every
tenant): live sessions by kind, lifetime totals from the sharded counters, request analytics, limits."""

from __future__ import annotations

from typing import Any

from app.analytics import RequestAnalytics
from app.config import Settings
from app.db import Database, within_deadline
from app.quotas import Quotas
from app.read_replica import Reads
from app.repository import SessionRepository
from app.rules import END_REASONS


class Stats:
    """Reads for the stats endpoints; owns nothing but references to what it reads."""

    def __init__(
        self, db: Database, settings: Settings, quotas: Quotas, analytics: RequestAnalytics, reads: Reads
    ) -> None:
        self.db = db
        self.reads = reads
        self.settings = settings
        self.quotas = quotas
        self.analytics = analytics

    @within_deadline
    async def of_tenant(self, tenant: str) -> dict[str, Any]:
        reader = self.reads.database()  # a standby may serve these (read_replica.py)
        async with reader.connection("stats") as connection:
            repo = SessionRepository(connection)
            kinds = await repo.live_by_kind(tenant)
            totals = {row["name"]: row["total"] for row in await repo.counter_totals(tenant)}
        return {
            "tenant": tenant,
            **_tenant_figures(kinds, totals),
            "requests": await self.analytics.summary(reader, tenant),
            "limits": self.limits(tenant),
        }

    @within_deadline
    async def of_all_tenants(self) -> dict[str, Any]:
        """Admin: the same figures for every tenant that has sessions or history."""
        async with self.reads.database().connection("admin_stats") as connection:
            repo = SessionRepository(connection)
            kinds = await repo.live_by_kind(None)
            totals = await repo.counter_totals(None)
        tenants = sorted({row["tenant"] for row in kinds} | {row["tenant"] for row in totals})
        entries = []
        for tenant in tenants:
            tenant_kinds = [row for row in kinds if row["tenant"] == tenant]
            tenant_totals = {row["name"]: row["total"] for row in totals if row["tenant"] == tenant}
            entries.append({"tenant": tenant, **_tenant_figures(tenant_kinds, tenant_totals)})
        return {
            "live": sum(entry["live"] for entry in entries),
            "created_total": sum(entry["created_total"] for entry in entries),
            "tenants": entries,
        }

    def limits(self, tenant: str) -> dict[str, Any]:
        s = self.settings
        quota = self.quotas.for_tenant(tenant)
        return {
            "default_idle_timeout_seconds": s.default_idle_timeout_seconds,
            "min_idle_timeout_seconds": s.min_idle_timeout_seconds,
            "max_idle_timeout_seconds": s.max_idle_timeout_seconds,
            "default_max_lifetime_seconds": s.default_max_lifetime_seconds,
            "min_max_lifetime_seconds": s.min_max_lifetime_seconds,
            "max_max_lifetime_seconds": s.max_max_lifetime_seconds,
            "touch_granularity_seconds": s.touch_granularity_seconds,
            "max_metadata_bytes": s.max_metadata_bytes,
            "max_sessions_per_tenant": quota.limits.tenant,
            "max_sessions_per_principal": quota.limits.principal,
            "max_sessions_per_client": quota.limits.client,
            "quota_policy": quota.policy.value,
            "tombstone_retention_seconds": s.tombstone_retention_seconds,
            "event_retention_seconds": s.event_retention_seconds,
        }


def _tenant_figures(kinds: list[Any], totals: dict[str, int]) -> dict[str, Any]:
    """Live counts by kind and lifetime totals, from `live_by_kind` and `counter_totals` rows."""
    return {
        "live": sum(row["live"] for row in kinds),
        "by_kind": [
            {
                "kind": row["kind"],
                "live": row["live"],
                "oldest_created_at": row["oldest"],
                "newest_created_at": row["newest"],
            }
            for row in kinds
        ],
        "oldest_created_at": min((row["oldest"] for row in kinds), default=None),
        "newest_created_at": max((row["newest"] for row in kinds), default=None),
        "created_total": totals.get("created", 0),
        "ended_total": {reason: totals.get(f"ended:{reason}", 0) for reason in END_REASONS},
    }
