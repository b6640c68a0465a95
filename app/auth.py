"""API keys -> tenant.

Keys are looked up by their SHA-256 digest and confirmed with `hmac.compare_digest`, so lookup time does
not depend on how much of a guessed key matches. Raw keys are never logged or kept in exceptions.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from app.config import ConfigurationError, Settings
from app.errors import TenantKeyRequired, Unauthorized

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MIN_KEY_LENGTH = 16


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: a tenant's gateway, or an admin."""

    tenant: str | None
    is_admin: bool = False
    key_name: str | None = None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _parse_pairs(text: str, source: str, *, separator: str) -> list[tuple[str, str]]:
    pairs = []
    for number, raw in enumerate(text.split(separator), start=1):
        item = raw.strip()
        if not item or item.startswith("#"):
            continue
        name, sep, key = item.partition("=")
        name, key = name.strip(), key.strip()
        if not sep or not name or not key:
            raise ConfigurationError(f"{source}: entry {number} is not in the form tenant=key")
        if not TENANT_PATTERN.match(name):
            raise ConfigurationError(
                f"{source}: entry {number}: tenant name must be 1-64 of letters, digits, '.', '_', '-'"
            )
        if len(key) < MIN_KEY_LENGTH:
            raise ConfigurationError(
                f"{source}: entry {number}: keys must be at least {MIN_KEY_LENGTH} characters"
            )
        pairs.append((name, key))
    return pairs


class KeyRing:
    """The configured keys. Built once at start; `authenticate` is on every request's path."""

    def __init__(self, tenant_keys: list[tuple[str, str]], admin_keys: list[tuple[str, str]]) -> None:
        self._tenants: dict[bytes, tuple[str, str]] = {}
        self._admins: dict[bytes, tuple[str, str]] = {}
        for table, pairs, kind in (
            (self._tenants, tenant_keys, "tenant"),
            (self._admins, admin_keys, "admin"),
        ):
            for name, key in pairs:
                digest = _digest(key)
                if digest in self._tenants or digest in self._admins:
                    raise ConfigurationError(f"the same API key is configured twice ({kind} {name!r})")
                table[digest] = (name, key)
        self.auth_enabled = bool(self._tenants or self._admins)

    @property
    def tenants(self) -> list[str]:
        return sorted({name for name, _ in self._tenants.values()})

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        tenant_keys: list[tuple[str, str]] = []
        if settings.api_keys is not None:
            tenant_keys += _parse_pairs(
                settings.api_keys.get_secret_value(), "SESSION_BROKER_API_KEYS", separator=","
            )
        if settings.api_keys_file is not None:
            tenant_keys += _parse_pairs(
                Path(settings.api_keys_file).read_text(), "SESSION_BROKER_API_KEYS_FILE", separator="\n"
            )
        admin_keys: list[tuple[str, str]] = []
        if settings.admin_api_keys is not None:
            for number, raw in enumerate(settings.admin_api_keys.get_secret_value().split(","), start=1):
                item = raw.strip()
                if item:
                    # `name=key` or a bare key; a bare key is named by its position.
                    name, sep, key = item.partition("=")
                    pair = (name.strip(), key.strip()) if sep else (f"admin{number}", item)
                    if len(pair[1]) < MIN_KEY_LENGTH:
                        raise ConfigurationError(
                            f"SESSION_BROKER_ADMIN_API_KEYS: entry {number}: keys must be at least "
                            f"{MIN_KEY_LENGTH} characters"
                        )
                    admin_keys.append(pair)
        ring = cls(tenant_keys, admin_keys)
        if not ring.auth_enabled and not settings.binds_loopback_only:
            raise ConfigurationError(
                f"no API keys are configured and SESSION_BROKER_HOST={settings.host} is not a loopback "
                "address: "
                "refusing to serve without authentication. Set SESSION_BROKER_API_KEYS or "
                "SESSION_BROKER_API_KEYS_FILE (and SESSION_BROKER_ADMIN_API_KEYS), or bind to 127.0.0.1."
            )
        return ring

    def authenticate(self, authorization: str | None) -> Caller:
        """Resolve an `Authorization` header to a caller, or raise Unauthorized (401)."""
        if not self.auth_enabled:
            return Caller(tenant=DEFAULT_TENANT)
        if not authorization:
            raise Unauthorized("Send 'Authorization: Bearer <api key>'.")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("The Authorization header must use the Bearer scheme.", invalid_token=True)
        digest = _digest(token)
        for table, is_admin in ((self._tenants, False), (self._admins, True)):
            entry = table.get(digest)
            if entry is not None and hmac.compare_digest(entry[1].encode(), token.encode()):
                if is_admin:
                    return Caller(tenant=None, is_admin=True, key_name=entry[0])
                return Caller(tenant=entry[0], key_name=entry[0])
        raise Unauthorized("The API key is not valid.", invalid_token=True)

    def tenant_for(self, authorization: str | None) -> str:
        """The tenant a session call acts for: 401 without a valid key, 403 for an admin key."""
        caller = self.authenticate(authorization)
        if caller.tenant is None:
            raise TenantKeyRequired(
                "Admin keys act across tenants; use a tenant's API key for session calls."
            )
        return caller.tenant
