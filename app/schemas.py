"""Pydantic models of request and response bodies. Requests reject unknown fields (a typo must not fall
back to a default silently); responses document what the handlers serialise."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictStr,
)

# Strings stored in text columns cannot contain U+0000 (PostgreSQL refuses it): the patterns say so.
NO_NUL_PATTERN = "^[^\\x00]*$"
# Bounded labels; `kind` appears in metrics, so it is kept short and simple.
Kind = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")]
Label = Annotated[StrictStr, Field(min_length=1, max_length=512, pattern=NO_NUL_PATTERN)]


def normalise_principal(value: str) -> str:
    """Principals compare after trimming surrounding whitespace, on both sides: the one a session is bound
    to and the one a caller sends (`Session-Principal`, filters). `"alice "` and `"alice\t"` are alice."""
    return value.strip()


def _trimmed(value: Any) -> Any:
    return normalise_principal(value) if isinstance(value, str) else value


Principal = Annotated[
    StrictStr, BeforeValidator(_trimmed), Field(min_length=1, max_length=512, pattern=NO_NUL_PATTERN)
]
ProtocolVersion = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=NO_NUL_PATTERN)]


def _whole_number(value: Any) -> Any:
    """JSON has one number type: accept 60 and 60.0, refuse "60", true and 60.5 (no silent coercion)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be a whole number of seconds")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be a whole number of seconds")
        return int(value)
    return value


Seconds = Annotated[
    int,
    BeforeValidator(_whole_number),
    Field(description="seconds; bounded by the service's configured min/max (see /v1/stats `limits`)"),
]

# Nesting levels of metadata (the object itself is level 1). Deeper documents are refused before anything
# is written: every JSON encoder has a depth limit (orjson's is 254 including the response envelope), and a
# session whose metadata cannot be encoded could be stored but never read back.
MAX_METADATA_DEPTH = 32


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value (a scalar is 0, `{}` is 1), counted up to `limit + 1` at most and
    without recursion (a hostile document may nest a thousand levels)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _shallow(value: Any) -> Any:
    if json_depth(value, MAX_METADATA_DEPTH) > MAX_METADATA_DEPTH:
        raise ValueError(f"nests deeper than {MAX_METADATA_DEPTH} levels of objects and arrays")
    return value


METADATA_DESCRIPTION = (
    f"JSON object (client info, capabilities, upstream ids...); size-limited, at most {MAX_METADATA_DEPTH} "
    "levels deep"
)
Metadata = Annotated[dict[str, Any], AfterValidator(_shallow), Field(description=METADATA_DESCRIPTION)]


def _request_count(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise ValueError("must be a whole number (0: unlimited)")
    return int(value)


# The bounds before the validator, so the schema states them as `minimum`/`maximum` (after it, pydantic
# copies them into the schema under their Python names).
RequestLimit = Annotated[
    int,
    Field(ge=0, le=2**31 - 1, description="0: unlimited; omitted on create: the tenant's default"),
    BeforeValidator(_request_count),
]


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionCreate(RequestModel):
    """Body of `POST /v1/sessions` and `PUT /v1/sessions/{session_id}`. Every field is optional."""

    kind: Kind = "mcp"
    principal: Principal | None = Field(
        None, description="authenticated end user, e.g. 'issuer|subject' (surrounding whitespace is trimmed)"
    )
    client_id: Label | None = None
    owner: Label | None = Field(None, description="gateway replica serving the live stream")
    protocol_version: ProtocolVersion | None = None
    metadata: Metadata = Field(default_factory=dict, description=METADATA_DESCRIPTION)
    idle_timeout_seconds: Seconds | None = None
    max_lifetime_seconds: Seconds | None = None
    max_requests: RequestLimit | None = Field(
        None, description="touches this session may have in its life (0: unlimited; omitted: tenant default)"
    )
    max_requests_per_minute: RequestLimit | None = Field(
        None,
        description="touches per minute since creation (0: unlimited; omitted: tenant default)",
    )


class SessionPatch(RequestModel):
    """JSON Merge Patch (RFC 7396) document for `PATCH /v1/sessions/{session_id}`.

    `metadata` is merged recursively (a member set to null is removed); the other fields are replaced,
    and null clears them.
    """

    metadata: Annotated[dict[str, Any], AfterValidator(_shallow)] | None = Field(
        None,
        description="merged into the session's metadata; null clears it "
        f"({MAX_METADATA_DEPTH} levels at most)",
    )
    owner: Label | None = None
    client_id: Label | None = None
    protocol_version: ProtocolVersion | None = None
    max_requests: RequestLimit | None = Field(
        None, description="new lifetime touch limit; null or 0: unlimited"
    )
    max_requests_per_minute: RequestLimit | None = Field(
        None, description="new per-minute touch limit; null or 0: unlimited"
    )
    max_leases: Annotated[int, Field(ge=1, le=1000), BeforeValidator(_request_count)] | None = Field(
        None, description="stream leases the session admits at once (1-1000); null: the default, 1"
    )


class TouchRequest(RequestModel):
    """Optional body of a touch: the gateway request this touch accompanies, for request analytics."""

    method: Annotated[StrictStr, Field(min_length=1, max_length=128, description="e.g. 'tools/call'")]
    ok: StrictBool = True
    duration_ms: Annotated[StrictFloat, Field(ge=0, le=86_400_000)] | None = None


class AnalyticsBatch(RequestModel):
    """Body of `POST /v1/analytics`: outcomes of gateway requests, reported after they finished.

    A touch happens before the request it accompanies is served, so its body cannot carry that
    request's outcome; gateways buffer outcomes and send them here in batches instead."""

    requests: Annotated[
        list[TouchRequest],
        Field(min_length=1, max_length=1000, description="1-1000 request outcomes, each as in a touch body"),
    ]


class AnalyticsRecorded(BaseModel):
    recorded: int = Field(description="request outcomes counted")


class LeaseRead(BaseModel):
    """A stream lease: what a replica (`holder`) holds while it serves a session's live stream."""

    lease_id: str
    holder: str = Field(description="the holding replica's own address for replies, e.g. its internal URL")
    fencing_token: int = Field(description="grows with every acquisition, across every takeover")
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime = Field(description="on the database clock; past it the slot is free")


class SessionRead(BaseModel):
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
    max_requests: int = Field(description="lifetime touch limit; 0: unlimited")
    max_requests_per_minute: int = Field(description="per-minute touch limit; 0: unlimited")
    max_leases: int = Field(description="stream leases the session admits at once (default 1)")
    owner_alive: bool | None = Field(
        None, description="only on GET of one session: `owner` holds a live stream lease"
    )
    leases: list[LeaseRead] | None = Field(None, description="only on GET of one session: its live leases")


class TouchResult(BaseModel):
    id: str
    expires_at: datetime


class SessionPage(BaseModel):
    items: list[SessionRead]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class KindStats(BaseModel):
    kind: str
    live: int
    oldest_created_at: datetime
    newest_created_at: datetime


class Limits(BaseModel):
    default_idle_timeout_seconds: int
    min_idle_timeout_seconds: int
    max_idle_timeout_seconds: int
    default_max_lifetime_seconds: int
    min_max_lifetime_seconds: int
    max_max_lifetime_seconds: int
    touch_granularity_seconds: float
    max_metadata_bytes: int
    max_sessions_per_tenant: int
    max_sessions_per_principal: int
    max_sessions_per_client: int
    quota_policy: str = Field(description="reject or evict_oldest_idle")
    default_max_requests_per_session: int = Field(description="0: unlimited")
    default_max_requests_per_minute: int = Field(description="0: unlimited")
    tombstone_retention_seconds: int
    event_retention_seconds: int
    expiry_warning_seconds: int = Field(description="0: no `session.expiring` events")
    expiry_notice_bound_seconds: float = Field(
        description="an expiry is recorded (event, counters, tombstone) within this long after it happens "
        "(twice the purge interval), while the purge keeps up"
    )


class MethodStats(BaseModel):
    method: str = Field(description="MCP method name, or `other`")
    requests: int
    errors: int
    success_rate: float
    mean_duration_ms: float | None


class RequestStats(BaseModel):
    """Gateway requests reported in touch bodies, fleet-wide (flushed every few seconds per replica)."""

    requests_total: int
    errors_total: int
    success_rate: float | None = Field(description="null before any request was reported")
    busiest_methods: list[MethodStats] = Field(description="up to 10, most requests first")


class WindowStats(BaseModel):
    """Figures over a recent window (`?window_seconds=N`). Counts are exact for the interval from `since`
    to now, which starts at the last stats snapshot taken at or before N seconds ago (snapshots are taken
    with each fleet recount, every STATS_REFRESH_SECONDS), so it can reach up to one refresh interval
    further back than asked."""

    seconds: int = Field(description="the window asked for")
    since: datetime | None = Field(
        description="start of the interval the figures cover; null: since the tenant's first session"
    )
    created: int
    ended: dict[str, int] = Field(description="by reason")
    peak_live: int = Field(
        description="highest live count seen: the fleet recounts since `since` (one per "
        "STATS_REFRESH_SECONDS, so a shorter peak between two can be missed) and the exact count now"
    )
    mean_lifetime_seconds: float | None = Field(description="of sessions that ended in the window (exact)")
    p95_lifetime_seconds: float | None = Field(
        description="95th percentile lifetime of sessions that ended in the window, from lifetime buckets a "
        "quarter power of two wide: the mean of the bucket holding it, so within 19 % of the exact value"
    )


class TenantStats(BaseModel):
    """One tenant's sessions: live by kind, oldest and newest, lifetime totals."""

    tenant: str
    live: int
    active_last_5m: int = Field(
        description="live sessions created or touched in the last five minutes (a touch that is throttled "
        "writes nothing, so a session counts if its last written touch is that recent)"
    )
    by_kind: list[KindStats]
    oldest_created_at: datetime | None
    newest_created_at: datetime | None
    created_total: int
    ended_total: dict[str, int] = Field(description="sessions ended since the tenant began, by reason")
    window: WindowStats | None = Field(None, description="only with `?window_seconds=N`")


class InFlightStats(BaseModel):
    """Requests replicas have marked in flight now (live marks; docs/design.md, "In-flight work")."""

    requests: int
    by_method: dict[str, int] = Field(description="by the method the mark names (`other` when none)")


class PendingStats(BaseModel):
    """Server-to-client requests replicas wait for (docs/design.md, "Pending requests")."""

    pending: int = Field(description="pending now (deadline not passed)")
    by_method: dict[str, int] = Field(description="pending now, by method")
    completions: int = Field(description="active completions: `sampling/createMessage` requests pending now")
    ended: dict[str, dict[str, int]] = Field(
        description="requests that ended since the tenant began, by state (answered, cancelled, timed_out) "
        "and method; a timeout counts once the purge has recorded it"
    )


class Stats(TenantStats):
    """`GET /v1/stats`: the tenant's figures, its reported requests and the limits that apply to it."""

    requests: RequestStats
    limits: Limits
    in_flight: InFlightStats
    pending: PendingStats


class AdminStats(BaseModel):
    live: int
    created_total: int
    tenants: list[TenantStats]


class RevokeResult(BaseModel):
    revoked: int = Field(description="live sessions this call ended (0 on a retry: revocation is idempotent)")


class PurgeRun(BaseModel):
    deleted: dict[str, int] = Field(
        description="rows deleted (pending: timed out or forgotten): sessions, leases, in_flight, pending, "
        "tombstones, idempotency_keys, events"
    )
    warned: int = Field(description="sessions that got their `session.expiring` event")
    rearmed: int = Field(description="live sessions whose next check moved (touched since it was set)")
    batches: int
    skipped: bool = Field(description="another replica held the purge lock; nothing was done")
    seconds: float
    max_notice_delay_seconds: float = Field(
        description="the longest time from an expiry this run recorded to the moment it recorded it"
    )


class StreamEvent(BaseModel):
    """`data` of a lifecycle event frame on `GET /v1/events`."""

    type: str = Field(
        description="session.created, session.updated, session.expiring, session.ended, session.rotated, "
        "session.lease_acquired, session.lease_lost, session.lease_released, session.request_answered, "
        "session.request_cancelled or session.request_timed_out"
    )
    session_id: str
    occurred_at: datetime
    data: dict[str, Any] = Field(description="the event's fields; never the session's metadata")


class StreamNotice(BaseModel):
    """`data` of a `stream.gap` or `stream.error` frame."""

    detail: str
    last_event_id: str | None = None
    resumed_after: str | None = None


class ProblemDocument(BaseModel):
    """RFC 9457 problem details. Extension members depend on `type` (e.g. `reason`, `errors`, `field`)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    reason: str | None = Field(
        None,
        description="why a session ended: deleted, expired_idle, expired_lifetime, evicted, revoked, rotated",
    )
    errors: list[dict[str, str]] | None = Field(None, description="validation errors: field and message")


class Health(BaseModel):
    status: str
    detail: str | None = None


REQUEST_MODELS: tuple[type[BaseModel], ...] = (SessionCreate, SessionPatch, TouchRequest, AnalyticsBatch)
# Documented only inside other schemas (the event stream), so listed for the components section.
DOCUMENT_MODELS: tuple[type[BaseModel], ...] = (StreamEvent, StreamNotice)
