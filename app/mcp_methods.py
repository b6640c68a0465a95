"""The MCP method names the gateway analytics metrics accept as a label value; anything else is `other`,
so a gateway cannot create unbounded series."""

from __future__ import annotations

MCP_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "sampling/createMessage",
        "elicitation/create",
        "roots/list",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/message",
        "notifications/roots/list_changed",
        "notifications/resources/updated",
        "notifications/resources/list_changed",
        "notifications/tools/list_changed",
        "notifications/prompts/list_changed",
        "tasks/get",
        "tasks/list",
        "tasks/cancel",
        "tasks/result",
    }
)
OTHER_METHOD = "other"


def normalise_mcp_method(name: object) -> str:
    """Map a reported MCP method name onto the bounded label set; anything else is 'other'."""
    if isinstance(name, str) and name in MCP_METHODS:
        return name
    return OTHER_METHOD
