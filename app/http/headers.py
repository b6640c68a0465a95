"""Reading request headers the same way on every route, the hot paths included.

Authorization and Session-Principal decide who a request acts for, and Idempotency-Key whether a create
happens at all, so each must appear at most once: a second copy is refused with 400 rather than resolved
by "first wins" or "last wins", which different proxies and frameworks disagree on.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

from app.auth import KeyRing
from app.errors import DuplicateHeader, ValidationFailed
from app.schemas import normalise_principal

AUTHORIZATION = b"authorization"
SESSION_PRINCIPAL = b"session-principal"
CONTENT_TYPE = b"content-type"
IDEMPOTENCY_KEY = b"idempotency-key"
_ONCE_ONLY = {
    AUTHORIZATION: "Authorization",
    SESSION_PRINCIPAL: "Session-Principal",
    IDEMPOTENCY_KEY: "Idempotency-Key",
}
# Like session ids: 1-255 visible ASCII characters (UUIDs, ULIDs, random tokens all fit).
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)

Scope = MutableMapping[str, Any]


def read_headers(scope: Scope, names: frozenset[bytes]) -> dict[bytes, bytes]:
    """The value of each header in `names` that the request has (the first copy of any other header);
    400 when Authorization or Session-Principal appears twice."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in names:
            if name not in found:
                found[name] = value
            elif name in _ONCE_ONLY:
                raise DuplicateHeader(_ONCE_ONLY[name])
    return found


def authorization_of(headers: dict[bytes, bytes]) -> str | None:
    value = headers.get(AUTHORIZATION)
    return None if value is None else value.decode("latin-1")


def authenticate_tenant(scope: Scope, keys: KeyRing, headers: dict[bytes, bytes]) -> str:
    """The tenant of the request's API key (401/403 otherwise), recorded for the access log."""
    tenant = keys.tenant_for(authorization_of(headers))
    scope.setdefault("state", {})["tenant"] = tenant
    return tenant


def principal_of(headers: dict[bytes, bytes]) -> str | None:
    """The principal the caller acts for, or None when it sends none (or only whitespace). The header is
    UTF-8 (a principal such as `josé@example` must match the one a session was created with) and is
    normalised like the stored principal (`normalise_principal`)."""
    value = headers.get(SESSION_PRINCIPAL)
    if value is None:
        return None
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationFailed.one("Session-Principal", "must be UTF-8 text") from None
    return normalise_principal(text) or None


def content_type_of(headers: dict[bytes, bytes]) -> str:
    return headers.get(CONTENT_TYPE, b"").decode("latin-1")


def idempotency_key_of(headers: dict[bytes, bytes]) -> str | None:
    """The request's Idempotency-Key (app/idempotency.py), or None; 422 naming the header when it cannot
    be one."""
    value = headers.get(IDEMPOTENCY_KEY)
    if value is None:
        return None
    key = value.decode("latin-1")
    if _IDEMPOTENCY_KEY.match(key) is None:
        raise ValidationFailed.one("Idempotency-Key", "must be 1-255 visible ASCII characters")
    return key
