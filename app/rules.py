"""Pure session rules: ids, ETags and If-Match, merge patch, cursors, timeout bounds, binding.

No I/O and no state: everything here is a function of its arguments (tested in `tests/unit/`).
Errors are `app.errors` types that carry their HTTP status.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from typing import Any

import orjson

from app import jsonio
from app.config import Settings
from app.errors import MetadataTooLarge, ValidationFailed
from app.schemas import SessionCreate, SessionPatch

# MCP: ids are visible ASCII 0x21-0x7E. The length is bounded so ids stay cheap to index.
SESSION_ID_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
END_REASONS = ("deleted", "expired_idle", "expired_lifetime", "evicted", "revoked", "rotated")
PATCHABLE = (
    "metadata",
    "owner",
    "client_id",
    "protocol_version",
    "max_requests",
    "max_requests_per_minute",
    "max_leases",
)


ISSUED_ID_PATTERN = re.compile(r"^[\x21-\x7e]{1,64}$")


def issued_id(value: str) -> str:
    """A lease, mark or pending-request id from a path as the statements may compare it: ids the service
    issues are short visible ASCII, so anything else (a NUL PostgreSQL would refuse, megabytes) becomes
    the empty id, which matches nothing and is answered like any id that was never issued."""
    return value if ISSUED_ID_PATTERN.match(value) else ""


def mint_session_id() -> str:
    """256 bits from the OS CSPRNG, URL-safe base64 without padding (43 characters; docs/design.md, "Ids")."""
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


def patched(current: dict[str, Any], patch: SessionPatch) -> dict[str, Any]:
    """The patchable fields of `current` after applying `patch` (fields the patch leaves out keep their
    values; `"metadata": null` removes all of it, as RFC 7396 removes a member)."""
    given = patch.model_fields_set
    values = {name: current[name] for name in PATCHABLE}
    if "metadata" in given:
        values["metadata"] = (
            {} if patch.metadata is None else merge_patch(current["metadata"], patch.metadata)
        )
    for name in ("owner", "client_id", "protocol_version"):
        if name in given:
            values[name] = getattr(patch, name)
    for name in ("max_requests", "max_requests_per_minute"):
        if name in given:  # null removes the limit, like 0
            values[name] = getattr(patch, name) or 0
    if "max_leases" in given:  # null restores the default of one
        values["max_leases"] = patch.max_leases or 1
    return values


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


def timeouts(settings: Settings, body: SessionCreate) -> tuple[int, int]:
    """The idle timeout and absolute lifetime a create asks for, defaulted and checked against the
    configured bounds (422 naming each field out of bounds)."""
    s = settings
    idle = s.default_idle_timeout_seconds if body.idle_timeout_seconds is None else body.idle_timeout_seconds
    lifetime = (
        s.default_max_lifetime_seconds if body.max_lifetime_seconds is None else body.max_lifetime_seconds
    )
    errors = []
    if not s.min_idle_timeout_seconds <= idle <= s.max_idle_timeout_seconds:
        errors.append(
            {
                "field": "idle_timeout_seconds",
                "message": f"must be between {s.min_idle_timeout_seconds} and {s.max_idle_timeout_seconds}",
            }
        )
    if not s.min_max_lifetime_seconds <= lifetime <= s.max_max_lifetime_seconds:
        errors.append(
            {
                "field": "max_lifetime_seconds",
                "message": f"must be between {s.min_max_lifetime_seconds} and {s.max_max_lifetime_seconds}",
            }
        )
    if errors:
        raise ValidationFailed(errors)
    return idle, lifetime


def check_metadata_size(metadata: dict[str, Any], limit: int) -> None:
    """413 when the metadata, encoded as JSON, exceeds `limit` bytes."""
    size = len(jsonio.dumps(metadata))
    if size > limit:
        raise MetadataTooLarge(size, limit)


def bound_elsewhere(session_principal: str | None, caller_principal: str | None) -> bool:
    """True when the session is bound to a principal and the caller acts for a different one."""
    return (
        caller_principal is not None
        and session_principal is not None
        and session_principal != caller_principal
    )
