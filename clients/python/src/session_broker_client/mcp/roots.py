"""`list_roots(ctx)`: roots/list that works on whichever replica runs the tool.

The SDK's `ctx.session.list_roots()` sends the request on the session's standalone GET stream, which only
one replica holds (under its stream lease), so a tool on any other replica asks into a stream that does
not exist there. Sent as part of the tool call instead (`related_request_id`, as `ctx.elicit` does), the
request goes out on the tool call's own response stream, and the back channel (`back_channel.py`) hands
the client's reply to this replica wherever it lands. The spec allows either stream for a request made
while serving a client request.
"""

from __future__ import annotations

from typing import Any

import mcp_types as types
from mcp.shared.message import ServerMessageMetadata


async def list_roots(ctx: Any) -> types.ListRootsResult:
    """The client's roots, asked on the stream of the request `ctx` is serving (an SDK tool `Context`)."""
    result: types.ListRootsResult = await ctx.session.send_request(
        types.ListRootsRequest(),
        types.ListRootsResult,
        metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
    )
    return result
