"""The session rules: TTL defaults and bounds, id validation, principal binding, merge-patch, ETags,
cursors. No FastAPI here; errors are `app.errors` types that carry their HTTP status."""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass
from typing import Any

import orjson

from app import metrics
from app.analytics import RequestAnalytics
from app.batching import StatementBatcher
from app.config import MismatchStatus, QuotaPolicy, Settings
from app.db import Database
from app.errors import (
    MetadataTooLarge,
    PreconditionFailed,
    PrincipalMismatch,
    QuotaExceeded,
    SessionExists,
    SessionIdRetired,
    SessionNotFound,
    ValidationFailed,
)
from app.quotas import QUOTA_HEADROOM, QUOTA_RETRY_AFTER_SECONDS, Quotas, TenantQuota
from app.repository import InsertOutcome, NewSession, QuotaLimits, SessionRepository, TouchOutcome
from app.schemas import SessionCreate, SessionPatch, TouchRequest

# MCP: ids are visible ASCII 0x21-0x7E. We bound the length so ids stay cheap to index.
SESSION_ID_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
END_REASONS = ("deleted", "expired_idle", "expired_lifetime", "evicted", "revoked", "rotated")
DEFAULT_PAGE_SIZE = 100
REVOKE_BATCH = 1000


def mint_session_id() -> str:
    """256 bits from the OS CSPRNG, URL-safe base64 without padding (43 characters; lesson 19)."""
    return secrets.token_urlsafe(32)


def is_valid_session_id(session_id: str) -> bool:
    return SESSION_ID_PATTERN.match(session_id) is not None


def etag(version: int) -> str:
    return f'"{version}"'


def if_match_allows(header: str | None, version: int) -> bool:
    """RFC 9110 If-Match with strong comparison: `*` or a list of quoted tags; weak tags never match."""
    if header is None:
        return True
    header = header.strip()
    if header == "*":
        return True
    current = etag(version)
    return any(tag.strip() == current for tag in header.split(","))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON Merge Patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": last_id})).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        decoded = None
    after = decoded.get("after") if isinstance(decoded, dict) else None
    if not isinstance(after, str) or not is_valid_session_id(after):
        raise ValidationFailed.one("cursor", "is not a cursor returned by this service")
    return after


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


class SessionService:
    """Operations of the API for one tenant at a time. Stateless apart from its collaborators."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.quotas = Quotas(settings)
        self.analytics = RequestAnalytics()
        # Concurrent touches, and concurrent creates with minted ids, share statements (batching.py).
        self.touches: StatementBatcher[TouchKey, TouchOutcome] = StatementBatcher(
            self._touch_batch, conflict=lambda key: key[:2]
        )
        self.creates: StatementBatcher[_MintedCreate, InsertOutcome] = StatementBatcher(self._create_batch)

    # --- rules -----------------------------------------------------------------------------------

    def _timeouts(self, body: SessionCreate) -> tuple[int, int]:
        s = self.settings
        idle = (
            s.default_idle_timeout_seconds if body.idle_timeout_seconds is None else body.idle_timeout_seconds
        )
        lifetime = (
            s.default_max_lifetime_seconds if body.max_lifetime_seconds is None else body.max_lifetime_seconds
        )
        errors = []
        if not s.min_idle_timeout_seconds <= idle <= s.max_idle_timeout_seconds:
            errors.append(
                {
                    "field": "idle_timeout_seconds",
                    "message": f"must be between {s.min_idle_timeout_seconds} and "
                    f"{s.max_idle_timeout_seconds}",
                }
            )
        if not s.min_max_lifetime_seconds <= lifetime <= s.max_max_lifetime_seconds:
            errors.append(
                {
                    "field": "max_lifetime_seconds",
                    "message": f"must be between {s.min_max_lifetime_seconds} and "
                    f"{s.max_max_lifetime_seconds}",
                }
            )
        if errors:
            raise ValidationFailed(errors)
        return idle, lifetime

    def _check_metadata_size(self, metadata: dict[str, Any]) -> None:
        size = len(orjson.dumps(metadata))
        if size > self.settings.max_metadata_bytes:
            raise MetadataTooLarge(size, self.settings.max_metadata_bytes)

    def _mismatch(self, tenant: str, operation: str) -> Exception:
        """A caller bound to another principal: counted, answered like a missing session (or 403)."""
        metrics.count_binding_mismatch(tenant, operation)
        if self.settings.principal_mismatch_status is MismatchStatus.forbidden:
            return PrincipalMismatch("The session is bound to a different principal.")
        return SessionNotFound()

    @staticmethod
    def _bound_elsewhere(session_principal: str | None, caller_principal: str | None) -> bool:
        return (
            caller_principal is not None
            and session_principal is not None
            and session_principal != caller_principal
        )

    # --- operations ------------------------------------------------------------------------------

    async def create(self, tenant: str, body: SessionCreate, session_id: str | None = None) -> dict[str, Any]:
        """Create with a minted id, or register `session_id` minted elsewhere (409 if it is taken)."""
        idle, lifetime = self._timeouts(body)
        self._check_metadata_size(body.metadata)
        new = NewSession(
            kind=body.kind,
            principal=body.principal,
            client_id=body.client_id,
            owner=body.owner,
            protocol_version=body.protocol_version,
            metadata=body.metadata,
            idle_timeout_seconds=idle,
            max_lifetime_seconds=lifetime,
        )
        how = "created" if session_id is None else "registered"
        new_id = session_id if session_id is not None else mint_session_id()
        quota = self.quotas.for_tenant(tenant)
        if session_id is None:  # minted: grouped with concurrent creates (batching.py)
            outcome = await self.creates.submit(_MintedCreate(tenant, new_id, new, quota.limits))
            if outcome.session is not None or not outcome.tight_scopes:
                return self._finish_create(tenant, how, quota, outcome)
        async with self.db.timed(how) as connection:
            repo = SessionRepository(connection)
            if session_id is not None:
                outcome = await repo.insert(
                    tenant, new_id, new, how=how, limits=quota.limits, headroom=QUOTA_HEADROOM
                )
            if outcome.session is None and outcome.retired_reason is None and outcome.tight_scopes:
                outcome = await self._create_near_limit(
                    repo, tenant, new_id, new, how, quota, outcome.tight_scopes
                )
        return self._finish_create(tenant, how, quota, outcome)

    def _finish_create(
        self, tenant: str, how: str, quota: TenantQuota, outcome: InsertOutcome
    ) -> dict[str, Any]:
        """The answer to a create: the session, or the problem that explains why there is none."""
        if outcome.session is None:
            if outcome.retired_reason is not None:
                raise SessionIdRetired(outcome.retired_reason)
            if outcome.tight_scopes:
                scope = outcome.tight_scopes[0]
                metrics.count_quota_rejection(tenant, scope)
                raise QuotaExceeded(
                    f"The {scope} quota is full ({quota.limit_of(scope)} live sessions); "
                    "end a session or retry later.",
                    headers={"Retry-After": str(QUOTA_RETRY_AFTER_SECONDS)},
                    scope=scope,
                    limit=quota.limit_of(scope),
                )
            raise SessionExists("A live session already has this id; end it first or use another id.")
        if outcome.replaced_reason is not None:  # an expired row of this id was taken over
            metrics.count_ended(tenant, outcome.replaced_reason, outcome.replaced_lifetime)
        metrics.count_created(tenant, how)
        return outcome.session

    async def _create_near_limit(
        self,
        repo: SessionRepository,
        tenant: str,
        new_id: str,
        new: NewSession,
        how: str,
        quota: TenantQuota,
        tight: tuple[str, ...],
    ) -> InsertOutcome:
        """Near a limit: serialise on the tight scopes' locks and count exactly; evict if the policy
        says so."""
        for _ in range(3):
            async with repo.db.transaction():
                await self._lock_scopes(repo, tenant, new, tight)
                outcome = await repo.insert(tenant, new_id, new, how=how, limits=quota.limits, headroom=0)
            if outcome.session is not None or outcome.retired_reason is not None or not outcome.tight_scopes:
                return outcome
            if quota.policy is not QuotaPolicy.evict_oldest_idle:
                return outcome
            tight = outcome.tight_scopes
            for scope in tight:  # one transaction per eviction: each writes its own event
                async with repo.db.transaction():
                    await self._lock_scopes(repo, tenant, new, (scope,))
                    lifetime = await repo.evict_oldest_idle(
                        tenant,
                        scope,
                        self._scope_value(scope, new),
                        quota.limit_of(scope),
                        self.settings.tombstone_retention_seconds,
                    )
                if lifetime is not None:
                    metrics.count_quota_eviction(tenant, scope)
                    metrics.count_ended(tenant, "evicted", lifetime)
        return outcome

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

    @staticmethod
    def _scope_value(scope: str, new: NewSession) -> str | None:
        return {"tenant": None, "principal": new.principal, "client": new.client_id}[scope]

    def _scope_key(self, tenant: str, scope: str, new: NewSession) -> str:
        return f"quota:{scope}:{tenant}:{self._scope_value(scope, new) or ''}"

    async def _lock_scopes(
        self, repo: SessionRepository, tenant: str, new: NewSession, scopes: tuple[str, ...]
    ) -> None:
        """Take the advisory locks of the given scopes, always in the same order (no deadlocks)."""
        for key in sorted(self._scope_key(tenant, scope, new) for scope in scopes):
            await repo.lock_quota_scope(key)

    async def get(self, tenant: str, session_id: str, principal: str | None) -> dict[str, Any]:
        if not is_valid_session_id(session_id):
            raise SessionNotFound()
        async with self.db.timed("get") as connection:
            lookup = await SessionRepository(connection).get(tenant, session_id)
        if lookup.session is None:
            raise SessionNotFound(lookup.ended_reason)
        if self._bound_elsewhere(lookup.session["principal"], principal):
            raise self._mismatch(tenant, "get")
        return lookup.session

    async def touch(
        self, tenant: str, session_id: str, principal: str | None, request: TouchRequest | None
    ) -> Touched:
        """Slide the idle expiry: one statement; writes only when it moves expiry by the granularity."""
        if request is not None:
            # Analytics live in memory (metrics); they never add a database write to touch.
            self.analytics.record(tenant, request.method, request.ok, request.duration_ms)
        if not is_valid_session_id(session_id):
            metrics.count_touch(tenant, "not_found")
            raise SessionNotFound()
        outcome = await self.touches.submit((tenant, session_id, principal))
        if not outcome.found:
            metrics.count_touch(tenant, "not_found")
            raise SessionNotFound(outcome.ended_reason)
        if self._bound_elsewhere(outcome.principal, principal):
            raise self._mismatch(tenant, "touch")
        if outcome.due and not outcome.written:
            # It should have written but its row was gone: ended (e.g. purged at its expiry) meanwhile.
            metrics.count_touch(tenant, "not_found")
            raise SessionNotFound()
        metrics.count_touch(tenant, "written" if outcome.written else "throttled")
        return Touched(id=session_id, expires_at=outcome.expires_at)

    def record_requests(self, tenant: str, requests: list[TouchRequest]) -> int:
        """Request analytics reported in a batch (`POST /v1/analytics`): counted exactly as touch bodies."""
        for request in requests:
            self.analytics.record(tenant, request.method, request.ok, request.duration_ms)
        return len(requests)

    async def patch(
        self, tenant: str, session_id: str, principal: str | None, patch: SessionPatch, if_match: str | None
    ) -> dict[str, Any]:
        """Apply a merge patch with optimistic concurrency on `version` (412 when If-Match fails)."""
        if not is_valid_session_id(session_id):
            raise SessionNotFound()
        given = patch.model_fields_set
        async with self.db.timed("patch") as connection, connection.transaction():
            # The row lock serialises concurrent patches of one session: each re-reads the latest version
            # and none is lost. Touches of the row wait for the lock only for this short transaction.
            repo = SessionRepository(connection)
            lookup = await repo.get(tenant, session_id, for_update=True)
            current = lookup.session
            if current is None:
                raise SessionNotFound(lookup.ended_reason)
            if self._bound_elsewhere(current["principal"], principal):
                raise self._mismatch(tenant, "patch")
            if not if_match_allows(if_match, current["version"]):
                raise PreconditionFailed(
                    f"If-Match did not match the current ETag {etag(current['version'])}.",
                    etag=etag(current["version"]),
                )
            metadata = current["metadata"]
            if "metadata" in given:  # `"metadata": null` removes all of it, as RFC 7396 removes a member
                metadata = {} if patch.metadata is None else merge_patch(metadata, patch.metadata)
            changes = {
                "metadata": metadata,
                "owner": patch.owner if "owner" in given else current["owner"],
                "client_id": patch.client_id if "client_id" in given else current["client_id"],
                "protocol_version": patch.protocol_version
                if "protocol_version" in given
                else current["protocol_version"],
            }
            if all(changes[key] == current[key] for key in changes):
                return current  # a no-op patch is not a change: version and ETag stay
            self._check_metadata_size(changes["metadata"])
            changed = [key for key in changes if changes[key] != current[key]]
            updated = await repo.update(
                tenant, session_id, expected_version=current["version"], changed=changed, **changes
            )
        if updated is None:  # cannot happen under the row lock; kept as a guard against silent lost writes
            raise SessionNotFound()
        return updated

    async def delete(self, tenant: str, session_id: str, principal: str | None) -> None:
        if not is_valid_session_id(session_id):
            raise SessionNotFound()
        async with self.db.timed("delete") as connection:
            repo = SessionRepository(connection)
            lifetime = await repo.delete(
                tenant,
                session_id,
                principal=principal,
                tombstone_seconds=self.settings.tombstone_retention_seconds,
            )
            if lifetime is None:
                lookup = await repo.get(tenant, session_id)
        if lifetime is not None:
            metrics.count_ended(tenant, "deleted", lifetime)
            return
        if lookup.session is not None and self._bound_elsewhere(lookup.session["principal"], principal):
            raise self._mismatch(tenant, "delete")
        raise SessionNotFound(lookup.ended_reason)

    async def list(
        self, tenant: str, filters: dict[str, str], cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        after = decode_cursor(cursor) if cursor is not None else None
        async with self.db.timed("list") as connection:
            rows = await SessionRepository(connection).list_live(
                tenant, filters=filters, after_id=after, limit=limit + 1
            )
        if len(rows) > limit:
            rows = rows[:limit]
            return rows, encode_cursor(rows[-1]["id"])
        return rows, None

    async def revoke(self, tenant: str, filters: dict[str, str]) -> int:
        """End every live session matching all filters (reason `revoked`), in bounded batches; idempotent."""
        if not filters:
            raise ValidationFailed.one(
                "principal", "revocation needs at least one filter: principal, client_id, owner or kind"
            )
        revoked = 0
        while True:
            async with self.db.timed("revoke") as connection:
                lifetimes = await SessionRepository(connection).revoke_batch(
                    tenant,
                    filters,
                    batch=REVOKE_BATCH,
                    tombstone_seconds=self.settings.tombstone_retention_seconds,
                )
            for lifetime in lifetimes:
                metrics.count_ended(tenant, "revoked", lifetime)
            revoked += len(lifetimes)
            if len(lifetimes) < REVOKE_BATCH:
                return revoked

    async def rotate(self, tenant: str, session_id: str, principal: str | None) -> dict[str, Any]:
        """Give a live session a new minted id atomically; the old id ends with reason `rotated`."""
        if not is_valid_session_id(session_id):
            raise SessionNotFound()
        async with self.db.timed("rotate") as connection:
            repo = SessionRepository(connection)
            rotated = await repo.rotate(
                tenant,
                session_id,
                mint_session_id(),
                principal=principal,
                tombstone_seconds=self.settings.tombstone_retention_seconds,
            )
            lookup = await repo.get(tenant, session_id) if rotated is None else None
        if rotated is not None:
            metrics.count_ended(tenant, "rotated", None)
            metrics.count_created(tenant, "rotated")
            return rotated
        assert lookup is not None
        if lookup.session is not None and self._bound_elsewhere(lookup.session["principal"], principal):
            raise self._mismatch(tenant, "rotate")
        raise SessionNotFound(lookup.ended_reason)

    async def stats(self, tenant: str) -> dict[str, Any]:
        async with self.db.timed("stats") as connection:
            repo = SessionRepository(connection)
            kinds = await repo.live_by_kind(tenant)
            totals = {row["name"]: row["total"] for row in await repo.counter_totals(tenant)}
        return {
            "tenant": tenant,
            **_tenant_figures(kinds, totals),
            "requests": await self.analytics.summary(self.db, tenant),
            "limits": self.limits(tenant),
        }

    async def stats_of_all_tenants(self) -> dict[str, Any]:
        """Admin: the same figures for every tenant that has sessions or history."""
        async with self.db.timed("admin_stats") as connection:
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
