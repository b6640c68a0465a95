"""The application's state, typed: what `create_app` resolves at build time, and what the lifespan opens.

Routes reach it through `app.http.deps`; the hot paths and the CLI through `SessionBrokerApp.broker`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from app.analytics import RequestAnalytics
from app.auth import KeyRing
from app.config import Settings
from app.db import Database
from app.quotas import Quotas
from app.read_replica import Reads
from app.service import SessionService
from app.stats import Stats


@dataclass(frozen=True, slots=True)
class Runtime:
    """What the lifespan opens and closes: the pool and what works on it."""

    db: Database
    service: SessionService
    stats: Stats
    analytics: RequestAnalytics
    reads: Reads  # the primary, or a standby for reads that tolerate bounded staleness
    stopping: asyncio.Event  # set at shutdown: long-lived responses (event streams) finish
    loop: asyncio.AbstractEventLoop


@dataclass(slots=True)
class BrokerState:
    settings: Settings
    keys: KeyRing
    quotas: Quotas
    schema_head: str
    known_revisions: frozenset[str]
    runtime_: Runtime | None = None

    @property
    def runtime(self) -> Runtime:
        if self.runtime_ is None:
            raise RuntimeError("the application has not started (its lifespan opens the database)")
        return self.runtime_
