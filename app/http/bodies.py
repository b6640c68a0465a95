"""Request and response bodies: read a body to its end, parse JSON strictly, answer JSON.

A body the client never finished is a client disconnect, not a shorter body: `read_body` raises
`ClientDisconnect`, so no handler acts on half a request (a create cut off mid-way creates nothing).
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive

from app import jsonio
from app.errors import RequestTimeout, UnsupportedMediaType, ValidationFailed

Model = TypeVar("Model", bound=BaseModel)
JSON_TYPES = frozenset({"application/json"})
MERGE_PATCH_TYPES = frozenset({"application/merge-patch+json", "application/json"})


async def read_body(receive: Receive, timeout: float) -> bytes:  # noqa: ASYNC109 (a limit, not a wrapper)
    """The whole request body; `ClientDisconnect` if the client went away before sending all of it, 408
    if it takes longer than `timeout` seconds (HTTP_BODY_TIMEOUT_SECONDS: a slow client must not hold a
    request open indefinitely)."""
    chunks = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                message: Message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise RequestTimeout(f"The request body did not arrive within {timeout:g} s.") from None


def validation_errors(error: ValidationError) -> list[dict[str, str]]:
    errors = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "body"
        message = "unknown field" if item["type"] == "extra_forbidden" else item["msg"]
        errors.append({"field": field, "message": message})
    return errors


def parse_json_body(
    body: bytes, content_type: str, model: type[Model], media_types: frozenset[str]
) -> Model | None:
    """Parse an optional JSON body strictly: an empty body is None; wrong media type 415; bad JSON or
    fields 422 naming the field."""
    if not body.strip():
        return None
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in media_types:
        raise UnsupportedMediaType(f"Send the body as {' or '.join(sorted(media_types))}.")
    try:
        data = jsonio.loads(body)  # integers exact, also past 64 bits
    except orjson.JSONDecodeError as error:
        raise ValidationFailed.one("body", f"is not valid JSON ({error})") from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ValidationFailed(validation_errors(error)) from None


def require_json_body(
    request: Request, body: bytes, model: type[Model], what: str, media_types: frozenset[str] = JSON_TYPES
) -> Model:
    """`parse_json_body` for a body the route cannot do without: an empty one is a 422 saying `what`
    was expected."""
    parsed = parse_json_body(body, request.headers.get("content-type", ""), model, media_types)
    if parsed is None:
        raise ValidationFailed.one("body", f"{what} is required")
    return parsed


def json_response(data: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        jsonio.dumps(data, jsonio.OPT_UTC_Z),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )
