"""The matched route's path template: the label of HTTP metrics and the `route` of access-log lines
(never the raw path, which holds session ids)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

UNMATCHED_ROUTE = "unmatched"


def route_template(scope: MutableMapping[str, Any], outer_root_path: str = "") -> str:
    """The matched route's path template, with any include_router/mount prefix; 'unmatched' if none.

    Starlette's router stores the matched route in scope["route"] (starlette/routing.py Router.app); the
    hot paths store a route object with the template as `path`. FastAPI >= 0.16x no longer copies routes on
    include_router, so scope["route"].path lacks the include prefix; the full template is on the effective
    route context FastAPI keeps in scope["fastapi"]. Mounted sub-apps extend scope["root_path"].
    """
    route = scope.get("route")
    if route is None:
        return UNMATCHED_ROUTE
    template: object = None
    fastapi_scope = scope.get("fastapi")
    if isinstance(fastapi_scope, dict):
        template = getattr(fastapi_scope.get("effective_route_context"), "path_format", None)
    if not isinstance(template, str) or not template:
        template = getattr(route, "path", None)
    if not isinstance(template, str):
        return UNMATCHED_ROUTE
    root_path: str = scope.get("root_path", "")
    if len(root_path) > len(outer_root_path) and root_path.startswith(outer_root_path):
        template = root_path[len(outer_root_path) :] + template
    return template


def path_within_root(scope: MutableMapping[str, Any]) -> str:
    """The request path below the app's root path (what the probe exclusions compare against)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        return path[len(root_path) :] or "/"
    return path
