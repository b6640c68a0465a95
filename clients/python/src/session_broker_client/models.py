"""Typed results of the broker's operations (frozen dataclasses built from its JSON).

Timestamps are timezone-aware `datetime`s in UTC, on the broker's database clock. Every result keeps
nothing it did not receive: unknown fields the broker may add later are ignored, not an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def parse_time(value: str) -> datetime:
    """The broker's RFC 3339 timestamps (`...Z`)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _optional_time(value: Any) -> datetime | None:
    return parse_time(value) if isinstance(value, str) else None


@dataclass(frozen=True)
class Session:
    """A live session as `GET /v1/sessions/{id}` (and create, register, patch, rotate) return it."""

    id: str
    kind: str
    principal: str | None
    client_id: str | None
    owner: str | None
    protocol_version: str | None
    metadata: dict[str, Any]
    version: int
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    idle_timeout_seconds: int
    max_lifetime_seconds: int
    # Touch limits of the session (0: unlimited): in its life, and per minute since its creation.
    max_requests: int = 0
    max_requests_per_minute: int = 0
    # Only from `create`: True when the broker answered with the session an earlier request with the same
    # `Idempotency-Key` created (`Idempotent-Replayed: true`), rather than creating one now.
    replayed: bool = False

    @property
    def etag(self) -> str:
        """The strong ETag of this version, for `patch(..., if_match=session.etag)`."""
        return f'"{self.version}"'

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Session:
        return cls(
            id=data["id"],
            kind=data["kind"],
            principal=data.get("principal"),
            client_id=data.get("client_id"),
            owner=data.get("owner"),
            protocol_version=data.get("protocol_version"),
            metadata=data.get("metadata") or {},
            version=int(data["version"]),
            created_at=parse_time(data["created_at"]),
            last_seen_at=parse_time(data["last_seen_at"]),
            expires_at=parse_time(data["expires_at"]),
            idle_timeout_seconds=int(data["idle_timeout_seconds"]),
            max_lifetime_seconds=int(data["max_lifetime_seconds"]),
            max_requests=int(data.get("max_requests") or 0),
            max_requests_per_minute=int(data.get("max_requests_per_minute") or 0),
        )


@dataclass(frozen=True)
class Touched:
    """A successful touch: the session's expiry after it. `local` is True when the near-cache answered
    without asking the broker."""

    id: str
    expires_at: datetime
    local: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Touched:
        return cls(id=data["id"], expires_at=parse_time(data["expires_at"]))


@dataclass(frozen=True)
class SessionPage:
    """One page of `GET /v1/sessions`; `list()` follows `next_cursor` for you."""

    items: list[Session]
    next_cursor: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionPage:
        return cls(
            items=[Session.from_json(item) for item in data["items"]], next_cursor=data.get("next_cursor")
        )


@dataclass(frozen=True)
class KindStats:
    kind: str
    live: int
    oldest_created_at: datetime
    newest_created_at: datetime

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KindStats:
        return cls(
            kind=data["kind"],
            live=int(data["live"]),
            oldest_created_at=parse_time(data["oldest_created_at"]),
            newest_created_at=parse_time(data["newest_created_at"]),
        )


@dataclass(frozen=True)
class MethodStats:
    method: str
    requests: int
    errors: int
    success_rate: float
    mean_duration_ms: float | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MethodStats:
        return cls(
            method=data["method"],
            requests=int(data["requests"]),
            errors=int(data["errors"]),
            success_rate=float(data["success_rate"]),
            mean_duration_ms=data.get("mean_duration_ms"),
        )


@dataclass(frozen=True)
class RequestStats:
    """Gateway request analytics, fleet-wide (what touch bodies and `report_requests` reported)."""

    requests_total: int
    errors_total: int
    success_rate: float | None
    busiest_methods: list[MethodStats]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestStats:
        return cls(
            requests_total=int(data["requests_total"]),
            errors_total=int(data["errors_total"]),
            success_rate=data.get("success_rate"),
            busiest_methods=[MethodStats.from_json(item) for item in data.get("busiest_methods", [])],
        )


@dataclass(frozen=True)
class WindowStats:
    """`Stats.window`, with `stats(window_seconds=N)`: figures over the last N seconds. They cover the
    interval from `since` (None: since the tenant's first session), which may start up to one stats
    refresh earlier than asked."""

    seconds: int
    since: datetime | None
    created: int
    ended: dict[str, int]
    peak_live: int
    mean_lifetime_seconds: float | None
    p95_lifetime_seconds: float | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WindowStats:
        return cls(
            seconds=int(data["seconds"]),
            since=_optional_time(data.get("since")),
            created=int(data["created"]),
            ended={str(key): int(value) for key, value in (data.get("ended") or {}).items()},
            peak_live=int(data["peak_live"]),
            mean_lifetime_seconds=data.get("mean_lifetime_seconds"),
            p95_lifetime_seconds=data.get("p95_lifetime_seconds"),
        )


@dataclass(frozen=True)
class Stats:
    """`GET /v1/stats`: the tenant's live sessions (counted exactly), totals, analytics and limits.
    `limits` is the broker's configured bounds as it sent them (timeouts, quotas, retention)."""

    tenant: str
    live: int
    by_kind: list[KindStats]
    oldest_created_at: datetime | None
    newest_created_at: datetime | None
    created_total: int
    ended_total: dict[str, int]
    requests: RequestStats
    limits: dict[str, Any] = field(default_factory=dict)
    window: WindowStats | None = None  # only with `stats(window_seconds=N)`

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Stats:
        return cls(
            tenant=data["tenant"],
            live=int(data["live"]),
            by_kind=[KindStats.from_json(item) for item in data.get("by_kind", [])],
            oldest_created_at=_optional_time(data.get("oldest_created_at")),
            newest_created_at=_optional_time(data.get("newest_created_at")),
            created_total=int(data["created_total"]),
            ended_total={str(key): int(value) for key, value in (data.get("ended_total") or {}).items()},
            requests=RequestStats.from_json(data["requests"]),
            limits=dict(data.get("limits") or {}),
            window=WindowStats.from_json(data["window"]) if data.get("window") else None,
        )


@dataclass(frozen=True)
class Event:
    """One frame of `GET /v1/events`.

    `type` is a lifecycle event (`session.created`, `session.updated`, `session.expiring` (only with
    the broker's EXPIRY_WARNING_SECONDS), `session.ended`, `session.rotated`) or a stream notice
    (`stream.open`, `stream.gap`, `stream.error`). `id` is the SSE id to resume after (None for frames
    without one). For lifecycle events `session_id`, `occurred_at` and `data` (the event's fields, e.g.
    `reason` of an end) are set; for notices `data` is the notice (`detail`, and for a gap
    `last_event_id` / `resumed_after`)."""

    type: str
    id: str | None
    data: dict[str, Any]
    session_id: str | None = None
    occurred_at: datetime | None = None

    @property
    def is_gap(self) -> bool:
        return self.type == "stream.gap"

    @classmethod
    def from_frame(cls, event_type: str, event_id: str | None, payload: dict[str, Any]) -> Event:
        if event_type.startswith("session."):
            return cls(
                type=event_type,
                id=event_id,
                data=dict(payload.get("data") or {}),
                session_id=payload.get("session_id"),
                occurred_at=_optional_time(payload.get("occurred_at")),
            )
        return cls(type=event_type, id=event_id, data=payload)


@dataclass(frozen=True)
class RequestOutcome:
    """One gateway request for request analytics: its MCP method, whether it succeeded, how long it took."""

    method: str
    ok: bool = True
    duration_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "ok": self.ok, "duration_ms": self.duration_ms}
