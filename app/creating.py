"""Creating sessions: minted ids grouped into shared statements, registered ids and `Idempotency-Key`
creates one at a time, and the near-limit quota protocol (app/quotas.py) when a scope is tight."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app import idempotency, metrics, quotas, rules
from app.batching import StatementBatcher
from app.config import Settings
from app.db import Database, within_deadline
from app.errors import SessionExists, SessionIdRetired
from app.quotas import QUOTA_HEADROOM, Quotas, TenantQuota
from app.records import IdempotencyClaim, InsertOutcome, NewSession, QuotaLimits
from app.repository import SessionRepository
from app.row_gate import RowGate
from app.schemas import SessionCreate


@dataclass(frozen=True, slots=True, eq=False)
class _MintedCreate:
    """One create with a minted id, waiting for a group statement (identity-hashed: each is unique)."""

    tenant: str
    session_id: str
    new: NewSession
    limits: QuotaLimits


@dataclass(frozen=True, slots=True)
class Created:
    """A session that came into existence, or, `replayed`, the answer an Idempotency-Key remembered."""

    session: dict[str, Any]
    replayed: bool = False


class Creates:
    """The create operation of `SessionService` (app/service.py), with its group statement."""

    def __init__(self, db: Database, settings: Settings, quotas: Quotas, rows: RowGate) -> None:
        self.db = db
        self.settings = settings
        self.quotas = quotas
        self.rows = rows
        # Concurrent creates with minted ids share statements (batching.py), one group per tenant.
        self.batcher: StatementBatcher[_MintedCreate, InsertOutcome] = StatementBatcher(
            self._create_batch, group=lambda item: item.tenant
        )

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
        claim = self.claim(idempotency_key, idempotency.create_fingerprint(how, body, session_id))
        if session_id is None and claim is None:  # minted: grouped with concurrent creates (batching.py)
            outcome = await self.batcher.submit(_MintedCreate(tenant, new_id, new, quota.limits))
            if outcome.session is not None or not outcome.tight_scopes:
                return Created(self._finish_create(tenant, how, quota, outcome))
            return await self._create_one(tenant, new_id, new, how, quota, None, outcome)
        return await idempotency.retrying(lambda: self._create_one(tenant, new_id, new, how, quota, claim))

    def claim(self, key: str | None, fingerprint: str) -> IdempotencyClaim | None:
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
