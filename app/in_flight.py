"""In-flight marks: a replica marks a request in flight so idle expiry never ends its session meanwhile
(docs/design.md, "In-flight work"). The absolute lifetime still applies, and a mark lasts only its TTL
unless renewed, so a replica that dies cannot pin a session. No FastAPI here."""

from __future__ import annotations

from typing import Any

from app import binding, rules, work_metrics
from app.config import Settings
from app.db import Database, within_deadline
from app.errors import InFlightMarkNotFound, SessionNotFound, ValidationFailed
from app.records import Lookup
from app.repository import SessionRepository
from app.sql import in_flight as sql


class InFlight:
    """The in-flight operations for one tenant at a time."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def _check_ttl(self, ttl: int) -> None:
        if not 1 <= ttl <= self.settings.max_in_flight_ttl_seconds:
            raise ValidationFailed.one(
                "ttl_seconds", f"must be between 1 and {self.settings.max_in_flight_ttl_seconds} seconds"
            )

    @within_deadline
    async def begin(
        self,
        tenant: str,
        session_id: str,
        principal: str | None,
        *,
        ttl: int,
        method: str | None,
        holder: str | None,
    ) -> dict[str, Any]:
        self._check_ttl(ttl)
        if not rules.is_valid_session_id(session_id):
            raise SessionNotFound()
        async with self.db.connection("begin_in_flight") as connection:
            record = await connection.fetchrow(
                *sql.BEGIN_IN_FLIGHT.bind(
                    tenant=tenant,
                    id=session_id,
                    principal=principal,
                    method=method,
                    holder=holder,
                    ttl_seconds=ttl,
                )
            )
            if record is None:
                lookup = await SessionRepository(connection).get(tenant, session_id, principal=principal)
        if record is None:
            raise binding.not_changed(self.settings, tenant, "begin_in_flight", lookup, principal)
        work_metrics.count_in_flight(tenant, "begun")
        return {"session_id": session_id, **dict(record)}

    @within_deadline
    async def renew(
        self, tenant: str, session_id: str, principal: str | None, mark_id: str, ttl: int
    ) -> dict[str, Any]:
        self._check_ttl(ttl)
        if not rules.is_valid_session_id(session_id):
            raise SessionNotFound()
        async with self.db.connection("renew_in_flight") as connection:
            record = await connection.fetchrow(
                *sql.RENEW_IN_FLIGHT.bind(
                    tenant=tenant, id=session_id, principal=principal, mark_id=mark_id, ttl_seconds=ttl
                )
            )
            if record is None:
                lookup = await SessionRepository(connection).get(tenant, session_id, principal=principal)
        if record is None:
            raise self._why_not(tenant, "renew_in_flight", lookup, principal)
        return {"session_id": session_id, **dict(record)}

    @within_deadline
    async def end(self, tenant: str, session_id: str, principal: str | None, mark_id: str) -> dict[str, Any]:
        """End a mark; the session's idle timeout counts from now again (or from the latest other mark)."""
        if not rules.is_valid_session_id(session_id):
            raise SessionNotFound()
        async with self.db.connection("end_in_flight") as connection:
            async with connection.transaction():
                await connection.execute(*sql.LOCK_SESSION.bind(tenant=tenant, id=session_id))
                record = await connection.fetchrow(
                    *sql.END_IN_FLIGHT.bind(
                        tenant=tenant,
                        id=session_id,
                        principal=principal,
                        mark_id=mark_id,
                        warning_seconds=self.settings.expiry_warning_seconds,
                    )
                )
            if record is None:
                lookup = await SessionRepository(connection).get(tenant, session_id, principal=principal)
        if record is None:
            raise self._why_not(tenant, "end_in_flight", lookup, principal)
        work_metrics.count_in_flight(tenant, "ended" if record["live"] else "lost")
        return {
            "session_id": session_id,
            "held": record["live"],
            "session_expires_at": record["session_expires_at"],
        }

    def _why_not(self, tenant: str, operation: str, lookup: Lookup, principal: str | None) -> Exception:
        if lookup.session is None or rules.bound_elsewhere(lookup.session["principal"], principal):
            return binding.not_changed(self.settings, tenant, operation, lookup, principal)
        work_metrics.count_in_flight(tenant, "lost")
        return InFlightMarkNotFound(
            "No live in-flight mark of this session has this id (it ended or lapsed)."
        )
