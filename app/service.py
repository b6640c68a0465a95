"""`SessionService`: the API's operations, orchestrated over the repository.

The rules are pure functions in `app/rules.py`, the quota protocol is `app/quotas.py`, the stats figures
are `app/stats.py`; this module decides the order of things and which problem answers each outcome. No
FastAPI here; errors are `app.errors` types that carry their HTTP status.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any

from app import idempotency, metrics, quotas, rules
from app.admission import Admission
from app.analytics import RequestAnalytics
from app.batching import StatementBatcher
from app.config import MismatchStatus, Settings
from app.db import Database, within_deadline
from app.errors import (
    PreconditionFailed,
    PrincipalMismatch,
    SessionExists,
    SessionIdRetired,
    SessionNotFound,
    ValidationFailed,
)
from app.quotas import QUOTA_HEADROOM, Quotas, TenantQuota
from app.read_replica import Reads
from app.records import (
    IdempotencyClaim,
    InsertOutcome,
    Lookup,
    NewSession,
    QuotaLimits,
    TouchOutcome,
)
from app.repository import SessionRepository
from app.request_limits import RequestLimiter
from app.row_gate import RowGate
from app.schemas import SessionCreate, SessionPatch, TouchRequest

DEFAULT_PAGE_SIZE = 100
REVOKE_BATCH = 1000

TouchKey = tuple[str, str, str | None]  # tenant, session id, principal binding


@dataclass(frozen=True, slots=True, eq=False)
class _MintedCreate:
    """One create with a minted id, waiting for a group statement (identity-hashed: each is unique)."""

    tenant: str
    session_id: str
    new: NewSession
    limits: QuotaLimits


@dataclass(frozen=True, slots=True)
class Touched:
    id: str
    expires_at: Any


@dataclass(frozen=True, slots=True)
class Created:
    """A session that came into existence, or, `replayed`, the answer an Idempotency-Key remembered."""

    session: dict[str, Any]
    replayed: bool = False


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
        # Concurrent touches, and concurrent creates with minted ids, share statements (batching.py).
        self.touches: StatementBatcher[TouchKey, TouchOutcome] = StatementBatcher(
            self._touch_batch, conflict=lambda key: key[:2], group=lambda key: key[0]
        )
        self.creates: StatementBatcher[_MintedCreate, InsertOutcome] = StatementBatcher(
            self._create_batch, group=lambda item: item.tenant
        )
        # One waiter per locked row in this process (row_gate.py): single-row writes and touch retries.
        self.rows = RowGate()
        # List pages can be megabytes each: a few at a time per process, fewer per tenant (admission.py).
        self.heavy_reads = Admission(
            total=settings.list_concurrent_pages, per_tenant=settings.list_concurrent_pages_per_tenant
        )

    def _mismatch(self, tenant: str, operation: str) -> Exception:
        """A caller bound to another principal: counted, answered like a missing session (or 403)."""
        metrics.count_binding_mismatch(tenant, operation)
        if self.settings.principal_mismatch_status is MismatchStatus.forbidden:
            return PrincipalMismatch("The session is bound to a different principal.")
        return SessionNotFound()

    def _not_changed(self, tenant: str, operation: str, lookup: Lookup, principal: str | None) -> Exception:
        """Why a change guarded by the binding found nothing to change: another principal's session, or
        none (with the reason it ended, when known)."""
        if lookup.session is not None and rules.bound_elsewhere(lookup.session["principal"], principal):
            return self._mismatch(tenant, operation)
        return SessionNotFound(lookup.ended_reason)

    # --- create ----------------------------------------------------------------------------------

    @within_deadline
    async def create(
        self,
        tenant: str,
        body: SessionCreate,
        session_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Created:
        """Create with a minted id, or register `session_id` minted elsewhere (409 if it is taken). With an
        `idempotency_key`, a retry of the same request answers what the first one did."""
        idle, lifetime = rules.timeouts(self.settings, body)
        rules.check_metadata_size(body.metadata, self.settings.max_metadata_bytes)
        quota = self.quotas.for_tenant(tenant)
        new = NewSession(
            kind=body.kind,
            principal=body.principal,
            client_id=body.client_id,
            owner=body.owner,
            protocol_version=body.protocol_version,
            metadata=body.metadata,
            idle_timeout_seconds=idle,
            max_lifetime_seconds=lifetime,
            max_requests=quota.max_requests if body.max_requests is None else body.max_requests,
            max_requests_per_minute=(
                quota.max_requests_per_minute
                if body.max_requests_per_minute is None
                else body.max_requests_per_minute
            ),
            warning_seconds=self.settings.expiry_warning_seconds,
        )
        how = "created" if session_id is None else "registered"
        new_id = session_id if session_id is not None else rules.mint_session_id()
        claim = self._claim(idempotency_key, idempotency.create_fingerprint(how, body, session_id))
        if session_id is None and claim is None:  # minted: grouped with concurrent creates (batching.py)
            outcome = await self.creates.submit(_MintedCreate(tenant, new_id, new, quota.limits))
            if outcome.session is not None or not outcome.tight_scopes:
                return Created(self._finish_create(tenant, how, quota, outcome))
            return await self._create_one(tenant, new_id, new, how, quota, None, outcome)
        return await idempotency.retrying(lambda: self._create_one(tenant, new_id, new, how, quota, claim))

    def _claim(self, key: str | None, fingerprint: str) -> IdempotencyClaim | None:
        return idempotency.claim(key, fingerprint, self.settings.idempotency_key_retention_seconds)

    async def _create_one(
        self,
        tenant: str,
        new_id: str,
        new: NewSession,
        how: str,
        quota: TenantQuota,
        claim: IdempotencyClaim | None,
        outcome: InsertOutcome | None = None,
    ) -> Created:
        """One create on its own statement (`outcome`: what the group statement already answered), with the
        near-limit protocol of quotas.py when a scope is tight."""
        async with self.rows.hold((tenant, new_id)), self.db.connection(how) as connection:
            repo = SessionRepository(connection)
            if outcome is None:
                async with idempotency.transaction_if(connection, claim):
                    outcome = await repo.insert(
                        tenant,
                        new_id,
                        new,
                        how=how,
                        limits=quota.limits,
                        headroom=QUOTA_HEADROOM,
                        claim=claim,
                    )
            if (
                outcome.session is None
                and outcome.remembered is None
                and outcome.retired_reason is None
                and outcome.tight_scopes
            ):
                outcome = await quotas.create_near_limit(
                    repo,
                    tenant,
                    new_id,
                    new,
                    how=how,
                    quota=quota,
                    tight=outcome.tight_scopes,
                    tombstone_seconds=self.settings.tombstone_retention_seconds,
                    claim=claim,
                )
        if outcome.remembered is not None:
            return Created(idempotency.replayed(tenant, outcome.remembered, claim), replayed=True)
        return Created(self._finish_create(tenant, how, quota, outcome))

    def _finish_create(
        self, tenant: str, how: str, quota: TenantQuota, outcome: InsertOutcome
    ) -> dict[str, Any]:
        """The answer to a create: the session, or the problem that explains why there is none."""
        if outcome.session is None:
            if outcome.retired_reason is not None:
                raise SessionIdRetired(outcome.retired_reason)
            if outcome.tight_scopes:
                raise quotas.exceeded(tenant, quota, outcome.tight_scopes[0])
            raise SessionExists("A live session already has this id; end it first or use another id.")
        if outcome.replaced_reason is not None:  # an expired row of this id was taken over
            metrics.count_ended(tenant, outcome.replaced_reason, outcome.replaced_lifetime)
        metrics.count_created(tenant, how)
        return outcome.session

    async def _create_batch(self, items: list[_MintedCreate]) -> list[InsertOutcome]:
        async with self.db.connection("create") as connection:
            repo = SessionRepository(connection)
            if len(items) == 1:
                item = items[0]
                outcome = await repo.insert(
                    item.tenant,
                    item.session_id,
                    item.new,
                    how="created",
                    limits=item.limits,
                    headroom=QUOTA_HEADROOM,
                )
                return [outcome]
            return await repo.insert_many(
                [(item.tenant, item.session_id, item.new, item.limits) for item in items],
                headroom=QUOTA_HEADROOM,
            )

    # --- touch -----------------------------------------------------------------------------------

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
        outcome = await self.touches.submit(key)
        if outcome.found and outcome.due and not outcome.written:
            # The group statement does not wait for a row another transaction holds: touch it alone.
            outcome = await self._touch_waiting(key)
        if not outcome.found:
            metrics.count_touch(tenant, "not_found")
            raise SessionNotFound(outcome.ended_reason)
        if rules.bound_elsewhere(outcome.principal, principal):
            raise self._mismatch(tenant, "touch")
        if outcome.due and not outcome.written:
            # It should have written but its row was gone: ended (e.g. purged at its expiry) meanwhile.
            metrics.count_touch(tenant, "not_found")
            raise SessionNotFound()
        if outcome.limits is not None:  # counted in memory, never a write (app/request_limits.py)
            self.limiter.admit(tenant, session_id, outcome.limits)
        metrics.count_touch(tenant, "written" if outcome.written else "throttled")
        return Touched(id=session_id, expires_at=outcome.expires_at)

    def record_requests(self, tenant: str, requests: builtins.list[TouchRequest]) -> int:
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

    # --- read and change -------------------------------------------------------------------------

    @within_deadline
    async def get(self, tenant: str, session_id: str, principal: str | None) -> dict[str, Any]:
        if not rules.is_valid_session_id(session_id):
            raise SessionNotFound()
        async with self.db.connection("get") as connection:
            lookup = await SessionRepository(connection).get(tenant, session_id)
        if lookup.session is None:
            raise SessionNotFound(lookup.ended_reason)
        if rules.bound_elsewhere(lookup.session["principal"], principal):
            raise self._mismatch(tenant, "get")
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
            lookup = await repo.get(tenant, session_id, for_update=True)
            current = lookup.session
            if current is None:
                raise SessionNotFound(lookup.ended_reason)
            if rules.bound_elsewhere(current["principal"], principal):
                raise self._mismatch(tenant, "patch")
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
                lookup = await repo.get(tenant, session_id)
        if lifetime is None:
            raise self._not_changed(tenant, "delete", lookup, principal)
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
        claim = self._claim(idempotency_key, idempotency.rotate_fingerprint(session_id, principal))
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
                lookup = await repo.get(tenant, session_id)
        if remembered is not None:
            return Created(idempotency.replayed(tenant, remembered, claim), replayed=True)
        if rotated is None:
            raise self._not_changed(tenant, "rotate", lookup, principal)
        metrics.count_ended(tenant, "rotated", None)
        metrics.count_created(tenant, "rotated")
        return Created(rotated)
