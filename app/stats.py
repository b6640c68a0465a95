"""The figures behind `GET /v1/stats` (one tenant, counted on demand) and `GET /v1/admin/stats` (every
tenant): live sessions by kind, lifetime totals from the sharded counters, request analytics, limits, and,
with `?window_seconds=N`, the same over a recent window.

Window analytics (docs/design.md, "Window analytics") never scan anything for the window: totals are
monotonic counters, so a window's figures are the totals now minus a snapshot of them taken at its start.
The fleet recount stores such a snapshot per tenant every STATS_REFRESH_SECONDS (`app/fleet_gauges.py`);
the window starts at the last one taken at or before N seconds ago (`since`), and is exact from there.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from app.analytics import RequestAnalytics
from app.config import Settings
from app.db import Database, within_deadline
from app.quotas import Quotas
from app.read_replica import Reads
from app.repository import SessionRepository
from app.rules import END_REASONS
from app.work_stats import work_figures


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
    async def of_tenant(self, tenant: str, window_seconds: int | None = None) -> dict[str, Any]:
        reader = self.reads.database()  # a standby may serve these (read_replica.py)
        async with reader.connection("stats") as connection:
            repo = SessionRepository(connection)
            kinds = await repo.live_by_kind(tenant)
            work = await work_figures(connection, tenant)
            totals = {row["name"]: row["total"] for row in await repo.counter_totals(tenant)}
            if window_seconds is not None:
                lifetimes = await repo.lifetime_totals(tenant)
                bases = await repo.window_base(tenant, window_seconds)
        figures = _tenant_figures(kinds, totals)
        if window_seconds is not None:
            base = bases[0] if bases else None
            figures["window"] = _window(window_seconds, figures["live"], totals, lifetimes, base)
        return {
            "tenant": tenant,
            **figures,
            "requests": await self.analytics.summary(reader, tenant),
            "limits": self.limits(tenant),
            **work,
        }

    @within_deadline
    async def of_all_tenants(self, window_seconds: int | None = None) -> dict[str, Any]:
        """Admin: the same figures for every tenant that has sessions or history."""
        async with self.reads.database().connection("admin_stats") as connection:
            repo = SessionRepository(connection)
            kinds = await repo.live_by_kind(None)
            totals = await repo.counter_totals(None)
            if window_seconds is not None:
                lifetimes = await repo.lifetime_totals(None)
                bases = {row["tenant"]: row for row in await repo.window_base(None, window_seconds)}
        tenants = sorted({row["tenant"] for row in kinds} | {row["tenant"] for row in totals})
        entries = []
        for tenant in tenants:
            tenant_kinds = [row for row in kinds if row["tenant"] == tenant]
            tenant_totals = {row["name"]: row["total"] for row in totals if row["tenant"] == tenant}
            entry = {"tenant": tenant, **_tenant_figures(tenant_kinds, tenant_totals)}
            if window_seconds is not None:
                tenant_lifetimes = [row for row in lifetimes if row["tenant"] == tenant]
                entry["window"] = _window(
                    window_seconds, entry["live"], tenant_totals, tenant_lifetimes, bases.get(tenant)
                )
            entries.append(entry)
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
            "default_max_requests_per_session": quota.max_requests,
            "default_max_requests_per_minute": quota.max_requests_per_minute,
            "tombstone_retention_seconds": s.tombstone_retention_seconds,
            "event_retention_seconds": s.event_retention_seconds,
            "expiry_warning_seconds": s.expiry_warning_seconds,
            "expiry_notice_bound_seconds": 2 * s.purge_interval_seconds,
        }


def _tenant_figures(kinds: list[Any], totals: dict[str, int]) -> dict[str, Any]:
    """Live counts by kind and lifetime totals, from `live_by_kind` and `counter_totals` rows."""
    return {
        "live": sum(row["live"] for row in kinds),
        "active_last_5m": sum(row["active"] for row in kinds),
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


def _window(
    seconds: int,
    live_now: int,
    totals: dict[str, int],
    lifetimes: list[asyncpg.Record],
    base: asyncpg.Record | None,
) -> dict[str, Any]:
    """The window's figures: totals now minus the snapshot `base` (None: the tenant has none yet, so its
    whole history is younger than the last snapshot and counts from zero)."""
    counters = base["totals"]["counters"] if base is not None else {}
    base_lifetimes = base["totals"]["lifetimes"] if base is not None else {}
    buckets = []  # (bucket, sessions ended in the window, their summed lifetimes)
    for row in sorted(lifetimes, key=lambda row: row["bucket"]):
        ended_before, seconds_before = base_lifetimes.get(str(row["bucket"]), (0, 0.0))
        if row["ended"] > ended_before:
            buckets.append((row["bucket"], row["ended"] - ended_before, row["seconds"] - seconds_before))
    ended = sum(n for _, n, _ in buckets)
    return {
        "seconds": seconds,
        "since": base["taken_at"] if base is not None else None,
        "created": totals.get("created", 0) - counters.get("created", 0),
        "ended": {
            reason: totals.get(f"ended:{reason}", 0) - counters.get(f"ended:{reason}", 0)
            for reason in END_REASONS
        },
        "peak_live": max(live_now, base["peak_live"] or 0) if base is not None else live_now,
        "mean_lifetime_seconds": round(sum(s for _, _, s in buckets) / ended, 3) if ended else None,
        "p95_lifetime_seconds": _percentile(buckets, ended),
    }


def _percentile(buckets: list[tuple[int, int, float]], ended: int) -> float | None:
    """The mean lifetime in the bucket that holds the nearest-rank 95th percentile."""
    if not ended:
        return None
    rank = -(-ended * 95 // 100)  # ceil(0.95 n)
    seen = 0
    for _, n, total in buckets:
        seen += n
        if seen >= rank:
            return round(total / n, 3)
    return None  # pragma: no cover - the buckets add up to `ended`
