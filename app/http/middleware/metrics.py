"""HTTP metrics by route template (probes and the scrape endpoint excluded)."""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from app import collectors, metrics
from app.http.route_template import path_within_root, route_template

Scope = MutableMapping[str, Any]

#: Probe and scrape endpoints are left out of the HTTP metrics (they would dominate every rate).
EXCLUDED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STATUS_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
_EVENT_STREAM = (b"content-type", b"text/event-stream; charset=utf-8")


class MetricsMiddleware:
    """Records `session_broker_http_*` for every request but probes."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or path_within_root(scope) in EXCLUDED_PATHS:
            await self.app(scope, receive, send)
            return

        status = 500
        outer_root_path = scope.get("root_path", "")
        headers_sent_after: float | None = None  # set for event streams: their latency is time to headers

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status, headers_sent_after
            if message["type"] == "http.response.start":
                status = message["status"]
                if _EVENT_STREAM in message.get("headers", ()):
                    headers_sent_after = time.perf_counter() - start
            await send(message)

        method = scope["method"] if scope["method"] in HTTP_METHODS else "other"
        start = time.perf_counter()
        collectors.HTTP_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            collectors.HTTP_IN_FLIGHT.dec()
            # A stream stays open for minutes; its "latency" is how fast it started, or it would drown
            # the latency histogram (and the p99 alert) in connection lifetimes.
            metrics.observe_http_request(
                route_template(scope, outer_root_path),
                method,
                _STATUS_CLASS.get(status // 100, "5xx"),
                elapsed if headers_sent_after is None else headers_sent_after,
            )
