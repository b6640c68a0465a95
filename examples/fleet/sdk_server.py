"""An MCP server on the python SDK (`MCPServer`), runnable as one replica of the example fleet.

Modes:
- `own` (default): stateless SDK app + `BrokerSessionMiddleware` (the broker owns sessions);
- `register`: stateful SDK app with `BrokerAwareSessionManager` + the middleware in register mode
  (keeps client info and capabilities; other replicas adopt sessions);
- `stock`: the SDK as users run it today (stateful, in-process sessions, no broker).

Run: `python -m examples.fleet.sdk_server --port 9001 --mode own --broker-url URL --api-key KEY`
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import uvicorn
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import SamplingMessage, TextContent
from pydantic import BaseModel
from session_broker_client.mcp import brokered_stateful_app, install, list_roots
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware

from examples.fleet.options import ISSUER, StaticTokens, broker_of, middleware_options, parser, stats_route


def build_server(replica: str, auth: bool) -> MCPServer:
    server = MCPServer(
        "fleet-sdk",
        token_verifier=StaticTokens() if auth else None,
        auth=AuthSettings(issuer_url=ISSUER, resource_server_url=None) if auth else None,
    )

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @server.tool()
    def whoami(ctx: Context) -> dict[str, Any]:
        """Which replica answered, and what it knows about the client."""
        params = ctx.session.client_params
        return {
            "replica": replica,
            "client": params.client_info.name if params is not None else None,
            "sampling": bool(params and params.capabilities.sampling is not None),
        }

    @server.tool()
    async def ask(ctx: Context) -> dict[str, Any]:
        """Ask the client for a number (elicitation); says which replica asked."""
        answer = await ctx.elicit("Pick a number", schema=Number)
        n = answer.data.n if answer.action == "accept" else None
        return {"replica": replica, "action": answer.action, "n": n}

    @server.tool()
    async def summarize(ctx: Context) -> dict[str, Any]:
        """Ask the client's model for a completion (sampling); says which replica asked."""
        prompt = SamplingMessage(role="user", content=TextContent(type="text", text="Say hello"))
        result = await ctx.session.create_message([prompt], max_tokens=16, related_request_id=ctx.request_id)
        text = result.content.text if isinstance(result.content, TextContent) else None
        return {"replica": replica, "text": text}

    @server.tool()
    async def roots(ctx: Context) -> dict[str, Any]:
        """List the client's roots (sent on this replica's standalone stream)."""
        listed = await ctx.session.list_roots()
        return {"replica": replica, "roots": [str(root.uri) for root in listed.roots]}

    @server.tool()
    async def roots_here(ctx: Context) -> dict[str, Any]:
        """List the client's roots on this tool call's own stream (`list_roots`): works on any replica."""
        listed = await list_roots(ctx)
        return {"replica": replica, "roots": [str(root.uri) for root in listed.roots]}

    @server.tool()
    async def slow(seconds: float, ctx: Context) -> dict[str, Any]:
        """Work for `seconds`, reporting progress every half second."""
        steps = max(1, int(seconds * 2))
        for step in range(steps):
            await ctx.report_progress(step + 1, steps)
            await asyncio.sleep(seconds / steps)
        return {"replica": replica, "steps": steps}

    return server


class Number(BaseModel):
    n: int


def build_app(args: argparse.Namespace) -> Any:
    server = build_server(args.replica, args.auth)
    if args.mode == "stock":
        return server.streamable_http_app()
    broker = broker_of(args)
    if args.mode == "own":
        # The SDK's app, stateless; the middleware goes innermost, i.e. inside the SDK's auth middleware.
        app = install(
            server.streamable_http_app(stateless_http=True), broker=broker, **middleware_options(args)
        )
        app.router.routes.append(stats_route(broker))
        return app
    auth_middleware = (
        [
            Middleware(AuthenticationMiddleware, backend=BearerAuthBackend(StaticTokens())),
            Middleware(AuthContextMiddleware),
        ]
        if args.auth
        else []
    )
    app = brokered_stateful_app(server, broker=broker, middleware=auth_middleware, **middleware_options(args))
    app.router.routes.append(stats_route(broker, app.state.session_manager))
    return app


def main() -> None:
    args = parser(__doc__.splitlines()[0], ("own", "register", "stock")).parse_args()
    uvicorn.run(build_app(args), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
