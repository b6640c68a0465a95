"""Error types that carry their HTTP status and render themselves as RFC 9457 problem+json.

Every error the API can answer is a `Problem` subclass with a stable `type` URI. Routes list the
statuses they can answer (`app.http.openapi.problem_responses`) so `openapi.yaml` documents every one;
`app.http.errors` turns exceptions into responses.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "urn:session-broker:problem:"


class Problem(Exception):
    """Base of every API error. Subclasses fix `status`, `slug` and `title`."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal server error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extensions = {key: value for key, value in extensions.items() if value is not None}

    @classmethod
    def type_uri(cls) -> str:
        return PROBLEM_TYPE_BASE + cls.slug

    def body(self, instance: str | None = None) -> dict[str, Any]:
        document: dict[str, Any] = {
            "type": self.type_uri(),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance is not None:
            document["instance"] = instance
        document.update(self.extensions)
        return document

    def render(self, instance: str | None = None) -> bytes:
        return orjson.dumps(self.body(instance))


class DuplicateHeader(Problem):
    status, slug, title = 400, "duplicate-header", "A header that must appear once appeared more than once"

    def __init__(self, name: str) -> None:
        super().__init__(f"Send the {name} header once.", header=name)


class Unauthorized(Problem):
    status, slug, title = 401, "unauthorized", "Missing or invalid API key"

    def __init__(self, detail: str, *, invalid_token: bool = False) -> None:
        challenge = 'Bearer realm="session-broker"'
        if invalid_token:
            challenge += ', error="invalid_token"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class AdminRequired(Problem):
    status, slug, title = 403, "admin-required", "This operation needs an admin API key"


class TenantKeyRequired(Problem):
    status, slug, title = 403, "tenant-key-required", "This operation needs a tenant API key"


class PrincipalMismatch(Problem):
    """Only used when PRINCIPAL_MISMATCH_STATUS=403; by default a mismatch is a plain SessionNotFound."""

    status, slug, title = 403, "principal-mismatch", "The session is bound to another principal"


class SessionNotFound(Problem):
    status, slug, title = 404, "session-not-found", "Session not found"

    def __init__(self, reason: str | None = None) -> None:
        detail = "No live session has this id." if reason is None else f"The session has ended ({reason})."
        super().__init__(detail, reason=reason)


class RouteNotFound(Problem):
    status, slug, title = 404, "not-found", "No such resource"


class MethodNotAllowed(Problem):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"


class NotAcceptable(Problem):
    status, slug, title = 406, "not-acceptable", "Not acceptable"


class SessionExists(Problem):
    status, slug, title = 409, "session-exists", "A live session already has this id"


class SessionIdRetired(Problem):
    status, slug, title = 409, "session-id-retired", "This session id has ended and cannot be reused yet"

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"A session with this id ended ({reason}); its id cannot be registered again while the service "
            "remembers it.",
            reason=reason,
        )


class IdempotencyConflict(Problem):
    status, slug, title = (
        409,
        "idempotency-key-conflict",
        "A request with this Idempotency-Key is in progress",
    )

    def __init__(self) -> None:
        super().__init__(
            "Concurrent requests with this Idempotency-Key kept colliding; retry with the same key.",
            headers={"Retry-After": "1"},
        )


class PreconditionFailed(Problem):
    status, slug, title = 412, "precondition-failed", "The session has changed (If-Match failed)"


class RequestTimeout(Problem):
    status, slug, title = 408, "request-timeout", "The request did not arrive in time"


class HeadersTooLarge(Problem):
    status, slug, title = 431, "headers-too-large", "The request line and headers are too large"


class PayloadTooLarge(Problem):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class MetadataTooLarge(Problem):
    status, slug, title = 413, "metadata-too-large", "Metadata exceeds the configured size limit"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"metadata is {size} bytes encoded as JSON; the limit is {limit} bytes "
            "(SESSION_BROKER_MAX_METADATA_BYTES).",
            field="metadata",
            limit=limit,
        )


class UnsupportedMediaType(Problem):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class ValidationFailed(Problem):
    status, slug, title = 422, "validation-error", "The request is invalid"

    def __init__(self, errors: list[dict[str, str]]) -> None:
        detail = "; ".join(f"{error['field']}: {error['message']}" for error in errors)
        super().__init__(detail, errors=errors)

    @classmethod
    def one(cls, field: str, message: str) -> ValidationFailed:
        return cls([{"field": field, "message": message}])


class IdempotencyKeyReused(Problem):
    status, slug, title = 422, "idempotency-key-reused", "The Idempotency-Key was used for another request"

    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was sent before with a different request; use a new key for a new request.",
            field="Idempotency-Key",
        )


class QuotaExceeded(Problem):
    status, slug, title = 429, "quota-exceeded", "A session quota is full"


class SessionRequestLimit(Problem):
    status, slug, title = 429, "session-request-limit", "The session has used up its requests"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"This session may be touched {limit} times in its life (max_requests); it stays readable "
            "until it expires. Create a new session to continue.",
            limit=limit,
        )


class SessionRateLimited(Problem):
    status, slug, title = 429, "session-rate-limited", "The session is over its per-minute request limit"

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(
            f"This session may be touched {limit} times per minute (max_requests_per_minute); retry in "
            f"{retry_after} s.",
            headers={"Retry-After": str(retry_after)},
            limit=limit,
            retry_after=retry_after,
        )


class InternalError(Problem):
    status, slug, title = 500, "internal-error", "Internal server error"


class DatabaseUnavailable(Problem):
    status, slug, title = 503, "database-unavailable", "The session store is unavailable"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


ALL_PROBLEMS: tuple[type[Problem], ...] = (
    DuplicateHeader,
    Unauthorized,
    AdminRequired,
    TenantKeyRequired,
    PrincipalMismatch,
    SessionNotFound,
    RouteNotFound,
    MethodNotAllowed,
    NotAcceptable,
    SessionExists,
    SessionIdRetired,
    IdempotencyConflict,
    PreconditionFailed,
    RequestTimeout,
    PayloadTooLarge,
    MetadataTooLarge,
    UnsupportedMediaType,
    HeadersTooLarge,
    ValidationFailed,
    IdempotencyKeyReused,
    QuotaExceeded,
    SessionRequestLimit,
    SessionRateLimited,
    InternalError,
    DatabaseUnavailable,
)


# --- work across replicas (docs/design.md, "Leases", "Pending requests") -------------------------------


class LeasesFull(Problem):
    status, slug, title = 409, "session-leases-full", "Every stream lease of the session is held"

    def __init__(self, max_leases: int, retry_after: int) -> None:
        super().__init__(
            f"This session admits {max_leases} live stream lease(s) (max_leases) and all are held; the "
            f"earliest expires in about {retry_after} s unless its holder renews it.",
            headers={"Retry-After": str(retry_after)},
            max_leases=max_leases,
        )


class LeaseLost(Problem):
    status, slug, title = 409, "lease-lost", "The lease expired or was taken over"

    def __init__(self) -> None:
        super().__init__(
            "This lease is not held any more (it expired, was released or another replica took the slot); "
            "stop serving the stream and acquire a new lease."
        )


class InFlightMarkNotFound(Problem):
    status, slug, title = 404, "in-flight-mark-not-found", "No live in-flight mark has this id"


class PendingRequestExists(Problem):
    status, slug, title = 409, "pending-request-exists", "The session already has a request with this id"


class PendingRequestNotFound(Problem):
    status, slug, title = 404, "pending-request-not-found", "No pending request of this session has this id"


class PendingRequestEnded(Problem):
    status, slug, title = 409, "pending-request-ended", "The pending request has already ended"

    def __init__(self, state: str) -> None:
        super().__init__(f"The request ended ({state}); a reply to it changes nothing.", state=state)


WORK_PROBLEMS: tuple[type[Problem], ...] = (
    LeasesFull,
    LeaseLost,
    InFlightMarkNotFound,
    PendingRequestExists,
    PendingRequestNotFound,
    PendingRequestEnded,
)
ALL_PROBLEMS = (*ALL_PROBLEMS, *WORK_PROBLEMS)
