"""`session-broker serve|migrate|openapi`: the process entry points."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvicorn

from app.config import ConfigurationError, Settings, load_settings

log = logging.getLogger("session_broker")
EXIT_CONFIG = 2


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for name in ("host", "port", "workers", "data_dir", "database_url", "log_level"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return load_settings(**overrides)


def _configure_logging(settings: Settings) -> None:
    from app.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format.value)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def serve(settings: Settings) -> None:
    """Start the embedded database if no URL is set, migrate if configured, then run uvicorn."""
    from app.embedded import EmbeddedPostgres
    from app.http.protocol import BoundedHttpToolsProtocol
    from app.main import check_configuration, create_app
    from app.migrate import upgrade

    check_configuration(settings)  # e.g. refuse an unauthenticated non-loopback bind before starting anything
    # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal with the handler that was
    # installed before it started. Make that handler a clean exit, so `finally` stops the embedded
    # database and the process exits 0 (Kubernetes and systemd read a signal death as a crash).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    embedded = EmbeddedPostgres(settings.data_dir) if settings.uses_embedded_database else None
    try:
        url = embedded.url if embedded else settings.database_url.get_secret_value()  # type: ignore[union-attr]
        if settings.should_auto_migrate:
            upgrade(url)
            log.info("schema migrated to head")
        server_options: dict[str, Any] = {
            "host": settings.host,
            "port": settings.port,
            "log_config": None,  # our JSON/text logging, configured above
            "access_log": False,  # AccessLogMiddleware writes one structured line per request
            "timeout_graceful_shutdown": 20,
            "server_header": False,
            # Limits on what a client may send and how long it may take (app/http/protocol.py).
            "http": BoundedHttpToolsProtocol,
            "limit_concurrency": settings.http_max_connections,
        }
        if settings.workers == 1:
            app = create_app(settings, database_url=url)
            _DrainingServer(uvicorn.Config(app, **server_options), app).run()
        else:
            # Workers re-read settings from the environment: hand them the resolved database URL and what
            # the command line overrode, and give prometheus-client a shared directory so /metrics
            # aggregates every worker.
            os.environ["SESSION_BROKER_DATABASE_URL"] = url
            os.environ["SESSION_BROKER_LOG_LEVEL"] = settings.log_level
            os.environ.setdefault(
                "PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="session-broker-metrics-")
            )
            from app.metrics import prepare_multiprocess_dir

            prepare_multiprocess_dir()
            uvicorn.run("app.main:worker_app", factory=True, workers=settings.workers, **server_options)
    finally:
        if embedded is not None:
            embedded.stop()


class _DrainingServer(uvicorn.Server):
    """uvicorn, plus: the moment a shutdown signal arrives, tell long-lived responses (event streams) to
    finish, so the graceful drain is not held up until its timeout by clients that never hang up.
    (With several workers uvicorn owns the worker servers; streams then end at the drain timeout.)"""

    def __init__(self, config: Any, app: Any) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: Any) -> None:
        runtime = self._app.broker.runtime_
        if runtime is not None:
            runtime.loop.call_soon_threadsafe(runtime.stopping.set)
        super().handle_exit(sig, frame)


def purge(settings: Settings) -> None:
    """One purge run (Kubernetes CronJob style), whatever PURGE_ENABLED says; prints what it deleted."""
    import asyncio
    import json

    from app.db import Database
    from app.embedded import EmbeddedPostgres
    from app.purge import purge_once

    embedded = EmbeddedPostgres(settings.data_dir) if settings.uses_embedded_database else None
    url = embedded.url if embedded else settings.database_url.get_secret_value()  # type: ignore[union-attr]

    async def run() -> dict[str, Any]:
        db = Database(settings, url)
        await db.open()
        try:
            # Metrics of this short-lived process would reach no one: the database is the record.
            return (await purge_once(db, settings, publish=False)).summary()
        finally:
            await db.close()

    try:
        print(json.dumps(asyncio.run(run())))
    finally:
        if embedded is not None:
            embedded.stop()


def migrate(settings: Settings) -> None:
    from app.embedded import EmbeddedPostgres
    from app.migrate import head_revision, upgrade

    embedded = EmbeddedPostgres(settings.data_dir) if settings.uses_embedded_database else None
    try:
        url = embedded.url if embedded else settings.database_url.get_secret_value()  # type: ignore[union-attr]
        upgrade(url)
        print(f"schema at head revision {head_revision()}")
    finally:
        if embedded is not None:
            embedded.stop()


def write_openapi(output: Path | None) -> None:
    from app.http.openapi import openapi_yaml
    from app.main import create_app

    # The document depends on code only: build the app with neutral settings and no database.
    settings = load_settings(host="127.0.0.1", api_keys=None, api_keys_file=None, admin_api_keys=None)
    text = openapi_yaml(create_app(settings, database_url="postgresql://openapi.invalid/unused"))
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        print(f"wrote {output}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="session-broker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="run the HTTP service")
    serve_cmd.add_argument("--host", help="bind address (SESSION_BROKER_HOST, default 127.0.0.1)")
    serve_cmd.add_argument("--port", type=int, help="port (SESSION_BROKER_PORT, default 8080)")
    serve_cmd.add_argument("--workers", type=int, help="uvicorn worker processes (SESSION_BROKER_WORKERS)")
    serve_cmd.add_argument("--data-dir", help="embedded database directory (SESSION_BROKER_DATA_DIR)")
    serve_cmd.add_argument("--database-url", help="PostgreSQL URL (SESSION_BROKER_DATABASE_URL)")
    serve_cmd.add_argument("--log-level", help="SESSION_BROKER_LOG_LEVEL")

    migrate_cmd = commands.add_parser("migrate", help="upgrade the database schema to head and exit")
    migrate_cmd.add_argument("--data-dir", help="embedded database directory (SESSION_BROKER_DATA_DIR)")
    migrate_cmd.add_argument("--database-url", help="PostgreSQL URL (SESSION_BROKER_DATABASE_URL)")

    purge_cmd = commands.add_parser(
        "purge", help="purge ended sessions, tombstones and old events once, and exit"
    )
    purge_cmd.add_argument("--data-dir", help="embedded database directory (SESSION_BROKER_DATA_DIR)")
    purge_cmd.add_argument("--database-url", help="PostgreSQL URL (SESSION_BROKER_DATABASE_URL)")

    openapi_cmd = commands.add_parser("openapi", help="print (or write) the OpenAPI document")
    openapi_cmd.add_argument("--output", type=Path, help="file to write, e.g. openapi.yaml")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "openapi":
            write_openapi(args.output)
            return
        settings = _settings(args)
        _configure_logging(settings)
        if args.command == "serve":
            serve(settings)
        elif args.command == "migrate":
            migrate(settings)
        elif args.command == "purge":
            purge(settings)
    except ConfigurationError as error:
        print(f"session-broker: {error}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


if __name__ == "__main__":
    main()
