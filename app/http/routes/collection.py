"""The tenant's sessions as a collection: list, revoke by filters, stats."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.errors import ValidationFailed
from app.fleet_gauges import WINDOW_MAX_SECONDS
from app.http.bodies import json_response
from app.http.deps import RuntimeDep, ServiceDep, TenantDep
from app.http.openapi import COMMON_PROBLEMS, problem_responses
from app.schemas import RevokeResult, SessionPage, Stats, normalise_principal
from app.service import DEFAULT_PAGE_SIZE
from app.sql.end import REVOKE_FILTERS
from app.sql.read import LIST_FILTERS

router = APIRouter(prefix="/v1", tags=["sessions"])
FilterQuery = Annotated[str | None, Query(min_length=1, max_length=512, pattern=r"^[^\x00]*$")]
WindowQuery = Annotated[
    int | None,
    Query(
        ge=1,
        le=WINDOW_MAX_SECONDS,
        description="add figures over the last N seconds (`window`): created, ended, peak live, lifetimes",
    ),
]


def query_filters(request: Request, allowed: set[str], values: dict[str, str | None]) -> dict[str, str]:
    """The given filters, after refusing unknown query parameters (a typo must not widen a list or a
    revocation to everything)."""
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise ValidationFailed([{"field": name, "message": "unknown query parameter"} for name in unknown])
    filters = {name: value for name, value in values.items() if value is not None}
    if "principal" in filters:  # compared the way bindings are (normalise_principal)
        filters["principal"] = normalise_principal(filters["principal"])
        if not filters["principal"]:
            raise ValidationFailed.one("principal", "must not be blank")
    return filters


@router.get(
    "/sessions",
    response_model=SessionPage,
    responses=problem_responses(*COMMON_PROBLEMS, 422),
    summary="List live sessions (keyset pagination, ordered by id)",
)
async def list_sessions(
    request: Request,
    service: ServiceDep,
    tenant: TenantDep,
    kind: FilterQuery = None,
    principal: FilterQuery = None,
    client_id: FilterQuery = None,
    owner: FilterQuery = None,
    protocol_version: FilterQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=2048, description="opaque; from `next_cursor`")] = None,
) -> Response:
    filters = query_filters(
        request,
        {*LIST_FILTERS, "limit", "cursor"},
        {
            "kind": kind,
            "principal": principal,
            "client_id": client_id,
            "owner": owner,
            "protocol_version": protocol_version,
        },
    )
    items, next_cursor = await service.list(tenant, filters, cursor, limit)
    return json_response({"items": items, "next_cursor": next_cursor})


@router.delete(
    "/sessions",
    response_model=RevokeResult,
    responses=problem_responses(*COMMON_PROBLEMS, 422),
    summary="Revoke: end every live session matching the filters (a filter, or all=true, is required)",
)
async def revoke_sessions(
    request: Request,
    service: ServiceDep,
    tenant: TenantDep,
    principal: FilterQuery = None,
    client_id: FilterQuery = None,
    owner: FilterQuery = None,
    kind: FilterQuery = None,
    all_: Annotated[
        str | None,
        Query(
            alias="all",
            pattern="^(true|false)$",
            description="`true` ends every live session of the tenant (no filters then)",
        ),
    ] = None,
) -> Response:
    filters = query_filters(
        request,
        {*REVOKE_FILTERS, "all"},
        {"principal": principal, "client_id": client_id, "owner": owner, "kind": kind},
    )
    revoked = await service.revoke(tenant, filters, everything=all_ == "true")
    return json_response({"revoked": revoked})


@router.get(
    "/stats",
    response_model=Stats,
    responses=problem_responses(*COMMON_PROBLEMS, 422),
    summary="The tenant's live sessions, totals and configured limits; with window_seconds, a recent window",
)
async def get_stats(
    request: Request, runtime: RuntimeDep, tenant: TenantDep, window_seconds: WindowQuery = None
) -> Response:
    query_filters(request, {"window_seconds"}, {})
    return json_response(await runtime.stats.of_tenant(tenant, window_seconds))
