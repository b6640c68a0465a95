"""Every exception becomes its response here, for the FastAPI routes and the hot paths alike.

A `Problem` answers itself; a database failure that escaped `Database.connection()` is still a 503, never
a 500; a client that hung up mid-request gets nothing worth reading; anything else is a logged 500.
Rendering a problem has no side effects: the unavailable-responses counter is counted where a 503 is
decided (`response_for`), once per answer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import BaseRoute

from app import metrics
from app.db import is_unavailable_error
from app.errors import (
    PROBLEM_CONTENT_TYPE,
    DatabaseUnavailable,
    InternalError,
    MethodNotAllowed,
    NotAcceptable,
    Problem,
    RouteNotFound,
    ValidationFailed,
)

log = logging.getLogger(__name__)


def problem_response(problem: Problem) -> Response:
    """RFC 9457 problem+json with the problem's status and headers."""
    return Response(
        problem.render(), status_code=problem.status, headers=problem.headers, media_type=PROBLEM_CONTENT_TYPE
    )


def unavailable(retry_after: int) -> DatabaseUnavailable:
    return DatabaseUnavailable("The session store is unavailable; retry later.", retry_after)


def response_for(error: BaseException, retry_after: int) -> Response:
    """The response to an exception raised while serving a request."""
    if is_unavailable_error(error) and not isinstance(error, Problem):
        error = unavailable(retry_after)  # e.g. raised outside Database.connection(); still never a 500
    if isinstance(error, Problem):
        if isinstance(error, DatabaseUnavailable):
            metrics.count_unavailable()
        return problem_response(error)
    if isinstance(error, ClientDisconnect):
        # The client hung up before its request was complete: nothing was done, and nobody reads this.
        return Response(status_code=400)
    log.error("unhandled error", exc_info=error)
    return problem_response(InternalError("An unexpected error occurred; it has been logged."))


def _validation_problem(error: RequestValidationError) -> ValidationFailed:
    errors = []
    for item in error.errors():
        location = [
            str(part) for part in item.get("loc", ()) if part not in ("query", "header", "path", "body")
        ]
        errors.append({"field": ".".join(location) or "request", "message": str(item.get("msg"))})
    return ValidationFailed(errors)


def _http_problem(request: Request, error: StarletteHTTPException) -> Problem:
    problem: Problem
    if error.status_code == 404:
        problem = RouteNotFound(f"No resource at {request.url.path}.")
    elif error.status_code == 405:
        allowed = _allowed_methods(request)
        problem = MethodNotAllowed(f"{request.method} is not allowed here; allowed: {allowed}.")
        problem.headers["Allow"] = allowed
    elif error.status_code == 406:
        problem = NotAcceptable(str(error.detail))
    else:
        problem = InternalError(str(error.detail))
        problem.status = error.status_code  # type: ignore[misc]
    problem.headers = {**(error.headers or {}), **problem.headers}
    return problem


def _leaf_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    for route in routes:
        inner = getattr(route, "original_router", None)  # FastAPI keeps included routers nested
        if inner is not None:
            yield from _leaf_routes(inner.routes)
        else:
            yield route


def _allowed_methods(request: Request) -> str:
    """Every method any route serves at this path (Starlette reports only the first partial match)."""
    path = request.scope["path"]
    methods: set[str] = set()
    for route in _leaf_routes(request.app.router.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods.update(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def install_exception_handlers(app: FastAPI, retry_after: int) -> None:
    """FastAPI's handlers, each mapping its exception onto a problem and answering through `response_for`."""

    async def on_error(request: Request, error: Exception) -> Response:
        if isinstance(error, RequestValidationError):
            error = _validation_problem(error)
        elif isinstance(error, StarletteHTTPException):
            error = _http_problem(request, error)
        return response_for(error, retry_after)

    for kind in (Problem, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, on_error)
