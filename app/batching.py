"""Group statements: concurrent touches (or creates) in one process share one SQL statement.

Not write-behind (Keycloak built background batching of touches and removed it; docs/design.md,
"Group statements"). Every request still waits for the
database's answer about its own session before it responds; the only difference is that requests that
arrive while a statement is already running ride together in the next one, like group commit. Nothing
waits when there is no concurrency: a lone request is sent at once, as a single-row statement.

Why: the fixed cost of a statement (protocol, snapshot, executor start-up, commit) dominated; bundling N
rows into one `... FROM unnest(...)` statement pays it once (measured: ~21 us of database time per touch
bundled vs ~130-170 us alone; docs/design.md, "Group statements").

Rules that keep each answer exactly what a single statement would have answered:
- identical requests (same key) in one batch share one row and one answer (touch: same tenant, id and
  principal);
- requests whose `conflict` key is equal go into different batches (touch: one row per session);
- rows that need a write are locked in (tenant, id) order, the order every multi-row writer here uses,
  so concurrent batches cannot deadlock (see `app/sql/touch.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

MAX_BATCH = 256  # rows per statement
MAX_IN_FLIGHT = 4  # concurrent statements per process: keeps some parallelism in PostgreSQL

Key = TypeVar("Key", bound=Hashable)
Result = TypeVar("Result")


class StatementBatcher(Generic[Key, Result]):
    """Per-process coalescing of one kind of request; `submit()` is awaited by each request.

    `run_batch(keys)` executes one statement for distinct keys and returns one result per key, in order.
    `conflict(key)` names what may appear only once per statement; `group(key)` what every key of one
    statement shares (the tenant: no statement spans tenants, so each could run on the tenant's shard;
    docs/scaling.md).
    """

    def __init__(
        self,
        run_batch: Callable[[list[Key]], Awaitable[list[Result]]],
        conflict: Callable[[Key], Hashable] = lambda key: key,
        group: Callable[[Key], Hashable] = lambda key: None,
    ) -> None:
        self._run_batch = run_batch
        self._conflict = conflict
        self._group = group
        self._pending: dict[Key, list[asyncio.Future[Result]]] = {}
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, key: Key) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        waiting = self._pending.setdefault(key, [])
        waiting.append(future)
        if self._in_flight < MAX_IN_FLIGHT:
            self._start()
        try:
            return await future
        except asyncio.CancelledError:
            # The request gave up (its deadline passed, or its client left): if its key is still queued,
            # it no longer needs a row in the next statement.
            if self._pending.get(key) is waiting:
                waiting.remove(future)
                if not waiting:
                    del self._pending[key]
            raise

    def _start(self) -> None:
        batch: dict[Key, list[asyncio.Future[Result]]] = {}
        taken: set[Hashable] = set()
        group: Hashable = None
        for key in list(self._pending):
            if len(batch) == MAX_BATCH:
                break
            if not batch:
                group = self._group(key)  # the oldest waiting key decides whose statement this is
            elif self._group(key) != group:
                continue
            conflict = self._conflict(key)
            if conflict in taken:
                continue  # e.g. the same session with another principal: next batch
            taken.add(conflict)
            batch[key] = self._pending.pop(key)
        if not batch:
            return
        self._in_flight += 1
        task = asyncio.create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: dict[Key, list[asyncio.Future[Result]]]) -> None:
        try:
            keys = list(batch)
            results = await self._run_batch(keys)
            for key, result in zip(keys, results, strict=True):
                for future in batch[key]:
                    if not future.done():  # the request may have been cancelled (client gone)
                        future.set_result(result)
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
