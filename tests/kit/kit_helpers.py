"""Helpers shared by the gateway-kit tests: the kit's broker process, fleets of real MCP replicas
behind the real round-robin proxy, the SDK's own client, raw MCP requests, polling."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from examples.fleet.launch import Process, free_port, launch, stop, wait_until_listening
from tests.helpers import ADMIN_KEY, LiveServer, start_server, stop_server

KIT_KEY = "kit-key-0123456789abcdef"
FULL_KEY = "kitfull-key-0123456789abcdef"  # tenant `kitfull`: at most 2 live sessions
FULL_TENANT_LIMIT = 2
# The python SDK's 404 for an unknown session, byte for byte.
SDK_NOT_FOUND = b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Session not found"}}'
ACCEPT = "application/json, text/event-stream"
HANDSHAKE_VERSION = "2025-11-25"


class KitBroker:
    """`session-broker serve` for the kit tests, stoppable and restartable on the same port."""

    def __init__(self, database_url: str, log_dir: Path) -> None:
        self.env = {
            "SESSION_BROKER_DATABASE_URL": database_url,
            "SESSION_BROKER_API_KEYS": f"kit={KIT_KEY},kitfull={FULL_KEY}",
            "SESSION_BROKER_ADMIN_API_KEYS": ADMIN_KEY,
            "SESSION_BROKER_PURGE_ENABLED": "false",
            # Every touch writes, so a test sees `last_seen_at` move within seconds.
            "SESSION_BROKER_TOUCH_GRANULARITY_SECONDS": "0",
            "SESSION_BROKER_TENANT_QUOTAS": json.dumps(
                {"kitfull": {"max_sessions_per_tenant": FULL_TENANT_LIMIT}}
            ),
        }
        self.log_path = log_dir / "kit-broker.log"
        self.port = free_port()
        self.server: LiveServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = start_server(self.env, self.log_path, port=self.port)

    def stop(self) -> None:
        if self.server is not None:
            stop_server(self.server)
            self.server = None


@dataclass
class Fleet:
    """Replicas of one MCP server behind one round-robin proxy."""

    replicas: list[Process]
    proxy: Process
    processes: list[Process] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.proxy.url + "/mcp"

    def log(self) -> list[dict[str, Any]]:
        return list(httpx.get(self.proxy.url + "/_proxy/log").json()["requests"])

    def reset_log(self) -> None:
        httpx.post(self.proxy.url + "/_proxy/reset")

    def stats(self, index: int) -> dict[str, Any]:
        return dict(httpx.get(self.replicas[index].url + "/kit-stats").json())

    def stop(self) -> None:
        for process in [self.proxy, *self.replicas]:
            stop(process)


def start_fleet(
    name: str, module: str, args: list[str], log_dir: Path, replicas: int = 2, proxy: bool = True
) -> Fleet:
    """Start the replicas (and the proxy in front of them) concurrently, then wait for all."""
    started = []
    for index in range(replicas):
        port = free_port()
        started.append(
            launch(
                f"{name}-{index}",
                module,
                ["--port", str(port), "--replica", f"{name}-{index}", *args],
                port,
                log_dir,
            )
        )
    proxy_port = free_port()
    upstreams = [arg for process in started for arg in ("--upstream", process.url)]
    front = launch(
        f"{name}-proxy", "examples.fleet.proxy", ["--port", str(proxy_port), *upstreams], proxy_port, log_dir
    )
    try:
        for process in [*started, front]:
            wait_until_listening(process)
    except BaseException:
        for process in [*started, front]:
            stop(process)
        raise
    return Fleet(started, front)


def broker_args(broker: KitBroker, key: str = KIT_KEY) -> list[str]:
    return ["--broker-url", broker.url, "--api-key", key]


@asynccontextmanager
async def mcp_client(url: str, token: str | None = None, mode: str = "legacy") -> AsyncIterator[Client]:
    """The SDK's own client, connected; `token` is sent as `Authorization: Bearer <token>`."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0)) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode) as client:
            yield client


def tool_call(name: str, arguments: dict[str, Any] | None = None, request_id: int = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments or {}},
    }


def mcp_headers(session_id: str | None = None, token: str | None = None) -> dict[str, str]:
    headers = {
        "Accept": ACCEPT,
        "Content-Type": "application/json",
        "MCP-Protocol-Version": HANDSHAKE_VERSION,
    }
    if session_id is not None:
        headers["Mcp-Session-Id"] = session_id
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def session_ids(log: list[dict[str, Any]]) -> set[str]:
    """Every session id the proxy saw sent by the client."""
    return {entry["session_in"] for entry in log if entry.get("session_in")}


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 5.0, interval: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(interval)
