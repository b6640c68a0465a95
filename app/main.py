"""`create_app()`: the lifespan owns the pool and background tasks; routers; the one error renderer."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from app import metrics
from app.analytics import flush_loop
from app.asgi import BodyLimitMiddleware, RawSessionPathMiddleware
from app.auth import KeyRing
from app.config import Settings, get_settings
from app.db import Database, is_unavailable_error
from app.errors import (
    DatabaseUnavailable,
    InternalError,
    MethodNotAllowed,
    NotAcceptable,
    Problem,
    RouteNotFound,
    ValidationFailed,
    problem_response,
)
from app.fleet_gauges import gauges_loop
from app.hot_path import HotPaths, hot_handler
from app.logs import AccessLogMiddleware
from app.migrate import head_revision, known_revisions
from app.openapi_docs import build_openapi, problem_responses
from app.purge import purge_loop
from app.repository import SessionRepository
from app.routes import admin_router, router
from app.schemas import Health
from app.service import SessionService

log = logging.getLogger(__name__)

API_DESCRIPTION = """\
Session and state-handle broker for fleets of MCP gateways: create, register, touch, read, update, end,
list and count sessions over HTTP, stored in PostgreSQL, so any gateway replica can serve any session.

Every `/v1` call needs `Authorization: Bearer <api key>`; the key selects the tenant. Errors are RFC 9457
`application/problem+json` with a stable `type`. A database outage is `503` with `Retry-After`, never `404`.
Session ids in paths are percent-encoded; ids may contain `/ ? # % +` and round-trip exactly.
"""
POOL_STATS_INTERVAL_SECONDS = 5.0
READINESS_TIMEOUT_SECONDS = 2.0


async def _on_problem(request: Request, error: Exception) -> Response:
    assert isinstance(error, Problem)
    return problem_response(error)


async def _on_validation(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    errors = []
    for item in error.errors():
        location = [
            str(part) for part in item.get("loc", ()) if part not in ("query", "header", "path", "body")
        ]
        errors.append({"field": ".".join(location) or "request", "message": str(item.get("msg"))})
    return problem_response(ValidationFailed(errors))


async def _on_http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
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
    return problem_response(problem)


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


async def _on_unexpected(request: Request, error: Exception) -> Response:
    if isinstance(error, ClientDisconnect):  # the client hung up mid-request: nobody to answer, not a bug
        return Response(status_code=400)
    if is_unavailable_error(error):  # e.g. raised outside Database.connection(); still never a 500
        settings: Settings = request.app.state.settings
        return problem_response(
            DatabaseUnavailable(
                "The session store is unavailable; retry later.", settings.retry_after_seconds
            )
        )
    log.exception("unhandled error on %s %s", request.method, request.scope.get("route", None))
    return problem_response(InternalError("An unexpected error occurred; it has been logged."))


async def _publish_pool_stats(db: Database) -> None:
    while True:
        metrics.set_pool_stats(*db.pool_stats())
        await asyncio.sleep(POOL_STATS_INTERVAL_SECONDS)


class SessionBrokerApp(FastAPI):
    """FastAPI, plus the touch and create hot paths in front of it (see hot_path.py)."""

    hot_paths: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.hot_paths is not None and hot_handler(scope) is not None:
            await self.hot_paths(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _freeze_startup_objects() -> None:
    """Move everything alive after start-up (modules, the app, routes, pydantic models: ~100k objects)
    out of the cyclic garbage collector's reach. Each full collection traversed all of them and stopped
    the event loop for 65-90 ms, several times in a 10 s benchmark window; that stall was the service's p99.
    They live as long as the process anyway. Collect first so no garbage is frozen."""
    gc.collect()
    gc.freeze()


def create_app(
    settings: Settings | None = None, database_url: str | None = None, *, hot_paths: bool = True
) -> FastAPI:
    """Build the ASGI app. `database_url` overrides settings (the CLI passes the embedded server's URL).
    `hot_paths=False` serves touch and create through FastAPI too (tests use it to prove both agree)."""
    settings = settings or get_settings()
    keys = KeyRing.from_settings(settings)  # raises ConfigurationError before anything starts
    url = database_url or (settings.database_url.get_secret_value() if settings.database_url else None)
    if url is None:
        raise RuntimeError("no database URL: `session-broker serve` starts the embedded PostgreSQL")
    if not keys.auth_enabled:
        log.warning(
            "no API keys configured: serving WITHOUT authentication as tenant 'default' "
            "(allowed only because SESSION_BROKER_HOST=%s is loopback)",
            settings.host,
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings, url)
        db.query_observer = metrics.observe_db_query
        await db.open()
        app.state.db = db
        app.state.service = SessionService(db, settings)
        app.state.stopping = asyncio.Event()
        app.state.loop = asyncio.get_running_loop()
        tasks = [
            asyncio.create_task(_publish_pool_stats(db), name="pool-stats"),
            asyncio.create_task(gauges_loop(db, settings), name="fleet-gauges"),
            asyncio.create_task(flush_loop(app.state.service.analytics, db), name="analytics"),
        ]
        if settings.purge_enabled:
            tasks.append(asyncio.create_task(purge_loop(db, settings), name="purge"))
        _freeze_startup_objects()
        try:
            yield
        finally:
            app.state.stopping.set()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(Exception):  # best effort: the database may be the reason we stop
                await app.state.service.analytics.flush(db)
            await db.close()
            gc.unfreeze()  # an app that stops inside a longer-lived process (tests) leaves nothing pinned

    app = SessionBrokerApp(
        title="Session Broker",
        version="1.0.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.settings = settings
    app.state.keys = keys
    app.state.schema_head = head_revision()
    app.state.known_revisions = known_revisions()
    metrics.register_tenants(keys.tenants or ["default"])

    app.include_router(router)
    app.include_router(admin_router)
    app.add_api_route("/healthz", healthz, methods=["GET"], response_model=Health, tags=["operations"])
    app.add_api_route(
        "/readyz",
        readyz,
        methods=["GET"],
        response_model=Health,
        responses=problem_responses(503),
        tags=["operations"],
    )
    app.add_api_route(
        "/metrics",
        metrics_endpoint,
        methods=["GET"],
        response_class=Response,
        responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}},
        tags=["operations"],
    )

    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)

    # Outermost last: access log sees the final status; metrics by route template; the path rewrite
    # must run before routing; the body limit before any handler reads a body.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_metadata_bytes + 64 * 1024)
    app.add_middleware(RawSessionPathMiddleware)
    app.add_middleware(metrics.MetricsMiddleware)
    app.add_middleware(AccessLogMiddleware)

    if hot_paths:
        # The same outer middlewares as every other route (access log, metrics, body limit), around the
        # lean handler instead of FastAPI's stack.
        app.hot_paths = AccessLogMiddleware(
            metrics.MetricsMiddleware(
                BodyLimitMiddleware(HotPaths(app), max_body_bytes=settings.max_metadata_bytes + 64 * 1024)
            )
        )

    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    return app


async def healthz() -> Response:
    """Liveness: the process answers. Never touches the database."""
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    """Readiness: the database answers and its schema is at this build's head revision."""
    db: Database = request.app.state.db
    settings: Settings = request.app.state.settings
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS), db.connection() as connection:
            revision = await SessionRepository(connection).schema_revision()
    except (DatabaseUnavailable, TimeoutError) as error:
        detail = error.detail if isinstance(error, DatabaseUnavailable) else "database did not answer in time"
        return problem_response(DatabaseUnavailable(detail, settings.retry_after_seconds))
    # Ready at our head, and also at a revision we do not know: that is a newer release's schema during a
    # rolling upgrade (migrations are additive, expand-then-contract), and refusing it would leave no
    # ready pod between the pre-upgrade migration and the new pods. An older known revision is not ready.
    if revision != request.app.state.schema_head and revision in request.app.state.known_revisions:
        return problem_response(
            DatabaseUnavailable(
                f"schema is at revision {revision!r}, this build needs {request.app.state.schema_head!r}; "
                "run `session-broker migrate`",
                settings.retry_after_seconds,
            )
        )
    if revision is None:
        return problem_response(
            DatabaseUnavailable(
                "schema is not installed; run `session-broker migrate`", settings.retry_after_seconds
            )
        )
    return Response(b'{"status":"ready"}', media_type="application/json")


async def metrics_endpoint(request: Request) -> Response:
    db: Database = request.app.state.db
    metrics.set_pool_stats(*db.pool_stats())
    body, content_type = metrics.render_metrics()
    return Response(body, media_type=content_type)
