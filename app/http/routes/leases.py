"""A session's stream leases: acquire, renew, release (docs/design.md, "Leases")."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from app.http import core
from app.http.bodies import JSON_TYPES, json_response, parse_json_body, require_json_body
from app.http.deps import BodyDep, PrincipalDep, ServiceDep, SessionIdPath, TenantDep
from app.http.openapi import BODY_PROBLEMS, COMMON_PROBLEMS, problem_responses, request_body
from app.rules import issued_id
from app.work_schemas import LeaseAcquire, LeaseGranted, LeaseRenew

router = APIRouter(prefix="/v1", tags=["leases"])

# No length check: the segment arrives percent-encoded (RawSessionPathMiddleware); an id that was never
# issued is simply not found.
LeaseIdPath = Annotated[str, Path(description="the lease's id, as acquired")]


@router.post(
    "/sessions/{session_id}/leases",
    status_code=201,
    response_model=LeaseGranted,
    responses=problem_responses(*COMMON_PROBLEMS, *BODY_PROBLEMS, 404, 409, 413, 415, 422),
    openapi_extra=request_body(LeaseAcquire, JSON_TYPES, required=True),
    summary="Acquire a stream lease (409 `session-leases-full` while max_leases live leases are held)",
)
async def acquire_lease(
    request: Request,
    session_id: SessionIdPath,
    service: ServiceDep,
    tenant: TenantDep,
    principal: PrincipalDep,
    body: BodyDep,
) -> Response:
    wanted = require_json_body(request, body, LeaseAcquire, "a JSON object with holder and ttl_seconds")
    lease = await service.leases.acquire(
        tenant, core.decode_session_id(session_id), principal, wanted.holder, wanted.ttl_seconds
    )
    return json_response(lease, 201)


@router.put(
    "/sessions/{session_id}/leases/{lease_id}",
    response_model=LeaseGranted,
    responses=problem_responses(*COMMON_PROBLEMS, *BODY_PROBLEMS, 404, 409, 413, 415, 422),
    openapi_extra=request_body(LeaseRenew, JSON_TYPES, required=False),
    summary="Renew a stream lease (409 `lease-lost` when it expired or was taken over)",
)
async def renew_lease(
    request: Request,
    session_id: SessionIdPath,
    lease_id: LeaseIdPath,
    service: ServiceDep,
    tenant: TenantDep,
    principal: PrincipalDep,
    body: BodyDep,
) -> Response:
    renew = parse_json_body(body, request.headers.get("content-type", ""), LeaseRenew, JSON_TYPES)
    ttl = renew.ttl_seconds if renew is not None else None
    lease = await service.leases.renew(
        tenant,
        core.decode_session_id(session_id),
        principal,
        _id(lease_id),
        ttl,
    )
    return json_response(lease)


@router.delete(
    "/sessions/{session_id}/leases/{lease_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(*COMMON_PROBLEMS, 404, 409),
    summary="Release a stream lease",
)
async def release_lease(
    session_id: SessionIdPath,
    lease_id: LeaseIdPath,
    service: ServiceDep,
    tenant: TenantDep,
    principal: PrincipalDep,
) -> Response:
    await service.leases.release(tenant, core.decode_session_id(session_id), principal, _id(lease_id))
    return Response(status_code=204)


def _id(segment: str) -> str:
    """The id in a path segment (still percent-encoded), as the statements compare it."""
    return issued_id(core.decode_session_id(segment))
