"""Request and response bodies: read a body to its end, parse JSON strictly, answer JSON.

A body the client never finished is a client disconnect, not a shorter body: `read_body` raises
`ClientDisconnect`, so no handler acts on half a request (a create cut off mid-way creates nothing).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive

from app.errors import RequestTimeout, UnsupportedMediaType, ValidationFailed

Model = TypeVar("Model", bound=BaseModel)
JSON_TYPES = frozenset({"application/json"})
MERGE_PATCH_TYPES = frozenset({"application/merge-patch+json", "application/json"})

# orjson reads an integer beyond 64 bits as a float, which is another number than the one sent (and it
# cannot write such an integer back). A body with a run of 20 digits (the widest 64-bit integers have 19
# or 20) is parsed again by the standard library, which keeps integers exact, to find and name any such
# field: it is refused, never stored changed.
_LONG_DIGIT_RUN = re.compile(rb"\d{20}")
INT_MIN, UINT_MAX = -(2**63), 2**64 - 1


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


def _integer_beyond_64_bits(value: Any, path: tuple[str, ...]) -> tuple[str, ...] | None:
    """Where in a parsed JSON value the first integer outside 64 bits is, if any."""
    if isinstance(value, int) and not isinstance(value, bool):
        return path if not INT_MIN <= value <= UINT_MAX else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _integer_beyond_64_bits(item, (*path, str(key)))
        if found is not None:
            return found
    return None


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
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ValidationFailed.one("body", f"is not valid JSON ({error})") from None
    if _LONG_DIGIT_RUN.search(body):
        beyond = _integer_beyond_64_bits(json.loads(body), ())
        if beyond is not None:
            where = ".".join(beyond) or "body"
            raise ValidationFailed.one(where, "is an integer beyond 64 bits, which cannot be kept exactly")
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
        orjson.dumps(data, option=orjson.OPT_UTC_Z),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )
