"""A FastMCP server, runnable as one replica of the example fleet.

Modes: `own` (default: `stateless_http=True` + `BrokerSessionMiddleware`) or `stock` (FastMCP as users
run it today: stateful, in-process sessions). Per-session state (`ctx.set_state` / `get_state`) lives
in a `session_state_store` that every replica shares: here a directory (`--state-dir`, py-key-value's
FileTreeStore); in production a Redis or PostgreSQL store. FastMCP keys state by `ctx.session_id`,
which in stateless mode is the `Mcp-Session-Id` header, i.e. the broker's id, the same on every replica.

Run: `python -m examples.fleet.fastmcp_server --port 9003 --state-dir DIR --broker-url URL --api-key KEY`
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from fastmcp import Context, FastMCP
from key_value.aio.stores.filetree import FileTreeStore
from session_broker_client.mcp import BrokerSessionMiddleware
from starlette.middleware import Middleware

from examples.fleet.options import broker_of, middleware_options, parser, stats_route


def build_server(replica: str, state_dir: str) -> FastMCP:
    server = FastMCP("fleet-fastmcp", session_state_store=FileTreeStore(data_directory=state_dir))

    @server.tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @server.tool
    async def remember(key: str, value: str, ctx: Context) -> str:
        """Keep a value in this session's state."""
        await ctx.set_state(key, value)
        return replica

    @server.tool
    async def recall(key: str, ctx: Context) -> dict[str, Any]:
        """Read a value from this session's state, and say which replica read it."""
        return {"replica": replica, "value": await ctx.get_state(key), "session": ctx.session_id}

    return server


def build_app(args: argparse.Namespace) -> Any:
    server = build_server(args.replica, args.state_dir)
    if args.mode == "stock":
        return server.http_app(path="/mcp")
    broker = broker_of(args)
    middleware = [Middleware(BrokerSessionMiddleware, broker=broker, **middleware_options(args))]
    app = server.http_app(path="/mcp", stateless_http=True, middleware=middleware)
    app.router.routes.append(stats_route(broker))
    return app


def main() -> None:
    cli = parser(__doc__.splitlines()[0], ("own", "stock"))
    cli.add_argument("--state-dir", required=True, help="session state shared by all replicas")
    args = cli.parse_args()
    uvicorn.run(build_app(args), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
