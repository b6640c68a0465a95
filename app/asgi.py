"""Small pure-ASGI middlewares (pure ASGI rather than BaseHTTPMiddleware: they sit on the touch path)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PROBLEM_CONTENT_TYPE, PayloadTooLarge

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


class BodyLimitMiddleware:
    """Refuse request bodies over a bound with 413 before a handler buffers them."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_body_bytes:
                    await self._reject(send)
                    return
                break

        received = 0
        limit = self.max_body_bytes

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"The request body exceeds {limit} bytes.")
            return message

        await self.app(scope, limited_receive, send)

    async def _reject(self, send: Send) -> None:
        body = PayloadTooLarge(f"The request body exceeds {self.max_body_bytes} bytes.").render()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
