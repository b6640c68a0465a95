"""Route `/v1/sessions/...` on the raw, still percent-encoded path."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

SESSIONS_PREFIX = b"/v1/sessions/"


class RawSessionPathMiddleware:
    """Route `/v1/sessions/...` on the raw (still percent-encoded) path.

    Servers hand routing a decoded `path`, where an id containing `%2F` has become a `/` and can no longer
    be told apart from a path separator. MCP ids may contain `/ ? # % +`, so for session paths we route on
    `raw_path` and the handlers percent-decode the id segment exactly once.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path")
            if raw and raw.startswith(SESSIONS_PREFIX) and b"%" in raw:
                # Mutate in place: routing stores the matched route in this same scope, and the metrics and
                # access-log middlewares outside read it from there. Some clients' ASGI transports leave
                # the query string in raw_path; a literal "?" always
                # starts the query, since an id's own "?" arrives percent-encoded.
                scope["path"] = raw.split(b"?", 1)[0].decode("latin-1")
        await self.app(scope, receive, send)
