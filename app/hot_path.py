"""The touch hot path: `POST /v1/sessions/{id}/touch` served without FastAPI's per-request machinery.

Every request a gateway serves touches its session, so touch throughput decides whether gateways can
afford the broker. Profiling a worker under load (py-spy, bench scenario a) showed most of its CPU in
FastAPI's router, dependency solving and internal middlewares rather than in our code or the database.
This handler does exactly what the documented route (`routes.touch_session`) does — same auth, body
rules, service call, metrics, access log and problem responses — with none of that machinery. The
FastAPI route stays: it is the OpenAPI definition, and the test suite runs the touch tests through both
paths (`create_app(..., hot_paths=False)`) to keep them identical.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote

import orjson
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from app.db import is_unavailable_error
from app.errors import DatabaseUnavailable, InternalError, Problem, problem_response
from app.schemas import TouchRequest

log = logging.getLogger(__name__)

SESSIONS_PREFIX = "/v1/sessions/"
TOUCH_SUFFIX = "/touch"
JSON_TYPES = frozenset({"application/json"})


class _Route:
    """What the metrics and access-log middlewares read from `scope["route"]`."""

    path = "/v1/sessions/{session_id}/touch"


TOUCH_ROUTE = _Route()


def touch_id_segment(scope: Scope) -> str | None:
    """The still-encoded id if this is `POST /v1/sessions/{id}/touch`, else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    raw = scope.get("raw_path")
    path = raw.split(b"?", 1)[0].decode("latin-1") if raw else scope["path"]
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


class TouchHandler:
    """ASGI app for the touch route only (`touch_id_segment` must have matched)."""

    def __init__(self, app: Any) -> None:
        self.app = app  # the FastAPI app: keys, service and settings live on its state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from app.routes import parse_json_body  # late: routes imports this module's users

        scope["route"] = TOUCH_ROUTE
        state = self.app.state
        try:
            authorization = principal = None
            content_type = ""
            for name, value in scope["headers"]:
                if name == b"authorization":
                    authorization = value.decode("latin-1")
                elif name == b"session-principal":
                    principal = value.decode("latin-1") or None
                elif name == b"content-type":
                    content_type = value.decode("latin-1")
            tenant = state.keys.tenant_for(authorization)
            scope.setdefault("state", {})["tenant"] = tenant
            body = await _read_body(receive)
            analytics = parse_json_body(body, content_type, TouchRequest, JSON_TYPES)
            session_id = unquote(touch_id_segment(scope) or "", errors="replace")
            touched = await state.service.touch(tenant, session_id, principal, analytics)
            payload = orjson.dumps(
                {"id": touched.id, "expires_at": touched.expires_at}, option=orjson.OPT_UTC_Z
            )
            response = Response(payload, media_type="application/json")
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
                log.exception("unhandled error on the touch hot path")
                response = problem_response(
                    InternalError("An unexpected error occurred; it has been logged.")
                )
        await response(scope, receive, send)
