"""`create_app()`: settings and keys resolved at build time, a lifespan that owns the pool and the
background tasks, the routers, and the one exception mapping."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import collectors, metrics, work_metrics
from app.analytics import RequestAnalytics, flush_loop
from app.auth import KeyRing
from app.config import Settings, get_settings
from app.db import Database
from app.fleet_gauges import gauges_loop
from app.http.edge import SessionBrokerApp
from app.http.errors import install_exception_handlers
from app.http.openapi import build_openapi
from app.http.routes import (
    admin,
    analytics,
    collection,
    docs,
    events,
    in_flight,
    leases,
    operations,
    pending,
    sessions,
)
from app.logs import configure_logging
from app.migrate import head_revision, known_revisions
from app.purge import purge_loop
from app.quotas import Quotas
from app.read_replica import Reads
from app.request_limits import RequestLimiter, sync_loop
from app.service import SessionService
from app.state import BrokerState, Runtime
from app.stats import Stats

log = logging.getLogger(__name__)

API_DESCRIPTION = """\
Session and state-handle broker for fleets of MCP gateways: create, register, touch, read, update, end,
list and count sessions over HTTP, stored in PostgreSQL, so any gateway replica can serve any session.

Every `/v1` call needs `Authorization: Bearer <api key>`; the key selects the tenant. Errors are RFC 9457
`application/problem+json` with a stable `type`. A database outage is `503` with `Retry-After`, never `404`.
Session ids in paths are percent-encoded; ids may contain `/ ? # % +` and round-trip exactly.
"""
POOL_STATS_INTERVAL_SECONDS = 5.0


async def _publish_pool_stats(db: Database) -> None:
    while True:
        metrics.set_pool_stats(*db.pool_stats())
        await asyncio.sleep(POOL_STATS_INTERVAL_SECONDS)


def _freeze_startup_objects() -> None:
    """Move everything alive after start-up (modules, the app, routes, pydantic models: ~100k objects)
    out of the cyclic garbage collector's reach. Each full collection traversed all of them and stopped
    the event loop for 65-90 ms, several times in a 10 s benchmark window; that stall was the service's p99.
    They live as long as the process anyway. Collect first so no garbage is frozen."""
    gc.collect()
    gc.freeze()


def _lifespan(broker: BrokerState, database_url: str):  # type: ignore[no-untyped-def]
    settings = broker.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings, database_url)
        db.query_observer = metrics.observe_db_query
        await db.open()
        standby = None
        if settings.read_database_url is not None:
            standby = Database(settings, settings.read_database_url.get_secret_value())
            standby.query_observer = metrics.observe_db_query
            await standby.open()
        reads = Reads(db, standby, settings)
        quotas = broker.quotas
        analytics = RequestAnalytics()
        limiter = RequestLimiter()
        broker.runtime_ = runtime = Runtime(
            db=db,
            service=SessionService(db, settings, quotas, analytics, limiter, reads),
            stats=Stats(db, settings, quotas, analytics, reads),
            analytics=analytics,
            reads=reads,
            stopping=asyncio.Event(),
            loop=asyncio.get_running_loop(),
        )
        tasks = [
            asyncio.create_task(_publish_pool_stats(db), name="pool-stats"),
            asyncio.create_task(gauges_loop(db, settings), name="fleet-gauges"),
            asyncio.create_task(flush_loop(analytics, db), name="analytics"),
            asyncio.create_task(
                sync_loop(limiter, db, settings.request_limit_sync_seconds), name="request-counts"
            ),
        ]
        if settings.purge_enabled:
            tasks.append(asyncio.create_task(purge_loop(db, settings), name="purge"))
        if standby is not None:
            tasks.append(asyncio.create_task(reads.probe_loop(), name="standby-lag"))
        _freeze_startup_objects()
        try:
            yield
        finally:
            runtime.stopping.set()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(Exception):  # best effort: the database may be the reason we stop
                await analytics.flush(db)
            with contextlib.suppress(Exception):
                await limiter.sync(db)
            await db.close()
            if standby is not None:
                await standby.close()
            broker.runtime_ = None
            gc.unfreeze()  # an app that stops inside a longer-lived process (tests) leaves nothing pinned

    return lifespan


def worker_app() -> SessionBrokerApp:
    """The app of one uvicorn worker when `serve` runs several (`uvicorn.run(..., factory=True)`). Each
    worker is a fresh process that inherits nothing of the parent's logging, so it configures logging
    itself from the same settings (the parent hands them over in the environment); without this the
    workers wrote no access log at all."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format.value)
    return create_app(settings)


def check_configuration(settings: Settings) -> tuple[KeyRing, Quotas]:
    """What settings alone cannot validate (keys, per-tenant quotas): ConfigurationError before anything
    starts, in the CLI before the embedded database and in every worker that builds the app."""
    return KeyRing.from_settings(settings), Quotas(settings)


def create_app(
    settings: Settings | None = None, database_url: str | None = None, *, hot_paths: bool = True
) -> SessionBrokerApp:
    """Build the ASGI app. `database_url` overrides settings (the CLI passes the embedded server's URL).
    `hot_paths=False` serves touch and create through FastAPI too (tests use it to prove both agree)."""
    settings = settings or get_settings()
    keys, quotas = check_configuration(settings)
    url = database_url or (settings.database_url.get_secret_value() if settings.database_url else None)
    if url is None:
        raise RuntimeError("no database URL: `session-broker serve` starts the embedded PostgreSQL")
    if not keys.auth_enabled:
        log.warning(
            "no API keys configured: serving WITHOUT authentication as tenant 'default' "
            "(allowed only because SESSION_BROKER_HOST=%s is loopback)",
            settings.host,
        )
    broker = BrokerState(settings, keys, quotas, head_revision(), known_revisions())
    app = SessionBrokerApp(
        broker,
        hot_paths=hot_paths,
        title="Session Broker",
        version="1.0.0",
        description=API_DESCRIPTION,
        lifespan=_lifespan(broker, url),
        openapi_url="/openapi.json",
        docs_url=None,  # served from the package by routes/docs.py
        redoc_url=None,
        # `/v1/sessions/` is not `/v1/sessions`: a 404 problem, not a redirect built from the Host header.
        redirect_slashes=False,
        generate_unique_id_function=lambda route: route.name,
    )
    collectors.register_tenants(keys.tenants or ["default"])
    work_metrics.register_tenants(keys.tenants or ["default"])
    for module in (
        sessions,
        leases,
        in_flight,
        pending,
        collection,
        analytics,
        events,
        admin,
        operations,
        docs,
    ):
        app.include_router(module.router)
    docs.mount_assets(app)
    install_exception_handlers(app, settings.retry_after_seconds)
    app.openapi = lambda: build_openapi(app, settings)  # type: ignore[method-assign]
    return app
