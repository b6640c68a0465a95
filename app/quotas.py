"""Quota limits and policy per tenant: settings, overridden per tenant by SESSION_BROKER_TENANT_QUOTAS."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.config import ConfigurationError, QuotaPolicy, Settings
from app.repository import QuotaLimits

# Creates take the single-statement path while every scope has at least this much room; closer to a
# limit they serialise on an advisory lock per scope and count exactly. So a quota can only be overshot
# if more than this many creates for one scope are in flight at the same instant (documented bound).
QUOTA_HEADROOM = 64
# Seconds a rejected client should wait: a slot frees when some session ends, which we cannot predict.
QUOTA_RETRY_AFTER_SECONDS = 30


class TenantOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_sessions_per_tenant: int | None = Field(None, ge=1)
    max_sessions_per_principal: int | None = Field(None, ge=1)
    max_sessions_per_client: int | None = Field(None, ge=1)
    quota_policy: QuotaPolicy | None = None


@dataclass(frozen=True, slots=True)
class TenantQuota:
    limits: QuotaLimits
    policy: QuotaPolicy

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
            )

    def for_tenant(self, tenant: str) -> TenantQuota:
        return self._tenants.get(tenant, self.default)


def parse_overrides(text: str | None) -> dict[str, TenantOverride]:
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
            problems = "; ".join(
                f"{'.'.join(str(p) for p in item['loc']) or 'value'}: {item['msg']}"
                for item in error.errors()
            )
            raise ConfigurationError(f"SESSION_BROKER_TENANT_QUOTAS[{tenant!r}]: {problems}") from None
    return overrides
