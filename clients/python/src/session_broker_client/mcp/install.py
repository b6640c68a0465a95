"""Placing the middleware inside an existing Starlette app (the SDK's `streamable_http_app()`)."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware

from session_broker_client.client import SessionBroker
from session_broker_client.mcp.middleware import BrokerSessionMiddleware


def install(app: Starlette, *, broker: SessionBroker, **options: Any) -> Starlette:
    """Add `BrokerSessionMiddleware` as the app's innermost middleware, so it runs inside whatever
    authentication middleware the app already has (the SDK's bearer auth sets `scope["user"]` there).

    Starlette's own `add_middleware` would put it outermost, outside auth, where no user is known yet.
    Call this before the app serves its first request (Starlette builds its middleware stack then).
    """
    if app.middleware_stack is not None:
        raise RuntimeError("install the broker middleware before the app starts serving")
    app.user_middleware.append(Middleware(BrokerSessionMiddleware, broker=broker, **options))
    return app
