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
        value = self.problem.get("type")
        return value if isinstance(value, str) else None


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
        value = self.problem.get("reason")
        return value if isinstance(value, str) else None


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
        value = self.problem.get("reason")
        return value if isinstance(value, str) else None


class PreconditionFailed(BrokerError):
    slug = "precondition-failed"


class PayloadTooLarge(BrokerError):
    slug = "payload-too-large"


class MetadataTooLarge(BrokerError):
    slug = "metadata-too-large"

    @property
    def limit(self) -> int | None:
        value = self.problem.get("limit")
        return value if isinstance(value, int) else None


class UnsupportedMediaType(BrokerError):
    slug = "unsupported-media-type"


class ValidationFailed(BrokerError):
    slug = "validation-error"

    @property
    def errors(self) -> list[dict[str, str]]:
        """The broker's field errors: `[{"field": ..., "message": ...}]`."""
        value = self.problem.get("errors")
        return [error for error in value if isinstance(error, dict)] if isinstance(value, list) else []


class QuotaExceeded(BrokerError):
    """A quota (tenant, principal or client) is full under policy `reject`."""

    slug = "quota-exceeded"

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

    @property
    def scope(self) -> str | None:
        value = self.problem.get("scope")
        return value if isinstance(value, str) else None

    @property
    def limit(self) -> int | None:
        value = self.problem.get("limit")
        return value if isinstance(value, int) else None


class InternalError(BrokerError):
    slug = "internal-error"


class BrokerUnavailable(BrokerError):
    """The broker answered 503 (its store is down) or could not be reached (connect error, timeout).
    `retry_after` is the broker's `Retry-After` in seconds, or None when it sent none."""

    slug = "database-unavailable"

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
        QuotaExceeded,
        InternalError,
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
    if cls is BrokerUnavailable:
        return BrokerUnavailable(
            detail, status=status, problem=problem, retry_after=parse_retry_after(retry_after)
        )
    if cls is QuotaExceeded:
        return QuotaExceeded(
            detail, status=status, problem=problem, retry_after=parse_retry_after(retry_after)
        )
    return cls(detail, status=status, problem=problem)


# --- work across replicas: stream leases, in-flight marks, pending requests (broker issue 13) ----------


class LeasesFull(BrokerError):
    """Every stream lease of the session is held (409); `Retry-After` said when the earliest expires."""

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


PROBLEM_CLASSES.update(
    {
        cls.slug: cls
        for cls in (
            LeasesFull,
            LeaseLost,
            InFlightMarkNotFound,
            PendingRequestExists,
            PendingRequestNotFound,
            PendingRequestEnded,
        )
    }
)
