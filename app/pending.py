"""Pending server-to-client requests (elicitation, sampling, roots) across replicas (docs/design.md,
"Pending requests"). The replica that sends one records it; the client's reply may reach any replica,
which hands it over here; the holder waits for it (`wait`) and resumes the tool call. No FastAPI here.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from app import binding, rules, work_metrics
from app.config import Settings
from app.db import Database, within_deadline
from app.errors import (
    PendingRequestEnded,
    PendingRequestExists,
    PendingRequestNotFound,
    SessionNotFound,
    ValidationFailed,
)
from app.records import Lookup
from app.repository import SessionRepository
from app.sql import pending as sql

PENDING_FIELDS = ("pending_id", "method", "holder", "created_at", "deadline")
# How often a waiting holder's GET looks again (one primary-key read each).
WAIT_POLL_SECONDS = 0.05
MAX_WAIT_SECONDS = 30


def request_key(request_id: Any) -> str:
    """The JSON-RPC id as the JSON text it is stored under (1 and "1" are different ids)."""
    return orjson.dumps(request_id).decode()


def _ended_record(record: Any) -> dict[str, Any]:
    return {
        "pending_id": record["pending_id"],
        "request_id": orjson.loads(record["request_key"]),
        "method": record["method"],
        "holder": record["holder"],
        "state": record["state"],
        "created_at": record["created_at"],
        "deadline": record["deadline"],
        "ended_at": record["ended_at"],
    }


class PendingRequests:
    """The pending-request operations for one tenant at a time."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    @within_deadline
    async def record(
        self,
        tenant: str,
        session_id: str,
        principal: str | None,
        *,
        request_id: Any,
        method: str,
        holder: str,
        timeout_seconds: int,
    ) -> dict[str, Any]:
        if not 1 <= timeout_seconds <= self.settings.max_pending_timeout_seconds:
            raise ValidationFailed.one(
                "timeout_seconds",
                f"must be between 1 and {self.settings.max_pending_timeout_seconds} seconds",
            )
        if not rules.is_valid_session_id(session_id):
            raise SessionNotFound()
        async with self.db.connection("record_pending") as connection:
            record = await connection.fetchrow(
                *sql.RECORD_PENDING.bind(
                    tenant=tenant,
                    id=session_id,
                    principal=principal,
                    request_key=request_key(request_id),
                    method=method,
                    holder=holder,
                    timeout_seconds=timeout_seconds,
                )
            )
            assert record is not None  # always one row
            if not record["found"]:
                lookup = await SessionRepository(connection).get(tenant, session_id, principal=principal)
        if not record["found"]:
            raise binding.not_changed(self.settings, tenant, "record_pending", lookup, principal)
        if record["pending_id"] is None:
            raise PendingRequestExists(
                "A request of this session with this JSON-RPC id is still pending; use another id."
            )
        work_metrics.count_pending(tenant, method)
        return {
            "request_id": request_id,
            "state": "pending",
            **{name: record[name] for name in PENDING_FIELDS},
        }

    @within_deadline
    async def answer(
        self, tenant: str, session_id: str, principal: str | None, response: dict[str, Any]
    ) -> dict[str, Any]:
        """Hand a client's JSON-RPC response to the request it answers. Refused without effect (and
        counted) when the session has no such request (404) or it has ended (409)."""
        if not rules.is_valid_session_id(session_id):
            raise SessionNotFound()
        async with self.db.connection("answer_pending") as connection:
            record = await connection.fetchrow(
                *sql.ANSWER_PENDING.bind(
                    tenant=tenant,
                    id=session_id,
                    principal=principal,
                    request_key=request_key(response["id"]),
                    response=response,
                    retention_seconds=self.settings.pending_retention_seconds,
                )
            )
            assert record is not None
            if not record["found"]:
                lookup = await SessionRepository(connection).get(tenant, session_id, principal=principal)
        if not record["found"]:
            work_metrics.count_reply_refused(tenant, "unknown")
            raise binding.not_changed(self.settings, tenant, "answer_pending", lookup, principal)
        if record["pending_id"] is None:
            if record["prior_state"] is None:
                work_metrics.count_reply_refused(tenant, "unknown")
                raise PendingRequestNotFound("This session has no pending request with this JSON-RPC id.")
            work_metrics.count_reply_refused(tenant, "ended")
            raise PendingRequestEnded(record["prior_state"])
        work_metrics.count_pending_ended(tenant, record["method"], "answered")
        return _ended_record(record)

    @within_deadline
    async def cancel(
        self, tenant: str, session_id: str, principal: str | None, pending_id: str
    ) -> dict[str, Any]:
        if not rules.is_valid_session_id(session_id):
            raise SessionNotFound()
        async with self.db.connection("cancel_pending") as connection:
            record = await connection.fetchrow(
                *sql.CANCEL_PENDING.bind(
                    tenant=tenant,
                    id=session_id,
                    principal=principal,
                    pending_id=pending_id,
                    retention_seconds=self.settings.pending_retention_seconds,
                )
            )
            assert record is not None
            if not record["found"]:
                lookup = await SessionRepository(connection).get(tenant, session_id, principal=principal)
        if not record["found"]:
            raise binding.not_changed(self.settings, tenant, "cancel_pending", lookup, principal)
        if record["pending_id"] is None:
            if record["prior_state"] is None:
                raise PendingRequestNotFound("This session has no pending request with this id.")
            raise PendingRequestEnded(record["prior_state"])
        work_metrics.count_pending_ended(tenant, record["method"], "cancelled")
        return _ended_record(record)

    async def wait(
        self, tenant: str, session_id: str, principal: str | None, pending_id: str, wait_seconds: float
    ) -> dict[str, Any]:
        """The request, once it has ended or after `wait_seconds` (0: at once). Each look is its own
        deadline-bounded read, so a long wait never holds a connection."""
        if not 0 <= wait_seconds <= MAX_WAIT_SECONDS:
            raise ValidationFailed.one("wait_seconds", f"must be between 0 and {MAX_WAIT_SECONDS}")
        until = time.monotonic() + wait_seconds
        while True:
            current = await self._get(tenant, session_id, principal, pending_id)
            if current["state"] != "pending" or time.monotonic() >= until:
                return current
            await asyncio.sleep(min(WAIT_POLL_SECONDS, max(0.0, until - time.monotonic())))

    @within_deadline
    async def _get(
        self, tenant: str, session_id: str, principal: str | None, pending_id: str
    ) -> dict[str, Any]:
        if not rules.is_valid_session_id(session_id):
            raise SessionNotFound()
        async with self.db.connection("get_pending") as connection:
            record = await connection.fetchrow(
                *sql.GET_PENDING.bind(
                    tenant=tenant, id=session_id, principal=principal, pending_id=pending_id
                )
            )
            assert record is not None
            if not record["found"]:
                lookup: Lookup = await SessionRepository(connection).get(
                    tenant, session_id, principal=principal
                )
        if not record["found"]:
            raise binding.not_changed(self.settings, tenant, "get_pending", lookup, principal)
        if record["pending_id"] is None:
            raise PendingRequestNotFound("This session has no pending request with this id.")
        return {**_ended_record(record), "ended_at": record["ended_when"], "response": record["response"]}
