"""The connection pool, and the one place database failures become `DatabaseUnavailable` (503).

The runtime talks to PostgreSQL through an asyncpg pool: SQLAlchemy owns the schema (models + Alembic),
but a request path through SQLAlchemy Core cost ~250 us of CPU more per request on these machines, which
is the whole budget of a touch (docs/design.md, "Stack"). Every statement lives in `app/sql/`; each runs in
autocommit (one statement, one transaction) unless the caller opens a transaction explicitly.

Failure policy (docs/design.md, "Failure policy"): anything that means "the store cannot answer right
now" — refused or lost connections, pool exhaustion, timeouts, shutdown, failover to a read-only node —
is a 503 with `Retry-After`. It is never allowed to surface as 404/401/500: for MCP a 404 means
"re-initialize", so a false one would make every client of every gateway re-initialize at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import asyncpg

from app import jsonio, metrics
from app.config import Settings
from app.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

# SQLSTATE classes that mean the database is unreachable, overloaded, shutting down, read-only (failover)
# or not migrated: 08 connection, 53 resources, 57 operator intervention (incl. statement timeout 57014),
# 58 system error, 25006 read-only transaction, 42P01 undefined table (schema not there yet),
# 40001/40P01 serialization failure / deadlock (transient by definition).
UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57", "58")
UNAVAILABLE_SQLSTATES = frozenset({"25006", "42P01", "40001", "40P01"})
# A prepared statement missing (26000) or existing twice (42P05) on a connection: asyncpg's statement
# cache behind a transaction pooler that does not keep prepared statements (PgBouncer < 1.21, or without
# max_prepared_statements). A configuration problem, not a bug in the request: 503, and one log line
# that names the setting to change.
PREPARED_STATEMENT_SQLSTATES = frozenset({"26000", "42P05"})


def asyncpg_dsn(url: str) -> str:
    """asyncpg wants plain `postgresql://`; accept the SQLAlchemy spelling too."""
    for prefix in ("postgresql+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


# With a multi-host URL and `target_session_attrs=read-write`, asyncpg raises this when every host it
# reached is read-only: mid-failover or mid-switchover, before a standby has been promoted.
NO_WRITABLE_HOST = asyncpg.TargetServerAttributeNotMatched
# A connection whose protocol state asyncpg itself no longer trusts ("cannot switch to state ...; another
# operation is in progress"): seen when the primary was killed under load, on a connection whose previous
# statement the dying server never finished. It is unusable, not a bug in the request: drop it, answer 503.
BROKEN_CONNECTION = asyncpg.InternalClientError


def is_unavailable_error(error: BaseException) -> bool:
    """True when the error means "cannot reach / use the store now", as opposed to a bug or bad input."""
    if isinstance(
        error,
        (
            OSError,
            TimeoutError,
            asyncio.TimeoutError,
            asyncpg.InterfaceError,
            NO_WRITABLE_HOST,
            BROKEN_CONNECTION,
        ),
    ):
        return True
    if isinstance(error, asyncpg.PostgresError):
        state = getattr(error, "sqlstate", None) or ""
        return (
            state.startswith(UNAVAILABLE_SQLSTATE_PREFIXES)
            or state in UNAVAILABLE_SQLSTATES
            or state in PREPARED_STATEMENT_SQLSTATES
        )
    return False


def error_kind(error: BaseException) -> str:
    """A bounded label for the db errors metric (one of `collectors.DB_ERROR_KINDS`)."""
    state = getattr(error, "sqlstate", None) or ""
    if state in PREPARED_STATEMENT_SQLSTATES:
        return "prepared_statements"
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)) or state == "57014":
        return "timeout"
    if state.startswith("53"):
        return "capacity"
    if state == "25006" or isinstance(error, NO_WRITABLE_HOST):
        return "read_only"
    if state == "42P01":
        return "schema"
    if state in ("40001", "40P01"):
        return "conflict"
    if isinstance(error, (OSError, asyncpg.InterfaceError, BROKEN_CONNECTION)) or state.startswith(
        ("08", "57")
    ):
        return "connection"
    return "other"


async def _init_connection(connection: asyncpg.Connection) -> None:
    # JSON columns decode straight to Python objects with orjson (several times faster than json), with
    # integers past 64 bits kept exact (app/jsonio.py).
    for type_name in ("jsonb", "json"):
        await connection.set_type_codec(
            type_name,
            encoder=lambda value: jsonio.dumps(value).decode(),
            decoder=jsonio.loads,
            schema="pg_catalog",
        )


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool release hook that sends nothing.

    asyncpg's default reset runs `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on
    every release: a second round trip per request, on the hot path. The service never leaves session
    state on a connection (advisory locks are transaction-scoped, no LISTEN, no cursors, no SET), and
    asyncpg still rolls back a transaction left open before calling this hook.
    """


class Database:
    """Owns the asyncpg pool for the app's lifetime; created and closed by the lifespan."""

    def __init__(self, settings: Settings, dsn: str) -> None:
        self._settings = settings
        self._dsn = asyncpg_dsn(dsn)
        self._pool: asyncpg.Pool | None = None
        self.waiting = 0  # requests queued for a connection (pool saturation signal)
        self.query_observer: Callable[[str, float], None] | None = None
        self._releases: set[asyncio.Task[None]] = set()
        self._warned_prepared_statements = False

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("database pool is not open")
        return self._pool

    def _pool_kwargs(self, min_size: int) -> dict[str, Any]:
        settings = self._settings
        return {
            "dsn": self._dsn,
            "min_size": min_size,
            "max_size": settings.db_pool_max_size,
            "timeout": settings.db_connect_timeout_seconds,
            # Client-side statement timeout: works behind PgBouncer, unlike a server-side SET.
            "command_timeout": settings.db_statement_timeout_seconds,
            # 0 disables asyncpg's prepared-statement cache (PgBouncer transaction pooling: the prepared
            # statements of one server connection are not there when the next transaction gets another).
            "statement_cache_size": 1024 if settings.db_prepared_statements else 0,
            "max_inactive_connection_lifetime": 300.0,
            "init": _init_connection,
            "reset": _keep_session,
            "server_settings": {"application_name": "session-broker"},
        }

    async def open(self) -> None:
        """Create the pool. If the database is down at start, open an empty pool and connect lazily, so
        the process still starts, `/readyz` reports 503 and requests get 503 until it comes back."""
        try:
            self._pool = await asyncpg.create_pool(**self._pool_kwargs(self._settings.db_pool_min_size))
        except Exception as error:
            if not is_unavailable_error(error):
                raise
            log.warning(
                "database unreachable at start (%s); will keep retrying per request", type(error).__name__
            )
            self._pool = await asyncpg.create_pool(**self._pool_kwargs(0))

    async def close(self) -> None:
        if self._releases:
            await asyncio.wait(self._releases, timeout=self._settings.db_connect_timeout_seconds)
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), timeout=10)
            except TimeoutError:
                self._pool.terminate()
            self._pool = None

    async def unavailable(self, error: BaseException) -> DatabaseUnavailable:
        lost = isinstance(
            error, (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError, BROKEN_CONNECTION)
        )
        # A read-only answer on a pooled connection means its server is no longer the primary (demoted or
        # fenced in a switchover): reconnecting lets a multi-host URL find the one that is.
        demoted = getattr(error, "sqlstate", None) == "25006"
        if (lost or demoted) and self._pool is not None:
            # Connections to a restarted server are dead: drop them all so recovery needs one round, not
            # one failed request per pooled connection.
            await self._pool.expire_connections()
        kind = type(error).__name__
        label = error_kind(error)
        metrics.count_db_error(label)
        log.warning("database unavailable: %s", kind)
        if label == "prepared_statements" and not self._warned_prepared_statements:
            self._warned_prepared_statements = True
            log.error(
                "the database connection lost asyncpg's prepared statements (%s): a transaction pooler such "
                "as PgBouncer < 1.21 in transaction mode is in front of PostgreSQL. Set "
                "SESSION_BROKER_DB_PREPARED_STATEMENTS=false, or use PgBouncer >= 1.21 with "
                "max_prepared_statements > 0. Requests answer 503 until then.",
                kind,
            )
        return DatabaseUnavailable(
            f"The session store is temporarily unavailable ({kind}); retry later.",
            retry_after=self._settings.retry_after_seconds,
        )

    def deadline_passed(self) -> DatabaseUnavailable:
        """The 503 of a request whose database work did not finish within DB_DEADLINE_SECONDS."""
        metrics.count_db_error("deadline")
        log.warning("database work exceeded the request deadline")
        return DatabaseUnavailable(
            f"The session store did not answer within {self._settings.db_deadline_seconds:g} s; retry later.",
            retry_after=self._settings.retry_after_seconds,
        )

    def release_in_background(self, connection: asyncpg.Connection) -> None:
        """Return a connection whose statement was cancelled without waiting for the cancellation.

        asyncpg cancels a timed-out or cancelled statement by sending a cancel request on a new connection,
        and a release waits for it. A frozen server, or a pooler that cannot pass the cancel on, never
        answers, so the request would wait up to the statement timeout again. The pool gets the connection
        back (or drops it) when the cancellation ends; the request answers now."""
        task = asyncio.get_running_loop().create_task(self._release_quietly(connection))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release_quietly(self, connection: asyncpg.Connection) -> None:
        try:
            await self.pool.release(connection)
        except Exception as release_error:  # a broken connection is discarded by the pool
            log.debug("release failed: %s", type(release_error).__name__)

    def connection(self, operation: str | None = None) -> _Lease:
        """`async with db.connection("touch") as connection:` a pooled connection for one operation.

        Any store failure inside the block becomes DatabaseUnavailable; with an operation name the
        round trip is observed for the query-latency metric."""
        return _Lease(self, operation)

    def pool_stats(self) -> tuple[int, int, int]:
        """(open connections, connections in use, requests waiting)."""
        if self._pool is None:
            return 0, 0, self.waiting
        size = self._pool.get_size()
        return size, size - self._pool.get_idle_size(), self.waiting


def _may_leave_a_cancellation(error: BaseException) -> bool:
    """True when the block ended while a statement may still be running (its cancellation pending)."""
    return isinstance(error, asyncio.CancelledError | TimeoutError) or is_unavailable_error(error)


class _HasDatabase(Protocol):
    db: Database


Owner = TypeVar("Owner", bound=_HasDatabase)
Params = ParamSpec("Params")
Result = TypeVar("Result")


def within_deadline(
    operation: Callable[Concatenate[Owner, Params], Coroutine[Any, Any, Result]],
) -> Callable[Concatenate[Owner, Params], Coroutine[Any, Any, Result]]:
    """Bound a request's whole database work (waiting for a group statement, a connection, every
    statement) by DB_DEADLINE_SECONDS: past it the request answers 503, whatever it was waiting for.
    For methods of objects that hold the `Database` as `self.db`."""

    async def bounded(self: Owner, /, *args: Params.args, **kwargs: Params.kwargs) -> Result:
        try:
            async with asyncio.timeout(self.db._settings.db_deadline_seconds):
                return await operation(self, *args, **kwargs)
        except TimeoutError:
            raise self.db.deadline_passed() from None

    functools.update_wrapper(bounded, operation)
    return bounded


class _Lease:
    """A connection borrowed from the pool for one `async with` block.

    A class rather than an @asynccontextmanager generator: it is entered on every request, and the
    generator machinery was a visible share of a touch in profiles.
    """

    __slots__ = ("_connection", "_db", "_operation", "_started")

    def __init__(self, db: Database, operation: str | None) -> None:
        self._db = db
        self._operation = operation
        self._connection: asyncpg.Connection | None = None
        self._started = 0.0

    async def __aenter__(self) -> asyncpg.Connection:
        db = self._db
        pool = db.pool
        self._started = time.perf_counter()
        db.waiting += 1
        try:
            if pool.get_idle_size():
                # An idle connection is handed over without waiting, so skip the timeout wrapper
                # (asyncio wait_for on every request showed up in profiles). Nothing here can hang:
                # reconnecting a stale holder is bounded by the connect timeout.
                self._connection = await pool.acquire()
            else:
                self._connection = await pool.acquire(timeout=db._settings.db_acquire_timeout_seconds)
        except Exception as error:
            if is_unavailable_error(error):
                raise await db.unavailable(error) from error
            raise
        finally:
            db.waiting -= 1
        return self._connection

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, _: Any) -> None:
        db = self._db
        if isinstance(error, BROKEN_CONNECTION) and self._connection is not None:
            self._connection.terminate()  # never back into the pool as it is
        if error is not None and _may_leave_a_cancellation(error):
            db.release_in_background(self._connection)
        else:
            await db._release_quietly(self._connection)
        if error is not None:
            if isinstance(error, Exception) and is_unavailable_error(error):
                raise await db.unavailable(error) from error
            return
        if self._operation is not None and db.query_observer is not None:
            db.query_observer(self._operation, time.perf_counter() - self._started)
