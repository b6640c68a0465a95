"""`tools/call` through a brokered two-replica fleet versus one stock stateful replica, in one run.

Run: `.venv/bin/python -m bench.gateway [--seconds 8] [--connections 32] [--sessions 64]` (or
`make bench-gateway`, which installs wrk if missing).

Method
------
Everything runs on this machine, on loopback, as separate processes:

- the broker (`session-broker serve`, one worker, embedded PostgreSQL in a temporary directory,
  default settings: a touch writes at most once a minute per session);
- **own, cache off / on**: two replicas of `examples/fleet/sdk_server.py` in mode `own` (stateless
  python SDK app + `BrokerSessionMiddleware`) behind the strict round-robin proxy, without and with
  the touch near-cache (window `--window`, default 30 s; events end a cached session within a second);
- **register, cache off / on**: two replicas in mode `register` (the SDK's stateful app with
  `BrokerAwareSessionManager` + the middleware in register mode; every session is adopted by the
  replica that did not open it during the warm-up), without and with the near-cache;
- **stock**: one replica of the same server in mode `stock` (the SDK's stateful session manager,
  sessions in process memory: what users run today) behind the same proxy with one upstream. The
  proxy is in front of every setup so that each pays the same extra hop, as a load balancer would.

For each setup, `--sessions` MCP sessions are opened through the proxy (a real `initialize` and
`notifications/initialized` each), then `wrk` (C, so the load generator is not the bottleneck)
sends `tools/call` requests for the `add` tool over `--connections` keep-alive connections, each
request carrying one of the sessions' `Mcp-Session-Id` in turn. Latency percentiles are wrk's; a
non-200 answer counts as an error. Broker calls per tool call come from the broker's own
`session_broker_http_requests_total` (every route, so analytics batches and event streams count too),
read before and after the measured window; near-cache hits from the replicas' `/kit-stats`.

The setups run one after the other (a 2 s warm-up, then the measured window), on a machine
whose two cores the load generator shares with everything else: read the ratios, not the absolute
numbers, and expect noise between runs.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from examples.fleet.launch import Process, free_port, launch, stop, wait_until_listening

TENANT = "bench"
ACCEPT = "application/json, text/event-stream"
VERSION = "2025-11-25"
WRK_SCRIPT = """
local ids = {%(ids)s}
local counter = 0
request = function()
  counter = counter + 1
  local headers = {}
  headers["Content-Type"] = "application/json"
  headers["Accept"] = "%(accept)s"
  headers["MCP-Protocol-Version"] = "%(version)s"
  headers["Mcp-Session-Id"] = ids[(counter %% #ids) + 1]
  local body = '{"jsonrpc":"2.0","id":' .. counter
    .. ',"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}'
  return wrk.format("POST", "/mcp", headers, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  local errors = e.status + e.connect + e.read + e.write + e.timeout
  io.write(string.format(
    'WRK {"requests":%%d,"seconds":%%f,"errors":%%d,"p50_ms":%%f,"p90_ms":%%f,"p99_ms":%%f}\\n',
    summary.requests, summary.duration / 1e6, errors,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000))
end
"""


@dataclass
class Setup:
    name: str
    replicas: list[Process]
    proxy: Process


@dataclass
class Result:
    name: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    broker_calls_per_call: float
    touches_per_call: float
    near_cache_hits: int | None


def broker_requests(broker_url: str) -> tuple[float, float]:
    """(all HTTP requests the broker answered, touches) from its Prometheus counters."""
    total = touches = 0.0
    for line in httpx.get(broker_url + "/metrics").text.splitlines():
        if line.startswith("session_broker_http_requests_total{"):
            value = float(line.rsplit(" ", 1)[1])
            total += value
            if 'route="/v1/sessions/{session_id}/touch"' in line:
                touches += value
    return total, touches


def open_sessions(url: str, count: int) -> list[str]:
    ids = []
    headers = {"Accept": ACCEPT, "Content-Type": "application/json"}
    initialize = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": VERSION,
            "capabilities": {},
            "clientInfo": {"name": "bench", "version": "1"},
        },
    }
    with httpx.Client(timeout=30) as http:
        for _ in range(count):
            opened = http.post(url, json=initialize, headers=headers)
            opened.raise_for_status()
            session_id = opened.headers["mcp-session-id"]
            session_headers = {**headers, "Mcp-Session-Id": session_id, "MCP-Protocol-Version": VERSION}
            # Strict round robin: the stock replica behind a one-upstream proxy sees every request.
            http.post(
                url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session_headers
            )
            ids.append(session_id)
    return ids


def run_wrk(url: str, ids: list[str], seconds: float, connections: int, work: Path) -> dict[str, Any]:
    script = work / "tools_call.lua"
    script.write_text(
        WRK_SCRIPT % {"ids": ",".join(json.dumps(i) for i in ids), "accept": ACCEPT, "version": VERSION}
    )
    command = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("WRK "))
    parsed: dict[str, Any] = json.loads(line[4:])
    return parsed


def measure(setup: Setup, broker_url: str, args: argparse.Namespace, work: Path) -> Result:
    url = setup.proxy.url + "/mcp"
    ids = open_sessions(url, args.sessions)
    run_wrk(url, ids, 2, args.connections, work)  # warm-up
    hits_before = near_cache_hits(setup)
    calls_before, touches_before = broker_requests(broker_url)
    measured = run_wrk(url, ids, args.seconds, args.connections, work)
    calls_after, touches_after = broker_requests(broker_url)
    hits_after = near_cache_hits(setup)
    requests = max(1, int(measured["requests"]))
    return Result(
        name=setup.name,
        requests_per_second=measured["requests"] / measured["seconds"],
        p50_ms=measured["p50_ms"],
        p99_ms=measured["p99_ms"],
        errors=int(measured["errors"]),
        requests=requests,
        broker_calls_per_call=(calls_after - calls_before) / requests,
        touches_per_call=(touches_after - touches_before) / requests,
        near_cache_hits=None if hits_before is None or hits_after is None else hits_after - hits_before,
    )


def near_cache_hits(setup: Setup) -> int | None:
    total = 0
    for replica in setup.replicas:
        try:
            cache = httpx.get(replica.url + "/kit-stats").json()["near_cache"]
        except (httpx.HTTPError, ValueError, KeyError):
            return None
        if cache is None:
            return None
        total += int(cache["hits"])
    return total


def start_setup(name: str, replica_args: list[list[str]], work: Path) -> Setup:
    replicas = []
    for index, extra in enumerate(replica_args):
        port = free_port()
        replicas.append(
            launch(f"{name}-{index}", "examples.fleet.sdk_server", ["--port", str(port), *extra], port, work)
        )
    port = free_port()
    upstreams = [arg for replica in replicas for arg in ("--upstream", replica.url)]
    proxy = launch(
        f"{name}-proxy", "examples.fleet.proxy", ["--port", str(port), "--no-log", *upstreams], port, work
    )
    for process in [*replicas, proxy]:
        wait_until_listening(process)
    return Setup(name, replicas, proxy)


def main() -> None:
    parser = argparse.ArgumentParser(description="tools/call: brokered fleet vs one stock stateful replica")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured window per setup")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--window", type=float, default=30.0, help="near-cache window, seconds")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed (Debian package `wrk`; `make bench-gateway` installs it)")

    work = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    work.chmod(0o755)  # the embedded PostgreSQL runs as its own OS user
    key = secrets.token_hex(16)
    processes: list[Process] = []
    results: list[Result] = []
    try:
        broker_port = free_port()
        broker = launch(
            "broker",
            "app.cli",
            ["serve"],
            broker_port,
            work,
            env={
                "SESSION_BROKER_PORT": str(broker_port),
                "SESSION_BROKER_DATA_DIR": str(work / "broker-data"),
                "SESSION_BROKER_API_KEYS": f"{TENANT}={key}",
                "SESSION_BROKER_LOG_FORMAT": "text",
                "SESSION_BROKER_LOG_LEVEL": "warning",
            },
        )
        processes.append(broker)
        wait_until_listening(broker, timeout=120)
        own = ["--mode", "own", "--broker-url", broker.url, "--api-key", key]
        register = ["--mode", "register", "--broker-url", broker.url, "--api-key", key]
        cache = ["--near-cache", str(args.window)]
        plans = [
            ("stock, 1 replica", [["--mode", "stock"]]),
            ("own, cache off", [own, own]),
            ("own, cache on", [[*own, *cache]] * 2),
            ("register, cache off", [register, register]),
            ("register, cache on", [[*register, *cache]] * 2),
        ]
        for name, replica_args in plans:
            setup = start_setup(name.replace(", ", "-").replace(" ", "-"), replica_args, work)
            setup.name = name
            processes.extend([*setup.replicas, setup.proxy])
            try:
                results.append(measure(setup, broker.url, args, work))
            finally:
                for process in [setup.proxy, *setup.replicas]:
                    stop(process)
        report(results, args)
    finally:
        for process in reversed(processes):
            stop(process)
        time.sleep(0.2)
        shutil.rmtree(work, ignore_errors=True)


def report(results: list[Result], args: argparse.Namespace) -> None:
    stock = results[0]
    load = f"{args.connections} connections, {args.sessions} sessions, {args.seconds:g} s per setup"
    print(f"\ntools/call, {load} (wrk, loopback, shared 2-core machine)\n")
    header = f"{'setup':<24}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'x thrpt':>9}{'x p99':>8}"
    print(header + f"{'broker calls/call':>19}{'touches/call':>14}{'cache hits':>12}")
    for result in results:
        print(
            f"{result.name:<24}{result.requests_per_second:>9.0f}{result.p50_ms:>9.2f}{result.p99_ms:>9.2f}"
            f"{result.errors:>8}{result.requests_per_second / stock.requests_per_second:>9.2f}"
            f"{result.p99_ms / stock.p99_ms:>8.2f}{result.broker_calls_per_call:>19.3f}"
            f"{result.touches_per_call:>14.3f}{_blank_if_none(result.near_cache_hits):>12}"
        )
    print(json.dumps({"results": [vars(result) for result in results]}, indent=None))


def _blank_if_none(value: int | None) -> str:
    return "" if value is None else str(value)


if __name__ == "__main__":
    main()
