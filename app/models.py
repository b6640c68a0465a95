"""The database schema, as SQLAlchemy 2.0 tables. Alembic migrations must match it (`alembic check`).

Runtime SQL lives in `app/sql/`; this module only describes the tables.

Touch-heavy design (docs/design.md, "Schema"):
- A touch writes `last_seen_at` and `expires_at` only. Neither is indexed, so touch writes are HOT
  updates (no index insertions, pruned without VACUUM).
- `check_at` is the only expiry column with an index: when the purge must next look at the row. It is
  a *lower bound* of the next thing that can happen to the session (its expiry warning, or its
  expiry), set by creates and by the purge itself, never by a touch. When it comes due the purge either
  ends the session (expired), warns it, or moves `check_at` to the session's current expiry (a touch
  pushed it out meanwhile). Reads never rely on it (an expired row is invisible at once).
- `metadata` is `json`, not `jsonb`: the database never looks inside it (merge-patch happens in the
  service), `json` input is only syntax-checked (cheaper than jsonb's decomposition on every write), and
  it accepts every JSON string, including the U+0000 escape that jsonb refuses.
- The absolute deadline is `created_at + max_lifetime_seconds`; both are immutable, so a touch can never
  push a session past it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Double,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSON, JSONB, TIMESTAMP
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Timestamp = TIMESTAMP(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class SessionRow(Base):
    """A live (or expired but not yet purged) session."""

    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_check_at", "check_at"),
        Index(
            "ix_sessions_tenant_principal",
            "tenant",
            "principal",
            postgresql_where=text("principal IS NOT NULL"),
        ),
        Index(
            "ix_sessions_tenant_client_id",
            "tenant",
            "client_id",
            postgresql_where=text("client_id IS NOT NULL"),
        ),
        Index("ix_sessions_tenant_owner", "tenant", "owner", postgresql_where=text("owner IS NOT NULL")),
        {
            # Room on each page for HOT versions of touched rows; eager autovacuum on a churny table.
            "postgresql_with": {
                "fillfactor": 80,
                "autovacuum_vacuum_scale_factor": 0.02,
                "autovacuum_analyze_scale_factor": 0.02,
            }
        },
    )

    tenant: Mapped[str] = mapped_column(Text, primary_key=True)
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    principal: Mapped[str | None] = mapped_column(Text)
    client_id: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(Text)
    protocol_version: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    # octet_length(metadata::text), set by every write of metadata, so a list page can be cut by bytes
    # without reading (and decompressing) the metadata of rows it leaves out; NULL on older rows.
    metadata_bytes: Mapped[int | None] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(BigInteger)
    idle_timeout_seconds: Mapped[int] = mapped_column(Integer)
    max_lifetime_seconds: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    last_seen_at: Mapped[datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)
    check_at: Mapped[datetime] = mapped_column(Timestamp)
    # When the last `session.expiring` event was sent (docs/design.md, "Expiry warnings").
    warned_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Per-session request limits (0: unlimited) and the counts replicas have synced so far
    # (docs/design.md, "Request limits"); `rate_window` numbers minutes from `created_at`.
    max_requests: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    max_requests_per_minute: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    request_count: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    rate_window: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    rate_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # How many stream leases the session admits at once (docs/design.md, "Leases").
    max_leases: Mapped[int] = mapped_column(Integer, server_default=text("1"))


class TombstoneRow(Base):
    """Why a session ended, kept for a retention period so its 404 can say so and a late retry cannot
    re-register the id."""

    __tablename__ = "session_tombstones"
    __table_args__ = (Index("ix_session_tombstones_forget_after", "forget_after"),)

    tenant: Mapped[str] = mapped_column(Text, primary_key=True)
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    # Whom the session was bound to: only that principal (or a caller acting for none) learns the reason.
    principal: Mapped[str | None] = mapped_column(Text)
    ended_at: Mapped[datetime] = mapped_column(Timestamp)
    forget_after: Mapped[datetime] = mapped_column(Timestamp)


class CounterRow(Base):
    """Monotonic per-tenant totals (created, ended by reason) for `/v1/stats`.

    Sharded so concurrent creates from many replicas do not queue on one row lock; a total is the sum
    of its shards.
    """

    __tablename__ = "session_counters"

    tenant: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class EventRow(Base):
    """Append-only lifecycle events, replayable by `position` until the retention purge removes them.

    `position` is `(writing transaction's xid << 24) + ordinal within its statement`: unique, increasing in
    the order readers may deliver, and deliverable once every transaction with a smaller xid has finished
    (see `app/events.py`). Each transaction writes events from one statement only, which keeps it unique.
    """

    __tablename__ = "session_events"
    __table_args__ = (
        # The retention purge walks positions across tenants; streams read by the key.
        Index("ix_session_events_position", "position"),
        Index("ix_session_events_occurred_at", "occurred_at"),
    )

    tenant: Mapped[str] = mapped_column(Text, primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(Text)
    session_id: Mapped[str] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(Timestamp)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class LifetimeCounterRow(Base):
    """Ended sessions by lifetime bucket (a quarter power of two of seconds) with their summed lifetimes,
    for the mean and 95th percentile of window analytics. Sharded like the counters."""

    __tablename__ = "session_lifetime_counters"

    tenant: Mapped[str] = mapped_column(Text, primary_key=True)
    bucket: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    ended: Mapped[int] = mapped_column(BigInteger)
    seconds: Mapped[float] = mapped_column(Double)


class StatsSnapshotRow(Base):
    """Per tenant, the live count of a fleet recount and the totals at that moment, kept for window
    analytics: a window's figures are today's totals minus the snapshot at its start."""

    __tablename__ = "stats_snapshots"
    __table_args__ = (Index("ix_stats_snapshots_taken_at", "taken_at"),)

    tenant: Mapped[str] = mapped_column(Text, primary_key=True)
    taken_at: Mapped[datetime] = mapped_column(Timestamp, primary_key=True)
    live: Mapped[int] = mapped_column(BigInteger)
    totals: Mapped[dict[str, Any]] = mapped_column(JSONB)


class IdempotencyKeyRow(Base):
    """What a create (or rotation) sent with an `Idempotency-Key` answered, so a retry gets the same
    answer instead of a second session. Written in the statement that creates the session."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_forget_after", "forget_after"),)

    tenant: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(Text)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    forget_after: Mapped[datetime] = mapped_column(Timestamp)


class FleetGaugeRow(Base):
    """Live sessions by tenant and kind, recomputed periodically by one replica and exported by all."""

    __tablename__ = "fleet_gauges"

    tenant: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(Text, primary_key=True)
    live: Mapped[int] = mapped_column(BigInteger)


class BrokerStateRow(Base):
    """Small facts: per tenant, its event retention horizon; under the empty tenant (the fleet), the
    purge backlog and when gauges were last refreshed."""

    __tablename__ = "broker_state"

    tenant: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class GatewayRequestTotalsRow(Base):
    """Request analytics per tenant and MCP method, from touch bodies. Each process counts in memory and
    adds its counts here in one batched statement every few seconds, never on the touch path."""

    __tablename__ = "gateway_request_totals"

    tenant: Mapped[str] = mapped_column(Text, primary_key=True)
    method: Mapped[str] = mapped_column(Text, primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    timed: Mapped[int] = mapped_column(BigInteger)  # requests that reported a duration
    duration_ms_total: Mapped[float] = mapped_column(Double)


class LeaseRow(Base):
    """A stream lease: what a replica (`holder`, its own address for replies) holds while it serves a
    session's live stream. A session has `max_leases` slots; a slot whose lease passed `expires_at` (on the
    database clock) is free for the next acquirer. `fencing_token` comes from the sequence
    `session_lease_fencing`, so it only grows (docs/design.md, "Leases")."""

    __tablename__ = "session_leases"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant", "session_id"],
            ["sessions.tenant", "sessions.id"],
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
        Index("ix_session_leases_expires_at", "expires_at"),
    )

    tenant: Mapped[str] = mapped_column(Text, primary_key=True)
    session_id: Mapped[str] = mapped_column(Text, primary_key=True)
    slot: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    lease_id: Mapped[str] = mapped_column(Text)
    holder: Mapped[str] = mapped_column(Text)
    fencing_token: Mapped[int] = mapped_column(BigInteger)
    ttl_seconds: Mapped[int] = mapped_column(Integer)
    acquired_at: Mapped[datetime] = mapped_column(Timestamp)
    renewed_at: Mapped[datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)


class InFlightRow(Base):
    """An in-flight mark: a request a replica is serving. While the mark lives (its replica renews it), the
    session's `expires_at` is held at least at the mark's `expires_at`, capped by the absolute lifetime;
    a replica that dies stops renewing, and the mark (and its hold) lapses
    (docs/design.md, "In-flight work")."""

    __tablename__ = "session_in_flight"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant", "session_id"],
            ["sessions.tenant", "sessions.id"],
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
        Index("ix_session_in_flight_expires_at", "expires_at"),
    )

    tenant: Mapped[str] = mapped_column(Text, primary_key=True)
    session_id: Mapped[str] = mapped_column(Text, primary_key=True)
    mark_id: Mapped[str] = mapped_column(Text, primary_key=True)
    method: Mapped[str | None] = mapped_column(Text)
    holder: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)


class PendingRequestRow(Base):
    """A server-to-client request (elicitation, sampling, roots) a replica (`holder`) sent and waits for:
    `pending` until the client's reply, handed over by whichever replica received it, makes it
    `answered` (with the reply in `response`), or the holder cancels it, or its `deadline` passes
    (`timed_out`). `check_at`: when the purge must look at it next (its deadline while pending, then when
    it may be forgotten) (docs/design.md, "Pending requests")."""

    __tablename__ = "session_pending_requests"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant", "session_id"],
            ["sessions.tenant", "sessions.id"],
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
        Index("ix_session_pending_requests_check_at", "check_at"),
    )

    tenant: Mapped[str] = mapped_column(Text, primary_key=True)
    session_id: Mapped[str] = mapped_column(Text, primary_key=True)
    request_key: Mapped[str] = mapped_column(Text, primary_key=True)  # the JSON-RPC id as JSON text
    pending_id: Mapped[str] = mapped_column(Text)
    method: Mapped[str] = mapped_column(Text)
    holder: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    deadline: Mapped[datetime] = mapped_column(Timestamp)
    ended_at: Mapped[datetime | None] = mapped_column(Timestamp)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    check_at: Mapped[datetime] = mapped_column(Timestamp)
