"""A session's in-flight marks: begin, renew, end (docs/design.md, "In-flight work")."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from app.http import core
from app.http.bodies import JSON_TYPES, json_response, require_json_body
from app.http.deps import BodyDep, PrincipalDep, ServiceDep, SessionIdPath, TenantDep
from app.http.openapi import BODY_PROBLEMS, COMMON_PROBLEMS, problem_responses, request_body
from app.rules import issued_id
from app.work_schemas import InFlightBegin, InFlightEnded, InFlightMark, InFlightRenew

router = APIRouter(prefix="/v1", tags=["in-flight"])

# As lease ids: unchecked, an id that was never issued is not found.
MarkIdPath = Annotated[str, Path(description="the mark's id, as begun")]


@router.post(
    "/sessions/{session_id}/in-flight",
    status_code=201,
    response_model=InFlightMark,
    responses=problem_responses(*COMMON_PROBLEMS, *BODY_PROBLEMS, 404, 413, 415, 422),
    openapi_extra=request_body(InFlightBegin, JSON_TYPES, required=True),
    summary="Mark a request in flight: idle expiry waits for it (the absolute lifetime does not)",
)
async def begin_in_flight(
    request: Request,
    session_id: SessionIdPath,
    service: ServiceDep,
    tenant: TenantDep,
    principal: PrincipalDep,
    body: BodyDep,
) -> Response:
    begin = require_json_body(request, body, InFlightBegin, "a JSON object with ttl_seconds")
    mark = await service.in_flight.begin(
        tenant,
        core.decode_session_id(session_id),
        principal,
        ttl=begin.ttl_seconds,
        method=begin.method,
        holder=begin.holder,
    )
    return json_response(mark, 201)


@router.put(
    "/sessions/{session_id}/in-flight/{mark_id}",
    response_model=InFlightMark,
    responses=problem_responses(*COMMON_PROBLEMS, *BODY_PROBLEMS, 404, 413, 415, 422),
    openapi_extra=request_body(InFlightRenew, JSON_TYPES, required=True),
    summary="Renew an in-flight mark (404 `in-flight-mark-not-found` once it lapsed)",
)
async def renew_in_flight(
    request: Request,
    session_id: SessionIdPath,
    mark_id: MarkIdPath,
    service: ServiceDep,
    tenant: TenantDep,
    principal: PrincipalDep,
    body: BodyDep,
) -> Response:
    renew = require_json_body(request, body, InFlightRenew, "a JSON object with ttl_seconds")
    mark = await service.in_flight.renew(
        tenant,
        core.decode_session_id(session_id),
        principal,
        _id(mark_id),
        renew.ttl_seconds,
    )
    return json_response(mark)


@router.delete(
    "/sessions/{session_id}/in-flight/{mark_id}",
    response_model=InFlightEnded,
    responses=problem_responses(*COMMON_PROBLEMS, 404),
    summary="End an in-flight mark: the idle timeout counts from now again",
)
async def end_in_flight(
    session_id: SessionIdPath,
    mark_id: MarkIdPath,
    service: ServiceDep,
    tenant: TenantDep,
    principal: PrincipalDep,
) -> Response:
    ended = await service.in_flight.end(tenant, core.decode_session_id(session_id), principal, _id(mark_id))
    return json_response(ended)


def _id(segment: str) -> str:
    """The id in a path segment (still percent-encoded), as the statements compare it."""
    return issued_id(core.decode_session_id(segment))
