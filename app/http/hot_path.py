"""The hot paths — touch and create — served without FastAPI's per-request machinery.

Every request a gateway serves touches its session, and every new MCP session is a create, so these two
decide whether gateways can afford the broker. Profiling a worker under load (py-spy, bench scenario a)
showed most of its CPU in FastAPI's router, dependency solving and internal middlewares rather than in
this code or the database. This handler matches the two routes itself, reads the request with the same
functions the dependencies use (`headers.py`, `bodies.py`), calls the same handler core as the routes
(`core.py`) and answers exceptions through the same mapping (`errors.py`). The FastAPI routes stay: they
are the OpenAPI definition, and the tests run both paths (`create_app(..., hot_paths=False)`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.http import core
from app.http.bodies import read_body
from app.http.errors import response_for
from app.http.headers import (
    AUTHORIZATION,
    CONTENT_TYPE,
    IDEMPOTENCY_KEY,
    SESSION_PRINCIPAL,
    authenticate_tenant,
    content_type_of,
    idempotency_key_of,
    principal_of,
    read_headers,
)
from app.state import BrokerState

SESSIONS_PREFIX = "/v1/sessions/"
TOUCH_SUFFIX = "/touch"
_HEADERS = frozenset({AUTHORIZATION, SESSION_PRINCIPAL, CONTENT_TYPE})
_CREATE_HEADERS = _HEADERS | {IDEMPOTENCY_KEY}


class _Route:
    """What the metrics and access-log middlewares read from `scope["route"]`, and the headers the
    handler reads (the route's own, as its FastAPI twin reads them)."""

    def __init__(self, path: str, headers: frozenset[bytes]) -> None:
        self.path = path
        self.headers = headers


TOUCH_ROUTE = _Route("/v1/sessions/{session_id}/touch", _HEADERS)
CREATE_ROUTE = _Route(core.SESSIONS_PATH, _CREATE_HEADERS)

Handler = Callable[[BrokerState, Scope, str, dict[bytes, bytes], bytes], Awaitable[Response]]


def _path(scope: Scope) -> str:
    raw = scope.get("raw_path")
    return raw.split(b"?", 1)[0].decode("latin-1") if raw else str(scope["path"])


def _touch_segment(scope: Scope) -> str | None:
    """The still-encoded id if this is `POST /v1/sessions/{id}/touch`, else None."""
    path = _path(scope)
    if not (path.startswith(SESSIONS_PREFIX) and path.endswith(TOUCH_SUFFIX)):
        return None
    segment = path[len(SESSIONS_PREFIX) : -len(TOUCH_SUFFIX)]
    return segment if segment and "/" not in segment else None


async def _touch(
    broker: BrokerState, scope: Scope, tenant: str, headers: dict[bytes, bytes], body: bytes
) -> Response:
    segment = _touch_segment(scope) or ""
    service = broker.runtime.service
    return await core.touch_session(
        service, tenant, segment, principal_of(headers), body, content_type_of(headers)
    )


async def _create(
    broker: BrokerState, scope: Scope, tenant: str, headers: dict[bytes, bytes], body: bytes
) -> Response:
    return await core.create_session(
        broker.runtime.service,
        tenant,
        body,
        content_type_of(headers),
        idempotency_key=idempotency_key_of(headers),
    )


def hot_handler(scope: Scope) -> tuple[_Route, Handler] | None:
    """Which hot path serves this request, if any."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    if _touch_segment(scope) is not None:
        return TOUCH_ROUTE, _touch
    if _path(scope) == core.SESSIONS_PATH:
        return CREATE_ROUTE, _create
    return None


class HotPaths:
    """ASGI app for the hot routes only (`hot_handler` must have matched)."""

    def __init__(self, broker: BrokerState) -> None:
        self.broker = broker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = hot_handler(scope)
        assert matched is not None
        route, handler = matched
        scope["route"] = route
        broker = self.broker
        try:
            headers = read_headers(scope, route.headers)
            tenant = authenticate_tenant(scope, broker.keys, headers)
            body = await read_body(receive, broker.settings.http_body_timeout_seconds)
            response = await handler(broker, scope, tenant, headers, body)
        except Exception as error:
            response = response_for(error, broker.settings.retry_after_seconds)
        await response(scope, receive, send)
