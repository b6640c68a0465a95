"""The shapes sessions take between the repository and the service: what a create asks for, what an
insert, a touch or a read answered, and the Idempotency-Key records. Plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

QUOTA_SCOPES = ("tenant", "principal", "client")


@dataclass(frozen=True, slots=True)
class NewSession:
    kind: str
    principal: str | None
    client_id: str | None
    owner: str | None
    protocol_version: str | None
    metadata: dict[str, Any]
    idle_timeout_seconds: int
    max_lifetime_seconds: int
    max_requests: int
    max_requests_per_minute: int
    # Not a column: how long before its expiry the session is warned (its first `check_at`).
    warning_seconds: int


NEW_SESSION_FIELDS = tuple(field.name for field in fields(NewSession) if field.name != "warning_seconds")


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """An `Idempotency-Key` to check before a create or rotation and to record with its answer."""

    key: str
    fingerprint: str
    retention_seconds: int

    def values(self) -> dict[str, Any]:
        return {
            "idempotency_key": self.key,
            "fingerprint": self.fingerprint,
            "key_retention_seconds": self.retention_seconds,
        }


@dataclass(frozen=True, slots=True)
class Remembered:
    """What a remembered Idempotency-Key answered: the request's fingerprint and the session as created."""

    fingerprint: str
    response: dict[str, Any]


class IdempotencyRace(Exception):
    """A concurrent request with the same Idempotency-Key committed first: roll back and ask again."""


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    tenant: int
    principal: int
    client: int


@dataclass(frozen=True, slots=True)
class InsertOutcome:
    session: dict[str, Any] | None
    retired_reason: str | None  # set when a tombstone blocked the id
    tight_scopes: tuple[str, ...]  # quota scopes without the requested headroom (nothing was written)
    replaced_reason: str | None = None  # an expired row of the same id was taken over
    replaced_lifetime: float | None = None
    remembered: Remembered | None = None  # the Idempotency-Key was known: nothing was written


@dataclass(frozen=True, slots=True)
class RequestCounts:
    """A limited session's request limits and the counts replicas have synced (app/request_limits.py)."""

    max_requests: int
    max_requests_per_minute: int
    created_at: datetime  # with (tenant, id), tells a session from a later one with the same id
    request_count: int
    rate_window: int  # the current minute, numbered from the session's creation
    rate_count: int  # synced touches in that minute
    window_left: float  # seconds until that minute ends


@dataclass(frozen=True, slots=True)
class TouchOutcome:
    found: bool
    principal: str | None
    expires_at: datetime | None
    written: bool
    due: bool  # the touch should have written (it moved expiry by the threshold)
    ended_reason: str | None
    limits: RequestCounts | None = None  # None: the session has no request limit


@dataclass(frozen=True, slots=True)
class Lookup:
    """A GET: the session if its row is live, else why it ended (None when nothing is known)."""

    session: dict[str, Any] | None
    ended_reason: str | None


# A session as the API answers it, in this order (a replayed create must answer byte for byte the same).
SESSION_FIELDS = (
    "id",
    "kind",
    "principal",
    "client_id",
    "owner",
    "protocol_version",
    "metadata",
    "version",
    "created_at",
    "last_seen_at",
    "expires_at",
    "idle_timeout_seconds",
    "max_lifetime_seconds",
    "max_requests",
    "max_requests_per_minute",
    "max_leases",
)
