"""The JSON-RPC bodies the middleware answers with, and the little it needs to read from a request.

The 404 body is byte-for-byte the python SDK's (`mcp/server/streamable_http_manager.py`), so a client
cannot tell a brokered server from a stock one; its code is configurable because the TypeScript SDK
answers -32001 instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

INVALID_REQUEST = -32600
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000  # JSON-RPC's implementation-defined server error range starts here
TYPESCRIPT_SESSION_NOT_FOUND = -32001
JSON = "application/json"


def error_body(code: int, message: str, request_id: Any = None, data: Any = None) -> bytes:
    """A JSON-RPC error, compact, keys in the SDK's order (jsonrpc, id, error{code, message, data})."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}, separators=(",", ":")).encode()


def session_not_found(code: int = INVALID_REQUEST) -> bytes:
    return error_body(code, "Session not found")


def missing_session_id() -> bytes:
    return error_body(INVALID_REQUEST, "Bad Request: Missing session ID")


def unavailable(request_id: Any = None) -> bytes:
    return error_body(
        INTERNAL_ERROR, "Session store unavailable; retry later (the session is not lost)", request_id
    )


def quota_exceeded(request_id: Any, scope: str | None, limit: int | None) -> bytes:
    scope_text = f"{scope} " if scope else ""
    limit_text = f" (limit {limit})" if limit is not None else ""
    return error_body(
        SERVER_ERROR,
        f"Session quota exceeded: the {scope_text}quota of live sessions is full{limit_text}",
        request_id,
        {"quota": {"scope": scope, "limit": limit}},
    )


def stream_conflict() -> bytes:
    """A second standalone stream for a session (the SDK's own answer to that, on one replica)."""
    return error_body(SERVER_ERROR, "Conflict: Only one SSE stream is allowed per session")


def method_not_allowed() -> bytes:
    return error_body(
        INVALID_REQUEST,
        "Method Not Allowed: this server has no standalone stream (GET); send requests by POST",
    )


@dataclass(frozen=True)
class Inbound:
    """What the middleware reads from a POST body: the first message's method and id (a batch is
    described by its first message), whether it is a request, and the `initialize` params."""

    parsed: bool
    method: str | None = None
    request_id: Any = None
    is_request: bool = False
    is_initialize: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    batch: bool = False
    # A response (result or error) to a server-to-client request, e.g. an elicitation's answer.
    is_response: bool = False


def read_inbound(body: bytes) -> Inbound:
    try:
        message: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return Inbound(parsed=False)
    batch = isinstance(message, list)
    if batch:
        message = message[0] if message else None
    if not isinstance(message, dict):
        return Inbound(parsed=False, batch=batch)
    method = message.get("method")
    method = method if isinstance(method, str) else None
    is_request = method is not None and "id" in message
    params = message.get("params")
    is_initialize = is_request and method == "initialize" and not batch
    return Inbound(
        parsed=True,
        method=method,
        request_id=message.get("id"),
        is_request=is_request,
        is_initialize=is_initialize,
        params=params if isinstance(params, dict) else {},
        batch=batch,
        is_response=not batch
        and method is None
        and message.get("id") is not None
        and ("result" in message or "error" in message),
    )
