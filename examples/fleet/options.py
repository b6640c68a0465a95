"""Command-line options and pieces shared by the example replicas (SDK and FastMCP)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from mcp.server.auth.provider import AccessToken
from session_broker_client import SessionBroker
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ISSUER = "https://issuer.example"
CLIENT_ID = "fleet-client"
TOKEN_PREFIX = "token-"


class StaticTokens:
    """A token verifier for the example: `Bearer token-<name>` authenticates user `<name>`. A real
    server verifies JWTs or introspects tokens; what matters here is the identity it yields."""

    async def verify_token(self, token: str) -> AccessToken | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) == len(TOKEN_PREFIX):
            return None
        subject = token.removeprefix(TOKEN_PREFIX)
        return AccessToken(
            token=token, client_id=CLIENT_ID, scopes=[], subject=subject, claims={"iss": ISSUER}
        )


def parser(description: str, modes: tuple[str, ...]) -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--host", default="127.0.0.1")
    result.add_argument("--port", type=int, required=True)
    result.add_argument("--mode", choices=modes, default=modes[0])
    result.add_argument("--replica", default=os.environ.get("REPLICA", "replica"), help="name shown by tools")
    result.add_argument("--broker-url", default=os.environ.get("BROKER_URL", "http://127.0.0.1:8080"))
    result.add_argument("--api-key", default=os.environ.get("BROKER_API_KEY"))
    result.add_argument("--near-cache", type=float, default=0.0, help="touch near-cache window, seconds")
    result.add_argument("--auth", action="store_true", help="require `Bearer token-<user>`")
    result.add_argument("--idle-timeout", type=int, default=None, help="broker idle timeout of new sessions")
    result.add_argument(
        "--pending-timeout", type=int, default=60, help="server-to-client request deadline (register mode)"
    )
    result.add_argument("--lease-ttl", type=int, default=15, help="stream lease TTL (register mode)")
    result.add_argument("--not-found-code", type=int, default=-32600, help="JSON-RPC code of the 404 body")
    result.add_argument("--log-level", default="warning")
    return result


def middleware_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {
        "idle_timeout_seconds": args.idle_timeout,
        "not_found_code": args.not_found_code,
    }
    if args.mode == "register":
        options.update(pending_timeout_seconds=args.pending_timeout, stream_lease_ttl_seconds=args.lease_ttl)
    return options


def stats_route(broker: SessionBroker, manager: Any = None) -> Route:
    """`GET /kit-stats`: what this replica's kit did (near-cache counters, broker calls by operation,
    adopted sessions), for the tests and the benchmark. Not part of the kit: an example's window."""

    async def kit_stats(request: Request) -> JSONResponse:
        cache = broker.near_cache
        body: dict[str, Any] = {
            "broker_calls": broker.calls,
            "near_cache": None if cache is None else {**vars(cache.stats), "connected": cache.connected},
        }
        if manager is not None:
            body["manager"] = {
                "adopted": manager.adopted,
                "dropped": manager.dropped,
                "local_sessions": len(manager._server_instances),
                "local_session_ids": sorted(manager._server_instances),
            }
        return JSONResponse(body)

    return Route("/kit-stats", kit_stats, methods=["GET"])


def broker_of(args: argparse.Namespace) -> SessionBroker:
    return SessionBroker(args.broker_url, args.api_key, near_cache_seconds=args.near_cache)
