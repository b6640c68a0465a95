"""The tenant's lifecycle events as Server-Sent Events (`app/events.py` reads and frames them)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from app import events
from app.http.deps import RuntimeDep, TenantDep
from app.http.openapi import COMMON_PROBLEMS, problem_responses

MAX_EVENT_ID = 2**63 - 1  # positions are bigint


def _at_most(limit: int) -> str:
    """A regular expression for the decimal numbers 0..`limit` (leading zeros allowed), so the contract
    says exactly which ids are accepted."""
    digits = str(limit)
    shorter = f"[0-9]{{0,{len(digits) - 1}}}"
    same_length = [
        digits[:i]
        + (f"[0-{int(digits[i]) - 1}]" if digits[i] != "1" else "0")
        + f"[0-9]{{{len(digits) - i - 1}}}"
        for i in range(len(digits))
        if digits[i] != "0"
    ]
    return "^(" + "|".join([shorter, *same_length, digits]) + ")$"


EVENT_ID_PATTERN = _at_most(MAX_EVENT_ID)

router = APIRouter(prefix="/v1", tags=["sessions"])

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
        **problem_responses(*COMMON_PROBLEMS, 422),
    },
    summary="Stream the tenant's lifecycle events (resume with Last-Event-ID)",
)
async def stream_events(
    request: Request,
    runtime: RuntimeDep,
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
    raw = last_event_id_header or last_event_id  # both validated by EVENT_ID_PATTERN: 0..MAX_EVENT_ID
    cursor = int(raw) if raw else None
    # A 503 happens here, before the stream starts.
    start, notice = await events.starting_point(runtime.db, tenant, cursor)
    return StreamingResponse(
        events.stream(runtime.db, tenant, start, notice, request.is_disconnected, runtime.stopping),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
