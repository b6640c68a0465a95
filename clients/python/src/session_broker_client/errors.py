"""One exception per problem type the broker answers (`info.x-problem-types` in the repository's
`openapi.yaml`), built from its RFC 9457 body. Transport failures (connect errors, timeouts) are
`BrokerUnavailable` too: to a gateway, "the broker did not answer" and "the broker's store is down" call
for the same reaction (503, retry later), never for the 404 that makes an MCP client re-initialize."""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_TYPE_PREFIX = "urn:session-broker:problem:"


class BrokerError(Exception):
    """Base of every error the client raises. `problem` is the broker's problem document, if any."""

    slug: ClassVar[str] = ""

    def __init__(
        self, detail: str, *, status: int | None = None, problem: dict[str, Any] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.problem: dict[str, Any] = problem or {}

    @property
    def problem_type(self) -> str | None:
        return self._text("type")

    def _text(self, member: str) -> str | None:
        """A string member of the problem document (None when absent or of another type)."""
        value = self.problem.get(member)
        return value if isinstance(value, str) else None

    def _integer(self, member: str) -> int | None:
        value = self.problem.get(member)
        return value if isinstance(value, int) else None


class RetryAfterError(BrokerError):
    """An error whose answer says when to try again: `retry_after` is its `Retry-After` in seconds, or
    None when it sent none."""

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        problem: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail, status=status, problem=problem)
        self.retry_after = retry_after


class Unauthorized(BrokerError):
    slug = "unauthorized"


class AdminRequired(BrokerError):
    slug = "admin-required"


class TenantKeyRequired(BrokerError):
    slug = "tenant-key-required"


class PrincipalMismatch(BrokerError):
    """Only with the broker's PRINCIPAL_MISMATCH_STATUS=403; by default a mismatch is SessionNotFound."""

    slug = "principal-mismatch"


class SessionNotFound(BrokerError):
    """No live session has this id (for this tenant and principal). `reason` says why it ended, when the
    broker still remembers: deleted, expired_idle, expired_lifetime, evicted, revoked, rotated."""

    slug = "session-not-found"

    @property
    def reason(self) -> str | None:
        return self._text("reason")


class RouteNotFound(BrokerError):
    slug = "not-found"


class MethodNotAllowed(BrokerError):
    slug = "method-not-allowed"


class NotAcceptable(BrokerError):
    slug = "not-acceptable"


class SessionExists(BrokerError):
    slug = "session-exists"


class SessionIdRetired(BrokerError):
    """The id ended deliberately (deleted, revoked, rotated, evicted) and cannot be registered again yet."""

    slug = "session-id-retired"

    @property
    def reason(self) -> str | None:
        return self._text("reason")


class PreconditionFailed(BrokerError):
    slug = "precondition-failed"


class PayloadTooLarge(BrokerError):
    slug = "payload-too-large"


class MetadataTooLarge(BrokerError):
    slug = "metadata-too-large"

    @property
    def limit(self) -> int | None:
        return self._integer("limit")


class UnsupportedMediaType(BrokerError):
    slug = "unsupported-media-type"


class ValidationFailed(BrokerError):
    slug = "validation-error"

    @property
    def errors(self) -> list[dict[str, str]]:
        """The broker's field errors: `[{"field": ..., "message": ...}]`."""
        value = self.problem.get("errors")
        return [error for error in value if isinstance(error, dict)] if isinstance(value, list) else []


class QuotaExceeded(RetryAfterError):
    """A quota (tenant, principal or client) is full under policy `reject`."""

    slug = "quota-exceeded"

    @property
    def scope(self) -> str | None:
        return self._text("scope")

    @property
    def limit(self) -> int | None:
        return self._integer("limit")


class IdempotencyKeyReused(BrokerError):
    """The `Idempotency-Key` was sent before with a different request; use a new key for a new one."""

    slug = "idempotency-key-reused"


class IdempotencyKeyConflict(RetryAfterError):
    """Concurrent requests with this `Idempotency-Key` kept colliding; retry with the same key after
    `retry_after` seconds."""

    slug = "idempotency-key-conflict"


class SessionRequestLimit(BrokerError):
    """The session has used up its `max_requests` touches (it stays readable until it expires)."""

    slug = "session-request-limit"

    @property
    def limit(self) -> int | None:
        return self._integer("limit")


class SessionRateLimited(RetryAfterError):
    """The session is over its `max_requests_per_minute`; `retry_after` is the broker's `Retry-After`."""

    slug = "session-rate-limited"

    @property
    def limit(self) -> int | None:
        return self._integer("limit")


class DuplicateHeader(BrokerError):
    """A header that must appear once (e.g. `Idempotency-Key`) appeared more than once."""

    slug = "duplicate-header"

    @property
    def header(self) -> str | None:
        return self._text("header")


class RequestTimeout(BrokerError):
    slug = "request-timeout"


class HeadersTooLarge(BrokerError):
    slug = "headers-too-large"


class InternalError(BrokerError):
    slug = "internal-error"


# Work across replicas: stream leases, in-flight marks, pending server-to-client requests.


class LeasesFull(RetryAfterError):
    """Every stream lease of the session is held (409); `retry_after` says when the earliest expires."""

    slug = "session-leases-full"


class LeaseLost(BrokerError):
    """The lease expired, was released or was taken over (409): stop serving the stream."""

    slug = "lease-lost"


class InFlightMarkNotFound(BrokerError):
    slug = "in-flight-mark-not-found"


class PendingRequestExists(BrokerError):
    slug = "pending-request-exists"


class PendingRequestNotFound(BrokerError):
    """A reply for a request id the session has no request with: refused without effect (404)."""

    slug = "pending-request-not-found"


class PendingRequestEnded(BrokerError):
    """A reply to a request that has ended (answered, cancelled, timed_out): refused without effect (409)."""

    slug = "pending-request-ended"


class BrokerUnavailable(RetryAfterError):
    """The broker answered 503 (its store is down) or could not be reached (connect error, timeout).
    `retry_after` is the broker's `Retry-After` in seconds, or None when it sent none."""

    slug = "database-unavailable"


PROBLEM_CLASSES: dict[str, type[BrokerError]] = {
    cls.slug: cls
    for cls in (
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
        PreconditionFailed,
        PayloadTooLarge,
        MetadataTooLarge,
        UnsupportedMediaType,
        ValidationFailed,
        IdempotencyKeyReused,
        IdempotencyKeyConflict,
        QuotaExceeded,
        SessionRequestLimit,
        SessionRateLimited,
        DuplicateHeader,
        RequestTimeout,
        HeadersTooLarge,
        InternalError,
        LeasesFull,
        LeaseLost,
        InFlightMarkNotFound,
        PendingRequestExists,
        PendingRequestNotFound,
        PendingRequestEnded,
        BrokerUnavailable,
    )
}


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds (the broker sends delta-seconds); None if absent or not a number."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def error_from_problem(status: int, problem: dict[str, Any], retry_after: str | None) -> BrokerError:
    """The exception for a non-2xx answer. An unknown or missing problem type still maps by status, so a
    503 from a proxy in front of the broker is BrokerUnavailable, not a generic error."""
    slug = str(problem.get("type", "")).removeprefix(PROBLEM_TYPE_PREFIX)
    cls = PROBLEM_CLASSES.get(slug)
    if cls is None:
        cls = {503: BrokerUnavailable, 502: BrokerUnavailable, 504: BrokerUnavailable}.get(
            status, BrokerError
        )
    detail = str(problem.get("detail") or problem.get("title") or f"broker answered HTTP {status}")
    if issubclass(cls, RetryAfterError):
        return cls(detail, status=status, problem=problem, retry_after=parse_retry_after(retry_after))
    return cls(detail, status=status, problem=problem)
