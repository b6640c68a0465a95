"""Thin HTTP handlers: authenticate, parse, call the service, serialise. Each lists its error responses
so `openapi.yaml` documents every status the route can answer."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar
from urllib.parse import quote, unquote

import orjson
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError

from app import events
from app.auth import Caller
from app.errors import (
    AdminRequired,
    UnsupportedMediaType,
    ValidationFailed,
)
from app.openapi_docs import problem_responses, request_body
from app.purge import purge_once, record
from app.repository import LIST_FILTERS, REVOKE_FILTERS
from app.schemas import (
    AdminStats,
    AnalyticsBatch,
    AnalyticsRecorded,
    PurgeRun,
    RevokeResult,
    SessionCreate,
    SessionPage,
    SessionPatch,
    SessionRead,
    Stats,
    TouchRequest,
    TouchResult,
)
from app.service import DEFAULT_PAGE_SIZE, SessionService, etag, is_valid_session_id

Model = TypeVar("Model", bound=BaseModel)
JSON_TYPES = frozenset({"application/json"})
IF_MATCH_PATTERN = r'^[ \t]*(\*|(W/)?"[\x21\x23-\x7e]*"([ \t]*,[ \t]*(W/)?"[\x21\x23-\x7e]*")*)[ \t]*$'
EVENT_ID_PATTERN = r"^[0-9]{0,19}$"
MERGE_PATCH_TYPES = frozenset({"application/merge-patch+json", "application/json"})


def json_response(data: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_UTC_Z),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


def validation_errors(error: ValidationError) -> list[dict[str, str]]:
    errors = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "body"
        message = "unknown field" if item["type"] == "extra_forbidden" else item["msg"]
        errors.append({"field": field, "message": message})
    return errors


async def read_json(request: Request, model: type[Model], media_types: frozenset[str]) -> Model | None:
    """Parse an optional JSON body strictly: wrong media type 415, bad JSON or fields 422 naming the field."""
    return parse_json_body(await request.body(), request.headers.get("content-type", ""), model, media_types)


def parse_json_body(
    body: bytes, content_type: str, model: type[Model], media_types: frozenset[str]
) -> Model | None:
    """The body rules shared by every handler (including the touch hot path): an empty body is None."""
    if not body.strip():
        return None
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in media_types:
        raise UnsupportedMediaType(f"Send the body as {' or '.join(sorted(media_types))}.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ValidationFailed.one("body", f"is not valid JSON ({error})") from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ValidationFailed(validation_errors(error)) from None


async def service_of(request: Request) -> SessionService:
    service: SessionService = request.app.state.service
    return service


async def tenant_of(request: Request) -> str:
    """Authenticate a tenant key (401 otherwise); admin keys address no tenant (403)."""
    tenant: str = request.app.state.keys.tenant_for(request.headers.get("authorization"))
    request.state.tenant = tenant
    return tenant


async def admin_of(request: Request) -> Caller:
    """Authenticate an admin key (401 otherwise); tenant keys get 403."""
    caller: Caller = request.app.state.keys.authenticate(request.headers.get("authorization"))
    if not caller.is_admin:
        raise AdminRequired("This operation crosses tenants and needs an admin API key.")
    request.state.tenant = "admin"
    return caller


def session_id_of(session_id: str) -> str:
    """The path segment stays percent-encoded through routing (see RawSessionPathMiddleware)."""
    return unquote(session_id, errors="replace")


def session_headers(session: dict[str, Any]) -> dict[str, str]:
    return {"ETag": etag(session["version"])}


ServiceDep = Annotated[SessionService, Depends(service_of)]
TenantDep = Annotated[str, Depends(tenant_of)]
AdminDep = Annotated[Caller, Depends(admin_of)]
# No pattern on purpose: an impossible id is "no such session" (404), except on register (422).
SessionIdPath = Annotated[
    str,
    # The pattern is documentation only: FastAPI sees the still-encoded segment, the service validates.
    Path(
        description="the session id, percent-encoded (ids may contain `/ ? # % +`)",
        json_schema_extra={"pattern": "^[\\x21-\\x7e]{1,255}$"},
    ),
]
PrincipalHeader = Annotated[
    str | None,
    Header(
        alias="Session-Principal",
        description="the end user the caller acts for; a session bound to another principal answers 404",
    ),
]

router = APIRouter(prefix="/v1", tags=["sessions"])
COMMON = (401, 403, 503)


@router.post(
    "/sessions",
    status_code=201,
    response_model=SessionRead,
    responses=problem_responses(*COMMON, 413, 415, 422, 429),
    openapi_extra=request_body(SessionCreate, JSON_TYPES, required=False),
    summary="Create a session (the service mints the id)",
)
async def create_session(request: Request, service: ServiceDep, tenant: TenantDep) -> Response:
    body = await read_json(request, SessionCreate, JSON_TYPES) or SessionCreate()
    session = await service.create(tenant, body)
    headers = session_headers(session)
    headers["Location"] = f"/v1/sessions/{quote(session['id'], safe='')}"
    return json_response(session, 201, headers)


@router.put(
    "/sessions/{session_id}",
    status_code=201,
    response_model=SessionRead,
    responses=problem_responses(*COMMON, 409, 413, 415, 422, 429),
    openapi_extra=request_body(SessionCreate, JSON_TYPES, required=False),
    summary="Register a session whose id was minted elsewhere (e.g. by an MCP SDK)",
)
async def register_session(
    request: Request, session_id: SessionIdPath, service: ServiceDep, tenant: TenantDep
) -> Response:
    session_id = session_id_of(session_id)
    if not is_valid_session_id(session_id):
        raise ValidationFailed.one("session_id", "must be 1-255 characters of visible ASCII (0x21-0x7E)")
    body = await read_json(request, SessionCreate, JSON_TYPES) or SessionCreate()
    session = await service.create(tenant, body, session_id=session_id)
    headers = session_headers(session)
    headers["Location"] = f"/v1/sessions/{quote(session_id, safe='')}"
    return json_response(session, 201, headers)


@router.get(
    "/sessions/{session_id}",
    response_model=SessionRead,
    responses=problem_responses(*COMMON, 404),
    summary="Read a session (does not touch it)",
)
async def get_session(
    session_id: SessionIdPath, service: ServiceDep, tenant: TenantDep, principal: PrincipalHeader = None
) -> Response:
    session = await service.get(tenant, session_id_of(session_id), principal or None)
    return json_response(session, headers=session_headers(session))


@router.post(
    "/sessions/{session_id}/touch",
    response_model=TouchResult,
    responses=problem_responses(*COMMON, 404, 413, 415, 422),
    openapi_extra=request_body(TouchRequest, JSON_TYPES, required=False),
    summary="Slide the idle expiry (capped by the absolute lifetime)",
)
async def touch_session(
    request: Request,
    session_id: SessionIdPath,
    service: ServiceDep,
    tenant: TenantDep,
    principal: PrincipalHeader = None,
) -> Response:
    analytics = await read_json(request, TouchRequest, JSON_TYPES)
    touched = await service.touch(tenant, session_id_of(session_id), principal or None, analytics)
    return json_response({"id": touched.id, "expires_at": touched.expires_at})


@router.patch(
    "/sessions/{session_id}",
    response_model=SessionRead,
    responses=problem_responses(*COMMON, 404, 412, 413, 415, 422),
    openapi_extra=request_body(SessionPatch, MERGE_PATCH_TYPES, required=True),
    summary="Update metadata, owner, client_id, protocol_version (JSON Merge Patch)",
)
async def patch_session(
    request: Request,
    session_id: SessionIdPath,
    service: ServiceDep,
    tenant: TenantDep,
    principal: PrincipalHeader = None,
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
    patch = await read_json(request, SessionPatch, MERGE_PATCH_TYPES)
    if patch is None:
        raise ValidationFailed.one("body", "a JSON Merge Patch document (an object) is required")
    session = await service.patch(tenant, session_id_of(session_id), principal or None, patch, if_match)
    return json_response(session, headers=session_headers(session))


@router.delete(
    "/sessions/{session_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(*COMMON, 404),
    summary="End a session",
)
async def delete_session(
    session_id: SessionIdPath, service: ServiceDep, tenant: TenantDep, principal: PrincipalHeader = None
) -> Response:
    await service.delete(tenant, session_id_of(session_id), principal or None)
    return Response(status_code=204)


FilterQuery = Annotated[str | None, Query(min_length=1, max_length=512, pattern=r"^[^\x00]*$")]


def query_filters(request: Request, allowed: set[str], values: dict[str, str | None]) -> dict[str, str]:
    """The given filters, after refusing unknown query parameters (a typo must not widen a list or a
    revocation to everything)."""
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise ValidationFailed([{"field": name, "message": "unknown query parameter"} for name in unknown])
    return {name: value for name, value in values.items() if value is not None}


@router.get(
    "/sessions",
    response_model=SessionPage,
    responses=problem_responses(*COMMON, 422),
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


@router.get(
    "/stats",
    response_model=Stats,
    responses=problem_responses(*COMMON),
    summary="The tenant's live sessions, totals and configured limits",
)
async def get_stats(service: ServiceDep, tenant: TenantDep) -> Response:
    return json_response(await service.stats(tenant))


@router.delete(
    "/sessions",
    response_model=RevokeResult,
    responses=problem_responses(*COMMON, 422),
    summary="Revoke: end every live session matching the filters (at least one filter is required)",
)
async def revoke_sessions(
    request: Request,
    service: ServiceDep,
    tenant: TenantDep,
    principal: FilterQuery = None,
    client_id: FilterQuery = None,
    owner: FilterQuery = None,
    kind: FilterQuery = None,
) -> Response:
    filters = query_filters(
        request,
        set(REVOKE_FILTERS),
        {"principal": principal, "client_id": client_id, "owner": owner, "kind": kind},
    )
    return json_response({"revoked": await service.revoke(tenant, filters)})


@router.post(
    "/sessions/{session_id}/rotate",
    status_code=201,
    response_model=SessionRead,
    responses=problem_responses(*COMMON, 404),
    summary="Rotate: move the session to a new minted id; the old id ends with reason `rotated`",
)
async def rotate_session(
    session_id: SessionIdPath, service: ServiceDep, tenant: TenantDep, principal: PrincipalHeader = None
) -> Response:
    session = await service.rotate(tenant, session_id_of(session_id), principal or None)
    headers = session_headers(session)
    headers["Location"] = f"/v1/sessions/{quote(session['id'], safe='')}"
    return json_response(session, 201, headers)


@router.post(
    "/analytics",
    response_model=AnalyticsRecorded,
    responses=problem_responses(*COMMON, 413, 415, 422),
    openapi_extra=request_body(AnalyticsBatch, JSON_TYPES, required=True),
    summary="Report the outcomes of gateway requests in a batch (request analytics without a touch)",
)
async def report_requests(request: Request, service: ServiceDep, tenant: TenantDep) -> Response:
    batch = await read_json(request, AnalyticsBatch, JSON_TYPES)
    if batch is None:
        raise ValidationFailed.one("body", "a JSON object with `requests` is required")
    return json_response({"recorded": service.record_requests(tenant, batch.requests)})


# One SSE frame as schemathesis and OpenAPI 3.2 see it: `event`, `data` (JSON), `id`.
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {
            "type": "string",
            "enum": [*events.EVENT_TYPES, "stream.open", "stream.gap", "stream.error"],
        },
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "retry": {"type": "integer"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {
                "anyOf": [
                    {"$ref": "#/components/schemas/StreamEvent"},
                    {"$ref": "#/components/schemas/StreamNotice"},
                ]
            },
        },
    },
}


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-Sent Events: first `stream.open` (or `stream.gap` when events were lost "
            "to retention before the client resumed), then `session.created`, `session.updated`, "
            "`session.ended`, `session.rotated`, each with an increasing `id`",
            "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
        },
        **problem_responses(*COMMON, 422),
    },
    summary="Stream the tenant's lifecycle events (resume with Last-Event-ID)",
)
async def stream_events(
    request: Request,
    tenant: TenantDep,
    last_event_id_header: Annotated[
        str | None,
        Header(alias="Last-Event-ID", pattern=EVENT_ID_PATTERN, description="resume after this event id"),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Query(pattern=EVENT_ID_PATTERN, description="same as the Last-Event-ID header (the header wins)"),
    ] = None,
) -> StreamingResponse:
    raw = last_event_id_header or last_event_id  # both validated as digits by EVENT_ID_PATTERN
    cursor = int(raw) if raw else None
    db = request.app.state.db
    start, notice = await events.starting_point(db, cursor)  # 503 here, before the stream starts
    return StreamingResponse(
        events.stream(db, tenant, start, notice, request.is_disconnected, request.app.state.stopping),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


admin_router = APIRouter(prefix="/v1/admin", tags=["admin"])


@admin_router.get(
    "/stats",
    response_model=AdminStats,
    responses=problem_responses(*COMMON),
    summary="Admin: live sessions and totals of every tenant",
)
async def get_admin_stats(service: ServiceDep, admin: AdminDep) -> Response:
    return json_response(await service.stats_of_all_tenants())


@admin_router.post(
    "/purge",
    response_model=PurgeRun,
    responses=problem_responses(*COMMON),
    summary="Admin: run a purge now (skipped if another replica is purging)",
)
async def run_purge(request: Request, admin: AdminDep) -> Response:
    result = await purge_once(request.app.state.db, request.app.state.settings)
    record(result)
    return json_response(result.summary())
