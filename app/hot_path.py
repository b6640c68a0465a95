"""The hot paths — touch and create — served without FastAPI's per-request machinery.

Every request a gateway serves touches its session, and every new MCP session is a create, so these
two decide whether gateways can afford the broker. Profiling a worker under load (py-spy, bench
scenario a) showed most of its CPU in FastAPI's router, dependency solving and internal middlewares
rather than in our code or the database. These handlers do exactly what the documented routes
(`routes.touch_session`, `routes.create_session`) do — same auth, body rules, service calls, metrics,
access log and problem responses — without that machinery. The FastAPI routes stay: they are the
OpenAPI definition, and the test suite runs the touch and create tests through both paths
(`create_app(..., hot_paths=False)`) to keep them identical.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, unquote

import orjson
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from app.db import is_unavailable_error
from app.errors import DatabaseUnavailable, InternalError, Problem, problem_response
from app.schemas import SessionCreate, TouchRequest

log = logging.getLogger(__name__)

SESSIONS = "/v1/sessions"
SESSIONS_PREFIX = "/v1/sessions/"
TOUCH_SUFFIX = "/touch"
JSON_TYPES = frozenset({"application/json"})
HEADERS_READ = (b"authorization", b"session-principal", b"content-type")


class _Route:
    """What the metrics and access-log middlewares read from `scope["route"]`."""

    def __init__(self, path: str) -> None:
        self.path = path


TOUCH_ROUTE = _Route("/v1/sessions/{session_id}/touch")
CREATE_ROUTE = _Route("/v1/sessions")


def _path(scope: Scope) -> str:
    raw = scope.get("raw_path")
    return raw.split(b"?", 1)[0].decode("latin-1") if raw else str(scope["path"])


def touch_id_segment(scope: Scope) -> str | None:
    """The still-encoded id if this is `POST /v1/sessions/{id}/touch`, else None."""
    path = _path(scope)
    if not (path.startswith(SESSIONS_PREFIX) and path.endswith(TOUCH_SUFFIX)):
        return None
    segment = path[len(SESSIONS_PREFIX) : -len(TOUCH_SUFFIX)]
    return segment if segment and "/" not in segment else None


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message: Message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_UTC_Z),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


Handler = Callable[[Any, Scope, str, dict[bytes, str], bytes], Awaitable[Response]]


async def _touch(state: Any, scope: Scope, tenant: str, headers: dict[bytes, str], body: bytes) -> Response:
    from app.routes import parse_json_body  # late: routes imports what imports this module

    analytics = parse_json_body(body, headers.get(b"content-type", ""), TouchRequest, JSON_TYPES)
    session_id = unquote(touch_id_segment(scope) or "", errors="replace")
    principal = headers.get(b"session-principal") or None
    touched = await state.service.touch(tenant, session_id, principal, analytics)
    return _json({"id": touched.id, "expires_at": touched.expires_at})


async def _create(state: Any, scope: Scope, tenant: str, headers: dict[bytes, str], body: bytes) -> Response:
    from app.routes import parse_json_body

    request = (
        parse_json_body(body, headers.get(b"content-type", ""), SessionCreate, JSON_TYPES) or SessionCreate()
    )
    session = await state.service.create(tenant, request)
    location = f"{SESSIONS_PREFIX}{quote(session['id'], safe='')}"
    return _json(session, 201, {"ETag": f'"{session["version"]}"', "Location": location})


def hot_handler(scope: Scope) -> tuple[_Route, Handler] | None:
    """Which hot path serves this request, if any."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    if touch_id_segment(scope) is not None:
        return TOUCH_ROUTE, _touch
    if _path(scope) == SESSIONS:
        return CREATE_ROUTE, _create
    return None


class HotPaths:
    """ASGI app for the hot routes only (`hot_handler` must have matched)."""

    def __init__(self, app: Any) -> None:
        self.app = app  # the FastAPI app: keys, service and settings live on its state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = hot_handler(scope)
        assert matched is not None
        route, handler = matched
        scope["route"] = route
        state = self.app.state
        try:
            headers: dict[bytes, str] = {}
            for name, value in scope["headers"]:
                if name in HEADERS_READ:
                    headers[name] = value.decode("latin-1")
            tenant = state.keys.tenant_for(headers.get(b"authorization"))
            scope.setdefault("state", {})["tenant"] = tenant
            response = await handler(state, scope, tenant, headers, await _read_body(receive))
        except Problem as problem:
            response = problem_response(problem)
        except Exception as error:
            if is_unavailable_error(error):
                response = problem_response(
                    DatabaseUnavailable(
                        "The session store is unavailable; retry later.", state.settings.retry_after_seconds
                    )
                )
            else:
                log.exception("unhandled error on a hot path")
                response = problem_response(
                    InternalError("An unexpected error occurred; it has been logged.")
                )
        await response(scope, receive, send)
