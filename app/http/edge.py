"""`SessionBrokerApp` and the one middleware stack every request passes, the hot paths included.

Outermost first: the access log (sees the final status), HTTP metrics (by route template), the raw
session path (must run before routing), the body limit (before any handler reads a body). Inside them a
request goes to the lean hot path when it is a touch or a create, else to FastAPI.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from app.http.hot_path import HotPaths, hot_handler
from app.http.middleware.access_log import AccessLogMiddleware
from app.http.middleware.body_limit import BodyLimitMiddleware
from app.http.middleware.metrics import MetricsMiddleware
from app.http.middleware.raw_path import RawSessionPathMiddleware
from app.state import BrokerState

# Room for the envelope around the largest metadata a body may carry.
BODY_ENVELOPE_BYTES = 64 * 1024


def edge_stack(inner: ASGIApp, max_body_bytes: int) -> ASGIApp:
    return AccessLogMiddleware(
        MetricsMiddleware(RawSessionPathMiddleware(BodyLimitMiddleware(inner, max_body_bytes=max_body_bytes)))
    )


class SessionBrokerApp(FastAPI):
    """FastAPI behind the edge stack, with the touch and create hot paths beside its router."""

    def __init__(self, broker: BrokerState, *, hot_paths: bool, **options: Any) -> None:
        super().__init__(**options)
        self.broker = broker
        self._hot_paths = HotPaths(broker) if hot_paths else None
        self._edge = edge_stack(self._dispatch, broker.settings.max_metadata_bytes + BODY_ENVELOPE_BYTES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._edge(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._hot_paths is not None and hot_handler(scope) is not None:
            await self._hot_paths(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)
