"""The servers under test: the service and the reference peers, how each is started, and its contract check.

The references in bench/references/ implement the same touch/create contract as the service; each runs
with the same uvicorn workers, event loop and HTTP parser, so the table compares implementations, not set-ups.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.context import POOL_SIZE, TENANT, UNKNOWN_ID, WORKERS, BenchContext
from bench.errors import BenchError
from bench.paths import REPO_DIR, VENV_BIN
from bench.processes import Child

SERVICE = "service"
REFERENCES = {
    "constant": "bench.references.constant:app",
    "asyncpg_touch": "bench.references.asyncpg_touch:app",
    "redis_touch": "bench.references.redis_touch:app",
    "orm_touch": "bench.references.orm_touch:app",
    "asyncpg_create": "bench.references.asyncpg_create:app",
}

# Quotas that loading a million sessions of one tenant cannot trip.
UNLIMITED_QUOTAS = {
    "SESSION_BROKER_MAX_SESSIONS_PER_TENANT": "1000000000",
    "SESSION_BROKER_MAX_SESSIONS_PER_CLIENT": "1000000000",
    "SESSION_BROKER_MAX_SESSIONS_PER_PRINCIPAL": "1000000000",
}


@dataclass(frozen=True)
class Probe:
    """One contract check made before measuring: a request and the status it must get."""

    method: str
    path: str
    token: str | None
    body: bytes | None
    expect: str  # "2xx" or an exact status

    def accepts(self, status: int) -> bool:
        return 200 <= status < 300 if self.expect == "2xx" else str(status) == self.expect


def server_env(ctx: BenchContext, target: str, service_env: dict[str, str]) -> dict[str, str]:
    """The environment of one server: the caller's, minus any setting of ours, plus the bench's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSION_BROKER_", "BENCH_"))}
    env["PYTHONPATH"] = str(REPO_DIR)
    if target == SERVICE:
        env.update(
            {
                "SESSION_BROKER_DATABASE_URL": ctx.pg.url,
                "SESSION_BROKER_API_KEYS": f"{TENANT}={ctx.token}",
                "SESSION_BROKER_WORKERS": str(WORKERS),
                "SESSION_BROKER_AUTO_MIGRATE": "false",
                **UNLIMITED_QUOTAS,
            }
        )
        for item in ctx.args.service_env:
            key, _, value = item.partition("=")
            env[key] = value
        env.update(service_env)
    else:
        env.update(
            {
                "BENCH_DATABASE_URL": ctx.pg.url,
                "BENCH_REDIS_URL": ctx.redis.url,
                "BENCH_REDIS_PREFIX": ctx.redis.prefix,
                "BENCH_TENANT": TENANT,
                "BENCH_POOL_SIZE": str(POOL_SIZE),
            }
        )
    return env


def server_argv(ctx: BenchContext, target: str, port: int) -> list[str]:
    if target == SERVICE:
        assert ctx.broker is not None
        return [ctx.broker, "serve", "--host", "127.0.0.1", "--port", str(port)]
    return [
        sys.executable,
        "-m",
        "uvicorn",
        REFERENCES[target],
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(WORKERS),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def probes_for(target: str, kind: str, token: str | None, known_id: str | None) -> list[Probe]:
    """The contract checks of one server; the last one is also the readiness probe."""
    if kind == "create":
        return [Probe("POST", "/v1/sessions", token, b"{}", "2xx")]
    probes: list[Probe] = []
    if known_id is not None:
        probes.append(Probe("POST", f"/v1/sessions/{known_id}/touch", token, None, "2xx"))
    # `constant` answers every id (it is the HTTP ceiling), so it gets no 404 check
    if target != "constant":
        probes.append(Probe("POST", f"/v1/sessions/{UNKNOWN_ID}/touch", token, None, "404"))
    return probes


def check_contract(port: int, probes: list[Probe], known_id: str | None) -> tuple[dict[str, Any], list[str]]:
    """Each probe's answer, keyed `METHOD path` with the ids shown as <known>/<unknown>; and the misses."""
    contract: dict[str, Any] = {}
    misses: list[str] = []
    for probe in probes:
        status, _ = http_status(port, probe.method, probe.path, probe.token, probe.body)
        ok = probe.accepts(status)
        shown = probe.path.replace(UNKNOWN_ID, "<unknown>").replace(known_id or "~", "<known>")
        contract[f"{probe.method} {shown}"] = {"status": status, "expected": probe.expect, "ok": ok}
        if not ok:
            misses.append(f"{probe.method} {probe.path[:40]}... answered {status}, expected {probe.expect}")
    return contract, misses


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


def wait_ready(child: Child, port: int, probe: Probe, timeout: float = 60.0) -> None:
    """Wait until the server answers the probe request with any HTTP status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise BenchError(
                f"{child.name} exited with {child.proc.returncode} before it was ready:\n{child.log_tail()}"
            )
        try:
            http_status(port, probe.method, probe.path, probe.token, probe.body, timeout=2.0)
            return
        except (OSError, http.client.HTTPException):
            time.sleep(0.1)
    raise BenchError(f"{child.name} was not ready after {timeout:.0f} s:\n{child.log_tail()}")


def which_broker() -> str | None:
    """The `session-broker` of the bench's own virtualenv, else the first on PATH."""
    candidate = VENV_BIN / "session-broker"
    if candidate.exists():
        return str(candidate)
    return shutil.which("session-broker")


def broker_help(broker: str | None) -> str:
    """`session-broker --help`, or "" when it does not run (the service is then reported as unavailable)."""
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
