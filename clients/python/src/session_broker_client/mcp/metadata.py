"""What the kit stores in a broker session about its MCP client, in one place.

Written on create/register as `{"mcp": {"clientInfo": ..., "capabilities": ..., "protocolVersion": ...}}`
(the `initialize` request's params, plus the negotiated version); the adopting session manager
rebuilds a born-ready connection from exactly these keys.
"""

from __future__ import annotations

from typing import Any

METADATA_KEY = "mcp"
CLIENT_INFO = "clientInfo"
CAPABILITIES = "capabilities"
PROTOCOL_VERSION = "protocolVersion"
SESSION_KIND = "mcp"

# The handshake-era revisions (those with sessions and `initialize`), oldest first. Requests whose
# MCP-Protocol-Version header names anything else belong to a sessionless revision (2026-07-28 on).
HANDSHAKE_PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_HANDSHAKE_VERSION = HANDSHAKE_PROTOCOL_VERSIONS[-1]


def negotiated_version(requested: object) -> str:
    """The version a handshake-era server answers `initialize` with: the client's if it supports it,
    else its latest (the spec's negotiation rule, as the python SDK implements it)."""
    return (
        requested
        if isinstance(requested, str) and requested in HANDSHAKE_PROTOCOL_VERSIONS
        else (LATEST_HANDSHAKE_VERSION)
    )


def initialize_metadata(params: dict[str, Any], protocol_version: str) -> dict[str, Any]:
    """The session metadata for an `initialize` request's params."""
    return {
        METADATA_KEY: {
            CLIENT_INFO: params.get(CLIENT_INFO),
            CAPABILITIES: params.get(CAPABILITIES) or {},
            PROTOCOL_VERSION: protocol_version,
        }
    }


def initialize_params(metadata: dict[str, Any]) -> dict[str, Any] | None:
    """The `initialize` params recorded in a session's metadata, or None when it has none."""
    recorded = metadata.get(METADATA_KEY)
    if not isinstance(recorded, dict) or not isinstance(recorded.get(CLIENT_INFO), dict):
        return None
    return {
        PROTOCOL_VERSION: recorded.get(PROTOCOL_VERSION) or LATEST_HANDSHAKE_VERSION,
        CAPABILITIES: recorded.get(CAPABILITIES) or {},
        CLIENT_INFO: recorded[CLIENT_INFO],
    }
