"""MCP server side of the kit: `BrokerSessionMiddleware` (both tiers), `BrokerAwareSessionManager` (the
stateful tier's adopting session manager, mcp 2.3.x) and helpers (`list_roots(ctx)`: roots/list from
any replica). Needs the `mcp` extra."""

from session_broker_client.mcp.install import install
from session_broker_client.mcp.jsonrpc import INVALID_REQUEST, TYPESCRIPT_SESSION_NOT_FOUND
from session_broker_client.mcp.manager import BrokerAwareSessionManager, brokered_stateful_app
from session_broker_client.mcp.metadata import METADATA_KEY
from session_broker_client.mcp.middleware import BrokerSessionMiddleware
from session_broker_client.mcp.principal import sdk_client_id, sdk_principal
from session_broker_client.mcp.roots import list_roots

__all__ = [
    "INVALID_REQUEST",
    "METADATA_KEY",
    "TYPESCRIPT_SESSION_NOT_FOUND",
    "BrokerAwareSessionManager",
    "BrokerSessionMiddleware",
    "brokered_stateful_app",
    "install",
    "list_roots",
    "sdk_client_id",
    "sdk_principal",
]
