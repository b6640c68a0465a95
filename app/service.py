"""`SessionService`: the API's operations, orchestrated over the repository.

The rules are pure functions in `app/rules.py`, the quota protocol is `app/quotas.py`, the stats figures
are `app/stats.py`; creates are `app/creating.py` and touches `app/touching.py` (each with its group
statement). This module decides the order of things and which problem answers each outcome. No FastAPI
here; errors are `app.errors` types that carry their HTTP status.
"""

from __future__ import annotations

import builtins
from typing import Any

from app import binding, idempotency, metrics, rules
from app.admission import Admission
from app.analytics import RequestAnalytics
from app.config import Settings
from app.creating import Created, Creates
from app.db import Database, within_deadline
from app.errors import PreconditionFailed, SessionNotFound, ValidationFailed
from app.in_flight import InFlight
from app.leases import Leases
from app.pending import PendingRequests
from app.quotas import Quotas
from app.read_replica import Reads
from app.records import IdempotencyClaim
from app.repository import SessionRepository
from app.request_limits import RequestLimiter
from app.row_gate import RowGate
from app.schemas import SessionPatch
from app.touching import Touches

DEFAULT_PAGE_SIZE = 100
REVOKE_BATCH = 1000


class SessionService:
    """Operations of the API for one tenant at a time. Stateless apart from its collaborators."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        quotas: Quotas,
        analytics: RequestAnalytics,
        limiter: RequestLimiter,
        reads: Reads,
    ) -> None:
        self.db = db
        self.reads = reads
        self.settings = settings
        self.quotas = quotas
        self.analytics = analytics
        self.limiter = limiter
        # One waiter per locked row in this process (row_gate.py): single-row writes and touch retries.
        self.rows = RowGate()
        self.creates = Creates(db, settings, quotas, self.rows)
        self.touches = Touches(db, settings, analytics, limiter, self.rows)
        # Work across replicas: stream leases (leases.py), in-flight marks (in_flight.py), pending
        # server-to-client requests (pending.py).
        self.leases = Leases(db, settings)
        self.in_flight = InFlight(db, settings)
        self.pending = PendingRequests(db, settings)
        # Work across replicas: stream leases (leases.py).
        self.leases = Leases(db, settings)
        # The operations of the hot paths live in their own modules; these are the service's names for them.
        self.create = self.creates.create
        self.touch = self.touches.touch
        self.record_requests = self.touches.record_requests
        # List pages can be megabytes each: a few at a time per process, fewer per tenant (admission.py).
        self.heavy_reads = Admission(
            total=settings.list_concurrent_pages, per_tenant=settings.list_concurrent_pages_per_tenant
        )

    # --- read and change -------------------------------------------------------------------------

    @within_deadline
    async def get(self, tenant: str, session_id: str, principal: str | None) -> dict[str, Any]:
        if not rules.is_valid_session_id(session_id):
            raise SessionNotFound()
        async with self.db.connection("get") as connection:
            lookup = await SessionRepository(connection).get(
                tenant, session_id, principal=principal, with_leases=True
            )
        if lookup.session is None:
            raise SessionNotFound(lookup.ended_reason)
        if rules.bound_elsewhere(lookup.session["principal"], principal):
            raise binding.mismatch(self.settings, tenant, "get")
        return lookup.session

    @within_deadline
    async def patch(
        self, tenant: str, session_id: str, principal: str | None, patch: SessionPatch, if_match: str | None
    ) -> dict[str, Any]:
        """Apply a merge patch with optimistic concurrency on `version` (412 when If-Match fails)."""
        if not rules.is_valid_session_id(session_id):
            raise SessionNotFound()
        rows, db = self.rows.hold((tenant, session_id)), self.db.connection("patch")
        async with rows, db as connection, connection.transaction():
            # The row lock serialises concurrent patches of one session: each re-reads the latest version
            # and none is lost. Touches of the row wait for the lock only for this short transaction.
            repo = SessionRepository(connection)
            lookup = await repo.get(tenant, session_id, principal=principal, for_update=True)
            current = lookup.session
            if current is None:
                raise SessionNotFound(lookup.ended_reason)
            if rules.bound_elsewhere(current["principal"], principal):
                raise binding.mismatch(self.settings, tenant, "patch")
            if not rules.if_match_allows(if_match, current["version"]):
                raise PreconditionFailed(
                    f"If-Match did not match the current ETag {rules.etag(current['version'])}.",
                    etag=rules.etag(current["version"]),
                )
            changes = rules.patched(current, patch)
            changed = [name for name in rules.PATCHABLE if changes[name] != current[name]]
            if not changed:
                return current  # a no-op patch is not a change: version and ETag stay
            rules.check_metadata_size(changes["metadata"], self.settings.max_metadata_bytes)
            updated = await repo.update(
                tenant, session_id, expected_version=current["version"], changed=changed, values=changes
            )
        if updated is None:  # cannot happen under the row lock; kept as a guard against silent lost writes
            raise SessionNotFound()
        return updated

    @within_deadline
    async def list(
        self, tenant: str, filters: dict[str, str], cursor: str | None, limit: int
    ) -> tuple[builtins.list[dict[str, Any]], str | None]:
        after = rules.decode_cursor(cursor) if cursor is not None else None
        reader = self.reads.database()  # a standby may serve it (read_replica.py)
        async with self.heavy_reads.admit(tenant), reader.connection("list") as connection:
            rows, available = await SessionRepository(connection).list_live(
                tenant,
                filters=filters,
                after_id=after,
                limit=limit + 1,
                max_bytes=self.settings.list_max_page_bytes,
            )
        if len(rows) > limit:
            rows = rows[:limit]
        elif len(rows) == available:
            return rows, None  # neither the limit nor the byte budget cut this page: it is the last
        return rows, rules.encode_cursor(rows[-1]["id"])

    # --- end -------------------------------------------------------------------------------------

    @within_deadline
    async def delete(self, tenant: str, session_id: str, principal: str | None) -> None:
        if not rules.is_valid_session_id(session_id):
            raise SessionNotFound()
        async with self.rows.hold((tenant, session_id)), self.db.connection("delete") as connection:
            repo = SessionRepository(connection)
            lifetime = await repo.delete(
                tenant,
                session_id,
                principal=principal,
                tombstone_seconds=self.settings.tombstone_retention_seconds,
            )
            if lifetime is None:
                lookup = await repo.get(tenant, session_id, principal=principal)
        if lifetime is None:
            raise binding.not_changed(self.settings, tenant, "delete", lookup, principal)
        metrics.count_ended(tenant, "deleted", lifetime)

    async def revoke(self, tenant: str, filters: dict[str, str], *, everything: bool = False) -> int:
        """End every live session matching all filters (reason `revoked`), in bounded batches; idempotent.
        `everything` (`?all=true`) ends every live session of the tenant, and takes no filters."""
        if everything and filters:
            raise ValidationFailed.one(
                "all", "all=true clears the whole tenant; it cannot be combined with filters"
            )
        if not filters and not everything:
            raise ValidationFailed.one(
                "principal",
                "revocation needs at least one filter: principal, client_id, owner or kind (or all=true)",
            )
        revoked = 0
        while True:
            lifetimes = await self._revoke_batch(tenant, filters)
            for lifetime in lifetimes:
                metrics.count_ended(tenant, "revoked", lifetime)
            revoked += len(lifetimes)
            if len(lifetimes) < REVOKE_BATCH:
                return revoked

    @within_deadline
    async def _revoke_batch(self, tenant: str, filters: dict[str, str]) -> builtins.list[float]:
        """One batch of a revocation: the deadline bounds each batch, not the whole revocation, which
        takes as many batches as there are matching sessions (and is idempotent if cut short)."""
        async with self.db.connection("revoke") as connection:
            return await SessionRepository(connection).revoke_batch(
                tenant,
                filters,
                batch=REVOKE_BATCH,
                tombstone_seconds=self.settings.tombstone_retention_seconds,
            )

    @within_deadline
    async def rotate(
        self, tenant: str, session_id: str, principal: str | None, idempotency_key: str | None = None
    ) -> Created:
        """Give a live session a new minted id atomically; the old id ends with reason `rotated`. With an
        `idempotency_key`, a retry answers with the session the first attempt rotated to."""
        if not rules.is_valid_session_id(session_id):
            raise SessionNotFound()
        claim = self.creates.claim(idempotency_key, idempotency.rotate_fingerprint(session_id, principal))
        return await idempotency.retrying(lambda: self._rotate_one(tenant, session_id, principal, claim))

    async def _rotate_one(
        self, tenant: str, session_id: str, principal: str | None, claim: IdempotencyClaim | None
    ) -> Created:
        async with self.rows.hold((tenant, session_id)), self.db.connection("rotate") as connection:
            repo = SessionRepository(connection)
            async with idempotency.transaction_if(connection, claim):
                rotated, remembered = await repo.rotate(
                    tenant,
                    session_id,
                    rules.mint_session_id(),
                    principal=principal,
                    tombstone_seconds=self.settings.tombstone_retention_seconds,
                    claim=claim,
                )
            if rotated is None and remembered is None:
                lookup = await repo.get(tenant, session_id, principal=principal)
        if remembered is not None:
            return Created(idempotency.replayed(tenant, remembered, claim), replayed=True)
        if rotated is None:
            raise binding.not_changed(self.settings, tenant, "rotate", lookup, principal)
        metrics.count_ended(tenant, "rotated", None)
        metrics.count_created(tenant, "rotated")
        return Created(rotated)
