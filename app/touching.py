"""Touching sessions: the hot path. Concurrent touches share one statement per tenant (batching.py); a
touch whose row another transaction holds is retried alone, waiting for it (docs/design.md, "Row locks")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app import binding, metrics, rules
from app.analytics import RequestAnalytics
from app.batching import StatementBatcher
from app.config import Settings
from app.db import Database, within_deadline
from app.errors import SessionNotFound
from app.records import TouchOutcome
from app.repository import SessionRepository
from app.request_limits import RequestLimiter
from app.row_gate import RowGate
from app.schemas import TouchRequest

TouchKey = tuple[str, str, str | None]  # tenant, session id, principal binding


@dataclass(frozen=True, slots=True)
class Touched:
    id: str
    expires_at: Any


class Touches:
    """The touch operation of `SessionService` (app/service.py), and request analytics reported apart."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        analytics: RequestAnalytics,
        limiter: RequestLimiter,
        rows: RowGate,
    ) -> None:
        self.db = db
        self.settings = settings
        self.analytics = analytics
        self.limiter = limiter
        self.rows = rows
        # A session's touches share a group with its tenant's; the same session twice goes in two groups.
        self.batcher: StatementBatcher[TouchKey, TouchOutcome] = StatementBatcher(
            self._touch_batch, conflict=lambda key: key[:2], group=lambda key: key[0]
        )

    @within_deadline
    async def touch(
        self, tenant: str, session_id: str, principal: str | None, request: TouchRequest | None
    ) -> Touched:
        """Slide the idle expiry: one statement; writes only when it moves expiry by the granularity."""
        if request is not None:
            # Analytics live in memory (metrics); they never add a database write to touch.
            self.analytics.record(tenant, request.method, request.ok, request.duration_ms)
        if not rules.is_valid_session_id(session_id):
            metrics.count_touch(tenant, "not_found")
            raise SessionNotFound()
        key = (tenant, session_id, principal)
        outcome = await self.batcher.submit(key)
        if outcome.found and outcome.due and not outcome.written:
            # The group statement does not wait for a row another transaction holds: touch it alone.
            outcome = await self._touch_waiting(key)
        if not outcome.found:
            metrics.count_touch(tenant, "not_found")
            raise SessionNotFound(outcome.ended_reason)
        if rules.bound_elsewhere(outcome.principal, principal):
            raise binding.mismatch(self.settings, tenant, "touch")
        if outcome.due and not outcome.written:
            # It should have written but its row was gone: ended (e.g. purged at its expiry) meanwhile.
            metrics.count_touch(tenant, "not_found")
            raise SessionNotFound()
        if outcome.limits is not None:  # counted in memory, never a write (app/request_limits.py)
            self.limiter.admit(tenant, session_id, outcome.limits)
        metrics.count_touch(tenant, "written" if outcome.written else "throttled")
        return Touched(id=session_id, expires_at=outcome.expires_at)

    def record_requests(self, tenant: str, requests: list[TouchRequest]) -> int:
        """Request analytics reported in a batch (`POST /v1/analytics`): counted exactly as touch bodies."""
        for request in requests:
            self.analytics.record(tenant, request.method, request.ok, request.duration_ms)
        return len(requests)

    async def _touch_waiting(self, key: TouchKey) -> TouchOutcome:
        tenant, session_id, principal = key
        async with self.rows.hold((tenant, session_id)), self.db.connection("touch") as connection:
            return await SessionRepository(connection).touch(
                tenant,
                session_id,
                principal=principal,
                granularity_seconds=self.settings.touch_granularity_seconds,
                async_commit=not self.settings.touch_synchronous_commit,
                wait=True,
            )

    async def _touch_batch(self, keys: list[TouchKey]) -> list[TouchOutcome]:
        granularity = self.settings.touch_granularity_seconds
        async_commit = not self.settings.touch_synchronous_commit
        async with self.db.connection("touch") as connection:
            repo = SessionRepository(connection)
            if len(keys) == 1:
                tenant, session_id, principal = keys[0]
                outcome = await repo.touch(
                    tenant,
                    session_id,
                    principal=principal,
                    granularity_seconds=granularity,
                    async_commit=async_commit,
                )
                return [outcome]
            return await repo.touch_many(keys, granularity_seconds=granularity, async_commit=async_commit)
