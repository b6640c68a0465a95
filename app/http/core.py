"""The handler core of the session operations that have a lean hot path (touch, create) — and of
register, which shares create's answer. The FastAPI routes (`routes/sessions.py`) and the hot path
(`hot_path.py`) both call these, so each behaviour exists once; the callers only differ in how they
authenticate and read the request, and they do that through the same functions (`headers.py`,
`bodies.py`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

from starlette.responses import Response

from app.creating import Created
from app.errors import ValidationFailed
from app.http.bodies import JSON_TYPES, json_response, parse_json_body
from app.rules import etag, is_valid_session_id
from app.schemas import SessionCreate, TouchRequest
from app.service import SessionService

SESSIONS_PATH = "/v1/sessions"
# On an answer repeated from a remembered Idempotency-Key (the body is the first answer's, byte for byte).
REPLAYED_HEADER = "Idempotent-Replayed"


def decode_session_id(segment: str) -> str:
    """The path segment stays percent-encoded through routing (see RawSessionPathMiddleware); decode it
    exactly once."""
    return unquote(segment, errors="replace")


def session_response(session: dict[str, Any], status_code: int = 200, *, created: bool = False) -> Response:
    """A session as JSON with its ETag (and, for one that came into existence, its Location)."""
    headers = {"ETag": etag(session["version"])}
    if created:
        headers["Location"] = f"{SESSIONS_PATH}/{quote(session['id'], safe='')}"
    return json_response(session, status_code, headers)


def created_response(created: Created) -> Response:
    """201 for a session that came into existence, now or (replayed) for the first request of its key."""
    response = session_response(created.session, 201, created=True)
    if created.replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return response


async def touch_session(
    service: SessionService, tenant: str, segment: str, principal: str | None, body: bytes, content_type: str
) -> Response:
    analytics = parse_json_body(body, content_type, TouchRequest, JSON_TYPES)
    touched = await service.touch(tenant, decode_session_id(segment), principal, analytics)
    return json_response({"id": touched.id, "expires_at": touched.expires_at})


async def create_session(
    service: SessionService,
    tenant: str,
    body: bytes,
    content_type: str,
    segment: str | None = None,
    idempotency_key: str | None = None,
) -> Response:
    """Create with a minted id, or register the id in `segment` (422 for an impossible id); with an
    `idempotency_key` (from `headers.idempotency_key_of`), a retry answers what the first request did."""
    session_id = None if segment is None else decode_session_id(segment)
    if session_id is not None and not is_valid_session_id(session_id):
        raise ValidationFailed.one("session_id", "must be 1-255 characters of visible ASCII (0x21-0x7E)")
    request = parse_json_body(body, content_type, SessionCreate, JSON_TYPES) or SessionCreate()
    created = await service.create(tenant, request, session_id=session_id, idempotency_key=idempotency_key)
    return created_response(created)
