"""Reads an MCP server's answer as it streams past, to learn how the request ended.

The middleware needs two facts that the HTTP status alone does not carry, because a Streamable HTTP
server answers a request with 200 and an SSE stream whose event holds the JSON-RPC result or error:
whether the request failed (for request analytics, and to end the broker session of a failed
`initialize`), and the `initialize` result itself (register mode records the negotiated version).

It is cheap on the hot path: a line is parsed as JSON only when it might be the error we look for (it
contains `"error"`) or when the result is wanted, and at most `limit` bytes are ever buffered.
"""

from __future__ import annotations

import json
from typing import Any

SSE = b"text/event-stream"


class ResponseWatcher:
    def __init__(self, request_id: Any, *, want_result: bool = False, limit: int = 1 << 20) -> None:
        self.request_id = request_id
        self.want_result = want_result
        self.limit = limit
        self.status = 0
        self.error: dict[str, Any] | None = None
        self.result: dict[str, Any] | None = None
        self._sse = False
        self._buffer = b""
        self._overflow = False

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        content_type = next((value for name, value in headers if name.lower() == b"content-type"), b"")
        self._sse = content_type.lower().startswith(SSE)

    @property
    def answered(self) -> bool:
        """The response to our request has been seen (result or error)."""
        return self.error is not None or self.result is not None

    @property
    def ok(self) -> bool:
        return self.status < 400 and self.error is None

    def feed(self, chunk: bytes) -> None:
        if self._overflow or self.answered or not chunk:
            return
        self._buffer += chunk
        if self._sse:
            *lines, self._buffer = self._buffer.split(b"\n")
            for line in lines:
                if line.startswith(b"data:"):
                    self._consider(line[5:])
        if len(self._buffer) > self.limit:
            self._overflow, self._buffer = True, b""

    def finish(self) -> None:
        """The body is complete: a JSON body (or an unterminated last SSE line) is read now."""
        if not self._overflow and not self.answered and self._buffer:
            self._consider(
                self._buffer[5:] if self._sse and self._buffer.startswith(b"data:") else self._buffer
            )
        self._buffer = b""

    def _consider(self, data: bytes) -> None:
        if not self.want_result and b'"error"' not in data:
            return
        try:
            message: Any = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return
        for item in message if isinstance(message, list) else [message]:
            if isinstance(item, dict) and item.get("id") == self.request_id:
                if isinstance(item.get("error"), dict):
                    self.error = item["error"]
                elif isinstance(item.get("result"), dict):
                    self.result = item["result"]
