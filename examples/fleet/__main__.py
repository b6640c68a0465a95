"""`python -m examples.fleet` (or `make fleet`): a two-replica MCP fleet sharing sessions through the broker.

Starts, on loopback:
- the broker (`session-broker serve` on an embedded PostgreSQL, data in a temporary directory),
- two replicas of an MCP server on the python SDK (stateless, `BrokerSessionMiddleware`) behind a
  strict round-robin proxy,
- two replicas of a FastMCP server (stateless, the middleware, per-session state in a shared store)
  behind another round-robin proxy,

prints the endpoints, runs the SDK's own client (`mcp.Client(url, mode="legacy")`) against both
proxies to show every call succeed while the replicas alternate, then keeps the fleet up until Ctrl-C
(`--demo-only` stops after the demo). Every process is stopped on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import shutil
import signal
import tempfile
from pathlib import Path

import httpx

from examples.fleet.launch import Process, free_port, spawn, stop

TENANT = "fleet"


def start_fleet(work: Path, api_key: str, near_cache: float) -> dict[str, Process]:
    processes: dict[str, Process] = {}
    broker_port = free_port()
    processes["broker"] = spawn(
        "broker",
        "app.cli",
        ["serve"],
        broker_port,
        work,
        env={
            "SESSION_BROKER_PORT": str(broker_port),
            "SESSION_BROKER_DATA_DIR": str(work / "broker-data"),
            "SESSION_BROKER_API_KEYS": f"{TENANT}={api_key}",
            "SESSION_BROKER_LOG_FORMAT": "text",
        },
    )
    common = ["--broker-url", processes["broker"].url, "--api-key", api_key, "--near-cache", str(near_cache)]
    for tier, module, extra in (
        ("sdk", "examples.fleet.sdk_server", []),
        ("fastmcp", "examples.fleet.fastmcp_server", ["--state-dir", str(work / "fastmcp-state")]),
    ):
        replicas = []
        for name in ("a", "b"):
            port = free_port()
            replica = f"{tier}-{name}"
            processes[replica] = spawn(
                replica, module, ["--port", str(port), "--replica", replica, *common, *extra], port, work
            )
            replicas.append(processes[replica].url + "")
        port = free_port()
        upstreams = [arg for url in replicas for arg in ("--upstream", url)]
        processes[f"{tier}-proxy"] = spawn(
            f"{tier}-proxy", "examples.fleet.proxy", ["--port", str(port), *upstreams], port, work
        )
    return processes


async def demo(processes: dict[str, Process]) -> None:
    from mcp import Client

    for tier, tool, arguments in (("sdk", "whoami", {}), ("fastmcp", "recall", {"key": "greeting"})):
        url = processes[f"{tier}-proxy"].url + "/mcp"
        async with Client(url, mode="legacy") as client:
            if tier == "fastmcp":
                await client.call_tool("remember", {"key": "greeting", "value": "hello from the fleet"})
            answers = [await client.call_tool(tool, arguments) for _ in range(4)]
        print(f"\n{tier} fleet at {url}:")
        for answer in answers:
            print("  ", "error" if answer.is_error else answer.structured_content or answer.content)
        async with httpx.AsyncClient() as http:
            log = (await http.get(processes[f"{tier}-proxy"].url + "/_proxy/log")).json()["requests"]
        print("   upstream of each request:", "".join(str(entry["upstream"]) for entry in log))


def main() -> None:
    parser = argparse.ArgumentParser(description="a two-replica MCP fleet on the session broker")
    parser.add_argument("--near-cache", type=float, default=0.0, help="touch near-cache window (seconds)")
    parser.add_argument("--demo-only", action="store_true", help="stop after the demo")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="broker-fleet-"))
    work.chmod(0o755)  # the embedded PostgreSQL runs as its own OS user and must reach its data directory
    api_key = secrets.token_hex(16)
    processes: dict[str, Process] = {}
    try:
        processes = start_fleet(work, api_key, args.near_cache)
        print(f"broker            {processes['broker'].url}  (tenant {TENANT!r}, key {api_key})")
        for tier, label in (("sdk", "SDK fleet"), ("fastmcp", "FastMCP fleet")):
            replicas = f"{processes[tier + '-a'].url}, {processes[tier + '-b'].url}"
            print(f"{label:<18}{processes[tier + '-proxy'].url}/mcp  -> {replicas}")
        print(f"logs              {work}")
        asyncio.run(demo(processes))
        if not args.demo_only:
            print("\nThe fleet is up; Ctrl-C stops it.")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    finally:
        for process in reversed(list(processes.values())):
            stop(process)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
