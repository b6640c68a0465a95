"""Group touch: concurrent touches in one process share one SQL statement.

Not write-behind (lesson 3: Keycloak's background batching lost). Every request still waits for the
database's answer about its own session before it responds; the only difference is that touches that
arrive while a statement is already running ride together in the next one, like group commit. Nothing
waits when there is no concurrency: a lone touch is sent at once, as a single-row statement.

Why: a throttled touch is cheap for PostgreSQL but each statement has a fixed cost (protocol, snapshot,
executor start-up, commit) that dominated the realistic workload; bundling N touches into one
`... FROM unnest(...)` statement pays it once (lessons.md, "Measured": ~21 us per touch bundled vs
~130-170 us alone).

Rules that keep each answer exactly what a single touch would have answered:
- identical touches (same tenant, id and principal) in one batch share one row and one answer;
- the same session with different principals goes into different batches (one row per session);
- rows that need a write are locked in (tenant, id) order, the order every multi-row writer here uses,
  so concurrent batches cannot deadlock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from app.db import Database
from app.repository import SessionRepository, TouchOutcome

log = logging.getLogger(__name__)

MAX_BATCH = 256  # sessions per statement
MAX_IN_FLIGHT = 4  # concurrent statements per process: keeps some parallelism in PostgreSQL

TouchKey = tuple[str, str, str | None]  # tenant, session id, principal binding


class TouchBatcher:
    """Per-process coalescing of touches; `touch()` is awaited by each request."""

    def __init__(self, db: Database, granularity_seconds: Callable[[], float]) -> None:
        self._db = db
        self._granularity = granularity_seconds
        self._pending: dict[TouchKey, list[asyncio.Future[TouchOutcome]]] = {}
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def touch(self, tenant: str, session_id: str, principal: str | None) -> TouchOutcome:
        future: asyncio.Future[TouchOutcome] = asyncio.get_running_loop().create_future()
        self._pending.setdefault((tenant, session_id, principal), []).append(future)
        if self._in_flight < MAX_IN_FLIGHT:
            self._start()
        return await future

    def _start(self) -> None:
        batch: dict[TouchKey, list[asyncio.Future[TouchOutcome]]] = {}
        sessions: set[tuple[str, str]] = set()
        for key in list(self._pending):
            if len(batch) == MAX_BATCH:
                break
            if key[:2] in sessions:
                continue  # same session, another principal: next batch
            sessions.add(key[:2])
            batch[key] = self._pending.pop(key)
        if not batch:
            return
        self._in_flight += 1
        task = asyncio.create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: dict[TouchKey, list[asyncio.Future[TouchOutcome]]]) -> None:
        try:
            keys = list(batch)
            async with self._db.connection("touch") as connection:
                repo = SessionRepository(connection)
                granularity = self._granularity()
                if len(keys) == 1:
                    tenant, session_id, principal = keys[0]
                    outcomes = [
                        await repo.touch(
                            tenant, session_id, principal=principal, granularity_seconds=granularity
                        )
                    ]
                else:
                    outcomes = await repo.touch_many(keys, granularity_seconds=granularity)
            for key, outcome in zip(keys, outcomes, strict=True):
                for future in batch[key]:
                    if not future.done():  # the request may have been cancelled (client gone)
                        future.set_result(outcome)
        except BaseException as error:
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(error)
            if not isinstance(error, Exception):
                raise
        finally:
            self._in_flight -= 1
            if self._pending:
                self._start()
