"""Bodies of the work-across-replicas API: stream leases, in-flight marks and pending server-to-client
requests (docs/design.md, "Leases", "In-flight work", "Pending requests")."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StrictStr

from app.schemas import NO_NUL_PATTERN, LeaseRead, RequestModel, Seconds

Method = Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=NO_NUL_PATTERN)]
# Where a replica can be reached, as it names itself: its internal URL, a pod name.
Holder = Annotated[StrictStr, Field(min_length=1, max_length=512, pattern=NO_NUL_PATTERN)]


class LeaseAcquire(RequestModel):
    """Body of `POST /v1/sessions/{session_id}/leases`."""

    holder: Holder = Field(
        description="the acquiring replica's own address for replies, e.g. its internal URL"
    )
    ttl_seconds: Seconds = Field(
        description="the lease lasts this long unless renewed (1 to MAX_LEASE_TTL_SECONDS)"
    )


class LeaseRenew(RequestModel):
    """Optional body of `PUT /v1/sessions/{session_id}/leases/{lease_id}`."""

    ttl_seconds: Seconds | None = Field(None, description="a new TTL from now; omitted: the lease's own")


class InFlightBegin(RequestModel):
    """Body of `POST /v1/sessions/{session_id}/in-flight`."""

    ttl_seconds: Seconds = Field(
        description="the mark lasts this long unless renewed (1 to MAX_IN_FLIGHT_TTL_SECONDS); renew it "
        "well within, e.g. every third of it"
    )
    method: Method | None = Field(None, description="the request's MCP method, e.g. 'tools/call'")
    holder: Holder | None = Field(None, description="the replica serving the request")


class InFlightRenew(RequestModel):
    """Body of `PUT /v1/sessions/{session_id}/in-flight/{mark_id}`."""

    ttl_seconds: Seconds = Field(description="the mark lasts this long from now")


class InFlightMark(BaseModel):
    session_id: str
    mark_id: str
    method: str | None
    holder: str | None
    started_at: datetime
    expires_at: datetime = Field(description="the mark lapses then unless renewed (database clock)")
    session_expires_at: datetime = Field(description="the session's expiry, held at least this long")


class InFlightEnded(BaseModel):
    session_id: str
    held: bool = Field(description="false: the mark had lapsed before it ended (renewed too late)")
    session_expires_at: datetime | None = Field(description="the session's expiry from now on")


class LeaseGranted(LeaseRead):
    """A lease just acquired or renewed."""

    session_id: str
    ttl_seconds: int
