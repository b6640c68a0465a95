"""A strict round-robin HTTP reverse proxy: request n goes to upstream n mod N, whatever it carries.

This is the load balancer that breaks stock MCP servers (no stickiness at all, not even for a
session's GET stream), so the fleet example and the tests use it to show that brokered sessions do not
care which replica a request lands on. Responses are streamed through as they arrive (SSE included),
and the upstream request is dropped when the client goes away.

It keeps a bounded log of what it forwarded at `GET /_proxy/log` (JSON: upstream index, method, session
id sent and received, status, Retry-After) and forgets it at `POST /_proxy/reset`, so a test can check
where each request went and what came back.

Run: `python -m examples.fleet.proxy --port 9000 --upstream http://127.0.0.1:9001 --upstream ...`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"host",
    }
)
LOG_LIMIT = 10_000


class RoundRobinProxy:
    def __init__(self, upstreams: list[str], *, log_requests: bool = True) -> None:
        if not upstreams:
            raise ValueError("at least one upstream is needed")
        self.upstreams = [upstream.rstrip("/") for upstream in upstreams]
        self.log: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)
        self.log_requests = log_requests
        self._next = 0
        self._count = 0
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            if scope["path"].startswith("/_proxy/"):
                await self._control(scope, send)
            else:
                await self._forward(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._client = httpx.AsyncClient(
                    timeout=httpx.Timeout(None, connect=5.0),
                    limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _control(self, scope: Scope, send: Send) -> None:
        if scope["path"] == "/_proxy/reset" and scope["method"] == "POST":
            self.log.clear()
            body = b"{}"
        else:
            body = json.dumps({"upstreams": self.upstreams, "requests": list(self.log)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self._client is not None
        index = self._next
        self._next = (self._next + 1) % len(self.upstreams)
        self._count += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False) or message["type"] == "http.disconnect":
                break
        target = self.upstreams[index] + scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        headers = [(name, value) for name, value in scope["headers"] if name.lower() not in HOP_BY_HOP]
        request = self._client.build_request(scope["method"], target, headers=headers, content=body)
        entry: dict[str, Any] = {"n": self._count, "upstream": index, "method": scope["method"]}
        if self.log_requests:
            entry["session_in"] = _header(scope["headers"], b"mcp-session-id")
            entry["rpc_method"] = _rpc_method(body)
            self.log.append(entry)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TransportError as error:
            entry["status"] = 502
            message_body = json.dumps(
                {"error": f"upstream {index} unreachable: {type(error).__name__}"}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 502,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": message_body})
            return
        entry["status"] = response.status_code
        entry["session_out"] = response.headers.get("mcp-session-id")
        entry["retry_after"] = response.headers.get("retry-after")
        try:
            await self._relay(response, receive, send)
        finally:
            await response.aclose()

    async def _relay(self, response: httpx.Response, receive: Receive, send: Send) -> None:
        headers = [(name, value) for name, value in response.headers.raw if name.lower() not in HOP_BY_HOP]
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})

        async def pump() -> None:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def client_gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        pumping = asyncio.ensure_future(pump())
        watching = asyncio.ensure_future(client_gone())
        try:
            await asyncio.wait({pumping, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pumping, watching):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def _header(headers: Any, name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _rpc_method(body: bytes) -> str | None:
    if not body or len(body) > 65536:
        return None
    try:
        message = json.loads(body)
    except ValueError:
        return None
    method = message.get("method") if isinstance(message, dict) else None
    return method if isinstance(method, str) else None


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", action="append", required=True, help="repeat for each replica")
    parser.add_argument("--no-log", action="store_true", help="keep no request log (benchmarks)")
    args = parser.parse_args()
    proxy = RoundRobinProxy(args.upstream, log_requests=not args.no_log)
    uvicorn.run(proxy, host=args.host, port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
