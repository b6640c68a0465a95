"""One session: create, register, read, touch, patch, end, rotate."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from app.http import core
from app.http.bodies import JSON_TYPES, MERGE_PATCH_TYPES, require_json_body
from app.http.deps import BodyDep, IdempotencyKeyDep, PrincipalDep, ServiceDep, SessionIdPath, TenantDep
from app.http.openapi import BODY_PROBLEMS, COMMON_PROBLEMS, problem_responses, request_body
from app.schemas import SessionCreate, SessionPatch, SessionRead, TouchRequest, TouchResult

IF_MATCH_PATTERN = r'^[ \t]*(\*|(W/)?"[\x21\x23-\x7e]*"([ \t]*,[ \t]*(W/)?"[\x21\x23-\x7e]*")*)[ \t]*$'

router = APIRouter(prefix="/v1", tags=["sessions"])


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "")


@router.post(
    "/sessions",
    status_code=201,
    response_model=SessionRead,
    responses=problem_responses(*COMMON_PROBLEMS, *BODY_PROBLEMS, 409, 413, 415, 422, 429),
    openapi_extra=request_body(SessionCreate, JSON_TYPES, required=False),
    summary="Create a session (the service mints the id); retry safely with an Idempotency-Key",
)
async def create_session(
    request: Request,
    service: ServiceDep,
    tenant: TenantDep,
    idempotency_key: IdempotencyKeyDep,
    body: BodyDep,
) -> Response:
    return await core.create_session(
        service, tenant, body, _content_type(request), idempotency_key=idempotency_key
    )


@router.put(
    "/sessions/{session_id}",
    status_code=201,
    response_model=SessionRead,
    responses=problem_responses(*COMMON_PROBLEMS, *BODY_PROBLEMS, 409, 413, 415, 422, 429),
    openapi_extra=request_body(SessionCreate, JSON_TYPES, required=False),
    summary="Register a session whose id was minted elsewhere (e.g. by an MCP SDK)",
)
async def register_session(
    request: Request, session_id: SessionIdPath, service: ServiceDep, tenant: TenantDep, body: BodyDep
) -> Response:
    return await core.create_session(service, tenant, body, _content_type(request), segment=session_id)


@router.get(
    "/sessions/{session_id}",
    response_model=SessionRead,
    responses=problem_responses(*COMMON_PROBLEMS, 404),
    summary="Read a session (does not touch it)",
)
async def get_session(
    session_id: SessionIdPath, service: ServiceDep, tenant: TenantDep, principal: PrincipalDep
) -> Response:
    session = await service.get(tenant, core.decode_session_id(session_id), principal)
    return core.session_response(session)


@router.post(
    "/sessions/{session_id}/touch",
    response_model=TouchResult,
    responses=problem_responses(*COMMON_PROBLEMS, *BODY_PROBLEMS, 404, 413, 415, 422, 429),
    openapi_extra=request_body(TouchRequest, JSON_TYPES, required=False),
    summary="Slide the idle expiry (capped by the absolute lifetime); 429 past a request limit",
)
async def touch_session(
    request: Request,
    session_id: SessionIdPath,
    service: ServiceDep,
    tenant: TenantDep,
    principal: PrincipalDep,
    body: BodyDep,
) -> Response:
    return await core.touch_session(service, tenant, session_id, principal, body, _content_type(request))


@router.patch(
    "/sessions/{session_id}",
    response_model=SessionRead,
    responses=problem_responses(*COMMON_PROBLEMS, *BODY_PROBLEMS, 404, 412, 413, 415, 422),
    openapi_extra=request_body(SessionPatch, MERGE_PATCH_TYPES, required=True),
    summary="Update metadata, owner, client_id, protocol_version (JSON Merge Patch)",
)
async def patch_session(
    request: Request,
    session_id: SessionIdPath,
    service: ServiceDep,
    tenant: TenantDep,
    principal: PrincipalDep,
    body: BodyDep,
    if_match: Annotated[
        str | None,
        Header(
            alias="If-Match",
            description='`*` or ETags from previous reads, e.g. `"3"`; anything that matches no current ETag '
            "(including a malformed value) answers 412",
            json_schema_extra={"pattern": IF_MATCH_PATTERN},
        ),
    ] = None,
) -> Response:
    what = "a JSON Merge Patch document (an object)"
    patch = require_json_body(request, body, SessionPatch, what, MERGE_PATCH_TYPES)
    session = await service.patch(tenant, core.decode_session_id(session_id), principal, patch, if_match)
    return core.session_response(session)


@router.delete(
    "/sessions/{session_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(*COMMON_PROBLEMS, 404),
    summary="End a session",
)
async def delete_session(
    session_id: SessionIdPath, service: ServiceDep, tenant: TenantDep, principal: PrincipalDep
) -> Response:
    await service.delete(tenant, core.decode_session_id(session_id), principal)
    return Response(status_code=204)


@router.post(
    "/sessions/{session_id}/rotate",
    status_code=201,
    response_model=SessionRead,
    responses=problem_responses(*COMMON_PROBLEMS, 404, 409, 422),
    summary="Rotate: move the session to a new minted id; the old id ends with reason `rotated`",
)
async def rotate_session(
    session_id: SessionIdPath,
    service: ServiceDep,
    tenant: TenantDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKeyDep,
) -> Response:
    created = await service.rotate(tenant, core.decode_session_id(session_id), principal, idempotency_key)
    return core.created_response(created)
