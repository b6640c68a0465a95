"""A session's pending server-to-client requests and the client replies that end them (docs/design.md,
"Pending requests")."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from app.http import core
from app.http.bodies import JSON_TYPES, json_response, require_json_body
from app.http.deps import BodyDep, PrincipalDep, ServiceDep, SessionIdPath, TenantDep
from app.http.openapi import BODY_PROBLEMS, COMMON_PROBLEMS, problem_responses, request_body
from app.pending import MAX_WAIT_SECONDS
from app.rules import issued_id
from app.work_schemas import PendingRecord, PendingRequest, Reply

router = APIRouter(prefix="/v1", tags=["pending"])

# As lease ids: unchecked, an id that was never issued is not found.
PendingIdPath = Annotated[str, Path(description="the pending request's id, as recorded")]


@router.post(
    "/sessions/{session_id}/pending",
    status_code=201,
    response_model=PendingRequest,
    responses=problem_responses(*COMMON_PROBLEMS, *BODY_PROBLEMS, 404, 409, 413, 415, 422),
    openapi_extra=request_body(PendingRecord, JSON_TYPES, required=True),
    summary="Record a server-to-client request (elicitation, sampling, roots) the caller waits for",
)
async def record_pending(
    request: Request,
    session_id: SessionIdPath,
    service: ServiceDep,
    tenant: TenantDep,
    principal: PrincipalDep,
    body: BodyDep,
) -> Response:
    what = "a JSON object with request_id, method, holder and timeout_seconds"
    wanted = require_json_body(request, body, PendingRecord, what)
    recorded = await service.pending.record(
        tenant,
        core.decode_session_id(session_id),
        principal,
        request_id=wanted.request_id,
        method=wanted.method,
        holder=wanted.holder,
        timeout_seconds=wanted.timeout_seconds,
    )
    return json_response(recorded, 201)


@router.get(
    "/sessions/{session_id}/pending/{pending_id}",
    response_model=PendingRequest,
    responses=problem_responses(*COMMON_PROBLEMS, 404, 422),
    summary="Read a pending request; with wait_seconds, answer once it has ended (or the wait is over)",
)
async def get_pending(
    session_id: SessionIdPath,
    pending_id: PendingIdPath,
    service: ServiceDep,
    tenant: TenantDep,
    principal: PrincipalDep,
    wait_seconds: Annotated[
        float, Query(ge=0, le=MAX_WAIT_SECONDS, description="wait up to this long for the request to end")
    ] = 0,
) -> Response:
    current = await service.pending.wait(
        tenant,
        core.decode_session_id(session_id),
        principal,
        _id(pending_id),
        wait_seconds,
    )
    return json_response(current)


@router.delete(
    "/sessions/{session_id}/pending/{pending_id}",
    response_model=PendingRequest,
    responses=problem_responses(*COMMON_PROBLEMS, 404, 409),
    summary="Cancel a pending request (409 `pending-request-ended` once it has ended)",
)
async def cancel_pending(
    session_id: SessionIdPath,
    pending_id: PendingIdPath,
    service: ServiceDep,
    tenant: TenantDep,
    principal: PrincipalDep,
) -> Response:
    cancelled = await service.pending.cancel(
        tenant, core.decode_session_id(session_id), principal, _id(pending_id)
    )
    return json_response(cancelled)


@router.post(
    "/sessions/{session_id}/replies",
    response_model=PendingRequest,
    responses=problem_responses(*COMMON_PROBLEMS, *BODY_PROBLEMS, 404, 409, 413, 415, 422),
    openapi_extra=request_body(Reply, JSON_TYPES, required=True),
    summary="Hand over a client's JSON-RPC reply; refused without effect for an unknown or ended request",
)
async def answer_pending(
    request: Request,
    session_id: SessionIdPath,
    service: ServiceDep,
    tenant: TenantDep,
    principal: PrincipalDep,
    body: BodyDep,
) -> Response:
    reply = require_json_body(request, body, Reply, "the client's JSON-RPC response (an object)")
    answered = await service.pending.answer(
        tenant, core.decode_session_id(session_id), principal, reply.model_dump(exclude_none=True)
    )
    return json_response(answered)


def _id(segment: str) -> str:
    """The id in a path segment (still percent-encoded), as the statements compare it."""
    return issued_id(core.decode_session_id(segment))
