"""Who the request is for: the principal the broker binds a session to.

The default reads the user that the SDK's bearer-auth middleware put in `scope["user"]` and builds the
same owner identity the SDK uses for its own session binding (`principal_components()` in
`mcp/server/auth/provider.py`), written `issuer|subject|client_id`. That user exists only inside the
auth middleware, which is why `BrokerSessionMiddleware` must be placed inside it.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
PrincipalFn = Callable[[Scope], str | None]


def _access_token(scope: Scope) -> Any:
    user = scope.get("user")
    token = getattr(user, "access_token", None)
    return token if token is not None and getattr(user, "is_authenticated", False) else None


def sdk_principal(scope: Scope) -> str | None:
    """`issuer|subject|client_id` of the SDK's authenticated user (empty parts when the token verifier
    supplies no issuer or subject), or None on an unauthenticated request."""
    token = _access_token(scope)
    if token is None:
        return None
    from mcp.server.auth.provider import principal_components

    client_id, issuer, subject = principal_components(token)
    return f"{issuer or ''}|{subject or ''}|{client_id}"


def sdk_client_id(scope: Scope) -> str | None:
    """The OAuth client id of the SDK's authenticated user (the broker's per-client quota key)."""
    token = _access_token(scope)
    client_id = getattr(token, "client_id", None)
    return client_id if isinstance(client_id, str) and client_id else None
