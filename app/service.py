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
from app.config import MismatchStatus, Settings
from app.db import Database
from app.errors import (
    MetadataTooLarge,
    PreconditionFailed,
    PrincipalMismatch,
    SessionExists,
    SessionIdRetired,
    SessionNotFound,
    ValidationFailed,
)
from app.repository import SessionRepository
from app.schemas import SessionCreate, SessionPatch, TouchRequest

# MCP: ids are visible ASCII 0x21-0x7E. We bound the length so ids stay cheap to index.
SESSION_ID_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
END_REASONS = ("deleted", "expired_idle", "expired_lifetime", "evicted", "revoked", "rotated")
DEFAULT_PAGE_SIZE = 100


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


@dataclass(frozen=True, slots=True)
class Touched:
    id: str
    expires_at: Any


class SessionService:
    """Operations of the API for one tenant at a time. Stateless apart from its collaborators."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

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
        registering = session_id is not None
        async with self.db.timed("register" if registering else "create") as connection:
            repo = SessionRepository(connection)
            outcome = await repo.insert(
                tenant,
                session_id if session_id is not None else mint_session_id(),
                kind=body.kind,
                principal=body.principal,
                client_id=body.client_id,
                owner=body.owner,
                protocol_version=body.protocol_version,
                metadata=body.metadata,
                idle_timeout_seconds=idle,
                max_lifetime_seconds=lifetime,
            )
        if outcome.session is None:
            if outcome.retired_reason is not None:
                raise SessionIdRetired(outcome.retired_reason)
            raise SessionExists("A live session already has this id; end it first or use another id.")
        metrics.count_created(tenant, "registered" if registering else "created")
        return outcome.session

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
            metrics.record_gateway_request(tenant, request.method, request.ok, request.duration_ms)
        if not is_valid_session_id(session_id):
            metrics.count_touch(tenant, "not_found")
            raise SessionNotFound()
        async with self.db.timed("touch") as connection:
            outcome = await SessionRepository(connection).touch(
                tenant,
                session_id,
                principal=principal,
                granularity_seconds=self.settings.touch_granularity_seconds,
            )
        if not outcome.found:
            metrics.count_touch(tenant, "not_found")
            raise SessionNotFound(outcome.ended_reason)
        if self._bound_elsewhere(outcome.principal, principal):
            raise self._mismatch(tenant, "touch")
        metrics.count_touch(tenant, "written" if outcome.written else "throttled")
        return Touched(id=session_id, expires_at=outcome.expires_at)

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
            updated = await repo.update(tenant, session_id, expected_version=current["version"], **changes)
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

    async def stats(self, tenant: str) -> dict[str, Any]:
        async with self.db.timed("stats") as connection:
            repo = SessionRepository(connection)
            kinds = await repo.live_by_kind(tenant)
            totals = await repo.counter_totals(tenant)
        s = self.settings
        return {
            "tenant": tenant,
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
            "limits": {
                "default_idle_timeout_seconds": s.default_idle_timeout_seconds,
                "min_idle_timeout_seconds": s.min_idle_timeout_seconds,
                "max_idle_timeout_seconds": s.max_idle_timeout_seconds,
                "default_max_lifetime_seconds": s.default_max_lifetime_seconds,
                "min_max_lifetime_seconds": s.min_max_lifetime_seconds,
                "max_max_lifetime_seconds": s.max_max_lifetime_seconds,
                "touch_granularity_seconds": s.touch_granularity_seconds,
                "max_metadata_bytes": s.max_metadata_bytes,
            },
        }
