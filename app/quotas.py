"""Quotas, all of it: limits and policy per tenant (settings, overridden by SESSION_BROKER_TENANT_QUOTAS),
and the near-limit protocol that keeps them exact.

Protocol (docs/design.md, "Quotas"): a create takes the single-statement path while every scope it
counts against has at least QUOTA_HEADROOM free slots (the statement checks that itself). Nearer a limit,
the statement writes nothing and names the tight scopes; the create then serialises on one advisory lock
per tight scope, counts exactly and inserts, or, under policy `evict_oldest_idle`, ends the scope's least
recently seen session and tries again. So a quota can only be overshot if more than QUOTA_HEADROOM creates
for one scope are in flight at the same instant, across all replicas.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app import metrics
from app.config import ConfigurationError, QuotaPolicy, Settings
from app.errors import QuotaExceeded
from app.records import IdempotencyClaim, InsertOutcome, NewSession, QuotaLimits
from app.repository import SessionRepository

QUOTA_HEADROOM = 64
# Seconds a rejected client should wait: a slot frees when some session ends, which nobody can predict.
QUOTA_RETRY_AFTER_SECONDS = 30
# Locked rounds of "count, evict, insert" before a create near its limit gives up and answers 429.
NEAR_LIMIT_ATTEMPTS = 3


class TenantOverride(BaseModel):
    """One tenant's entry in SESSION_BROKER_TENANT_QUOTAS."""

    model_config = ConfigDict(extra="forbid")

    max_sessions_per_tenant: int | None = Field(None, ge=1)
    max_sessions_per_principal: int | None = Field(None, ge=1)
    max_sessions_per_client: int | None = Field(None, ge=1)
    quota_policy: QuotaPolicy | None = None
    # Defaults of the per-session request limits (0: unlimited); see app/request_limits.py.
    default_max_requests_per_session: int | None = Field(None, ge=0, le=2**31 - 1)
    default_max_requests_per_minute: int | None = Field(None, ge=0, le=2**31 - 1)


@dataclass(frozen=True, slots=True)
class TenantQuota:
    limits: QuotaLimits
    policy: QuotaPolicy
    # What a session created without its own request limits gets (0: unlimited).
    max_requests: int = 0
    max_requests_per_minute: int = 0

    def limit_of(self, scope: str) -> int:
        return int(getattr(self.limits, scope))


class Quotas:
    """Resolved once at start; `for_tenant` is a dict lookup on the create path."""

    def __init__(self, settings: Settings) -> None:
        self.default = TenantQuota(
            QuotaLimits(
                tenant=settings.max_sessions_per_tenant,
                principal=settings.max_sessions_per_principal,
                client=settings.max_sessions_per_client,
            ),
            settings.quota_policy,
            settings.default_max_requests_per_session,
            settings.default_max_requests_per_minute,
        )
        self._tenants: dict[str, TenantQuota] = {}
        for tenant, override in parse_overrides(settings.tenant_quotas).items():
            self._tenants[tenant] = TenantQuota(
                QuotaLimits(
                    tenant=override.max_sessions_per_tenant or self.default.limits.tenant,
                    principal=override.max_sessions_per_principal or self.default.limits.principal,
                    client=override.max_sessions_per_client or self.default.limits.client,
                ),
                override.quota_policy or self.default.policy,
                _given(override.default_max_requests_per_session, self.default.max_requests),
                _given(override.default_max_requests_per_minute, self.default.max_requests_per_minute),
            )

    def for_tenant(self, tenant: str) -> TenantQuota:
        return self._tenants.get(tenant, self.default)


def _given(value: int | None, default: int) -> int:
    """An override of a limit where 0 means unlimited: only an absent key falls back to the default."""
    return default if value is None else value


def _override_problem(item: dict[str, object]) -> str:
    where = ".".join(str(part) for part in item["loc"]) or "value"  # type: ignore[attr-defined]
    if item["type"] == "extra_forbidden":
        close = difflib.get_close_matches(where, TenantOverride.model_fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{where}: unknown key{hint}; known keys: {', '.join(TenantOverride.model_fields)}"
    return f"{where}: {item['msg']}"


def parse_overrides(text: str | None) -> dict[str, TenantOverride]:
    """SESSION_BROKER_TENANT_QUOTAS as validated overrides; ConfigurationError naming the problem."""
    if not text:
        return {}
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise ConfigurationError(f"SESSION_BROKER_TENANT_QUOTAS: not valid JSON ({error})") from None
    if not isinstance(raw, dict):
        raise ConfigurationError("SESSION_BROKER_TENANT_QUOTAS: must be a JSON object keyed by tenant")
    overrides = {}
    for tenant, value in raw.items():
        try:
            overrides[tenant] = TenantOverride.model_validate(value)
        except ValidationError as error:
            problems = "; ".join(_override_problem(dict(item)) for item in error.errors())
            raise ConfigurationError(f"SESSION_BROKER_TENANT_QUOTAS[{tenant!r}]: {problems}") from None
    return overrides


def exceeded(tenant: str, quota: TenantQuota, scope: str) -> QuotaExceeded:
    """The 429 for a create refused because `scope` is full (counted in the rejection metric)."""
    metrics.count_quota_rejection(tenant, scope)
    limit = quota.limit_of(scope)
    return QuotaExceeded(
        f"The {scope} quota is full ({limit} live sessions); end a session or retry later.",
        headers={"Retry-After": str(QUOTA_RETRY_AFTER_SECONDS)},
        scope=scope,
        limit=limit,
    )


def _scope_value(scope: str, new: NewSession) -> str | None:
    return {"tenant": None, "principal": new.principal, "client": new.client_id}[scope]


async def _lock_scopes(
    repo: SessionRepository, tenant: str, new: NewSession, scopes: tuple[str, ...]
) -> None:
    """Take the advisory locks of the given scopes, always in the same order (no deadlocks)."""
    keys = sorted(f"quota:{scope}:{tenant}:{_scope_value(scope, new) or ''}" for scope in scopes)
    for key in keys:
        await repo.lock_quota_scope(key)


async def create_near_limit(
    repo: SessionRepository,
    tenant: str,
    new_id: str,
    new: NewSession,
    *,
    how: str,
    quota: TenantQuota,
    tight: tuple[str, ...],
    tombstone_seconds: int,
    claim: IdempotencyClaim | None = None,
) -> InsertOutcome:
    """A create whose scopes `tight` lack the headroom: serialise on their locks and count exactly; evict
    the oldest idle session of a full scope if the policy says so. Returns the last insert's outcome.
    With an Idempotency-Key `claim`, every insert checks and records it (and may raise IdempotencyRace)."""
    outcome = InsertOutcome(session=None, retired_reason=None, tight_scopes=tight)
    for _ in range(NEAR_LIMIT_ATTEMPTS):
        async with repo.connection.transaction():
            await _lock_scopes(repo, tenant, new, tight)
            outcome = await repo.insert(
                tenant, new_id, new, how=how, limits=quota.limits, headroom=0, claim=claim
            )
        if (
            outcome.session is not None
            or outcome.remembered is not None
            or outcome.retired_reason is not None
            or not outcome.tight_scopes
        ):
            return outcome
        if quota.policy is not QuotaPolicy.evict_oldest_idle:
            return outcome
        tight = outcome.tight_scopes
        for scope in tight:  # one transaction per eviction: each writes its own event
            async with repo.connection.transaction():
                await _lock_scopes(repo, tenant, new, (scope,))
                lifetime = await repo.evict_oldest_idle(
                    tenant, scope, _scope_value(scope, new), quota.limit_of(scope), tombstone_seconds
                )
            if lifetime is not None:
                metrics.count_quota_eviction(tenant, scope)
                metrics.count_ended(tenant, "evicted", lifetime)
    return outcome
