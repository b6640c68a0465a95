"""Stream leases: acquire, renew, release (docs/design.md, "Leases").

A lease is what a replica holds while it serves a session's live stream. Its holder renews it; one that
stops (it died, or lost its network) loses it when its TTL passes on the database clock, and the next
acquirer takes the slot at once, with a larger fencing token. No FastAPI here.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from app import binding, rules, work_metrics
from app.config import Settings
from app.db import Database, within_deadline
from app.errors import LeaseLost, LeasesFull, SessionNotFound, ValidationFailed
from app.repository import SessionRepository
from app.sql import leases as sql

LEASE_FIELDS = (
    "lease_id",
    "holder",
    "fencing_token",
    "ttl_seconds",
    "acquired_at",
    "renewed_at",
    "expires_at",
)
# A second pass takes another free slot when a racing acquirer wrote the first one it saw.
ATTEMPTS = 2


def check_ttl(settings: Settings, ttl: int | None, field: str = "ttl_seconds") -> None:
    if ttl is not None and not 1 <= ttl <= settings.max_lease_ttl_seconds:
        raise ValidationFailed.one(field, f"must be between 1 and {settings.max_lease_ttl_seconds} seconds")


class Leases:
    """The lease operations for one tenant at a time."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    @within_deadline
    async def acquire(
        self, tenant: str, session_id: str, principal: str | None, holder: str, ttl: int
    ) -> dict[str, Any]:
        check_ttl(self.settings, ttl)
        if not rules.is_valid_session_id(session_id):
            raise SessionNotFound()
        async with self.db.connection("acquire_lease") as connection:
            for _ in range(ATTEMPTS):
                record = await connection.fetchrow(
                    *sql.ACQUIRE_LEASE.bind(
                        tenant=tenant, id=session_id, principal=principal, holder=holder, ttl_seconds=ttl
                    )
                )
                assert record is not None  # always one row
                if not record["found"] or record["lease_id"] is not None or not record["raced"]:
                    break
            if not record["found"]:
                lookup = await SessionRepository(connection).get(tenant, session_id, principal=principal)
        if not record["found"]:
            raise binding.not_changed(self.settings, tenant, "acquire_lease", lookup, principal)
        if record["lease_id"] is None:
            work_metrics.count_lease(tenant, "refused")
            raise LeasesFull(record["max_leases"], _retry_after(record["busy_until"], record["at"]))
        work_metrics.count_lease(tenant, "acquired")
        return {"session_id": session_id, **{name: record[name] for name in LEASE_FIELDS}}

    @within_deadline
    async def renew(
        self, tenant: str, session_id: str, principal: str | None, lease_id: str, ttl: int | None
    ) -> dict[str, Any]:
        check_ttl(self.settings, ttl)
        if not rules.is_valid_session_id(session_id):
            raise SessionNotFound()
        async with self.db.connection("renew_lease") as connection:
            record = await connection.fetchrow(
                *sql.RENEW_LEASE.bind(
                    tenant=tenant, id=session_id, principal=principal, lease_id=lease_id, ttl_seconds=ttl
                )
            )
            if record is None:
                lookup = await SessionRepository(connection).get(tenant, session_id, principal=principal)
        if record is None:
            raise self._why_not(tenant, "renew_lease", lookup, principal)
        work_metrics.count_lease(tenant, "renewed")
        return {"session_id": session_id, **{name: record[name] for name in LEASE_FIELDS}}

    @within_deadline
    async def release(self, tenant: str, session_id: str, principal: str | None, lease_id: str) -> None:
        if not rules.is_valid_session_id(session_id):
            raise SessionNotFound()
        async with self.db.connection("release_lease") as connection:
            record = await connection.fetchrow(
                *sql.RELEASE_LEASE.bind(tenant=tenant, id=session_id, principal=principal, lease_id=lease_id)
            )
            if record is None:
                lookup = await SessionRepository(connection).get(tenant, session_id, principal=principal)
        if record is None:
            raise self._why_not(tenant, "release_lease", lookup, principal)
        work_metrics.count_lease(tenant, "released")

    def _why_not(self, tenant: str, operation: str, lookup: Any, principal: str | None) -> Exception:
        """A lease operation that found nothing: no such session for this caller (404), else the lease is
        gone (409 `lease-lost`)."""
        if lookup.session is None or rules.bound_elsewhere(lookup.session["principal"], principal):
            return binding.not_changed(self.settings, tenant, operation, lookup, principal)
        work_metrics.count_lease(tenant, "lost")
        return LeaseLost()


def _retry_after(busy_until: datetime | None, now: datetime) -> int:
    """Whole seconds until the earliest live lease expires (1 when unknown: a racing acquirer won)."""
    if busy_until is None:
        return 1
    return max(1, math.ceil((busy_until - now).total_seconds()))
