"""Bodies of the work-across-replicas API: stream leases, in-flight marks and pending server-to-client
requests (docs/design.md, "Leases", "In-flight work", "Pending requests")."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from annotated_types import Interval
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError

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


# Beyond 2**53 a float is no longer exact, and orjson reads an integer past 64 bits as a float: such a
# value may not be the id that was sent, so it stays a float and is refused.
EXACT_FLOAT_INTEGERS = 2**53


def _integral(value: Any) -> Any:
    """`1503.0` is the integer 1503 to JSON Schema (and to a client that round-trips ids as floats)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= EXACT_FLOAT_INTEGERS:
        return int(value)
    return value


def _one_request_id_problem(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """One message at the field itself, not one per union member under pydantic's internal names."""
    try:
        return handler(value)
    except ValidationError:
        raise PydanticCustomError(
            "request_id",
            "must be an integer of at most 64 bits or a string of 1 to 256 characters without NUL",
        ) from None


# Request ids are stored as their JSON text (orjson), which holds integers of up to 64 bits: a larger id is
# a 422 naming the field, not a 500 at the statement.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

RequestId = Annotated[
    Annotated[StrictInt, Interval(ge=INT64_MIN, le=INT64_MAX), BeforeValidator(_integral)]
    | Annotated[StrictStr, Field(min_length=1, max_length=256, pattern=NO_NUL_PATTERN)],
    WrapValidator(_one_request_id_problem),
    Field(description="the JSON-RPC id of the request, as the server sent it (an integer or a string)"),
]


class PendingRecord(RequestModel):
    """Body of `POST /v1/sessions/{session_id}/pending`: a server-to-client request just sent."""

    request_id: RequestId
    method: Method = Field(description="e.g. elicitation/create, sampling/createMessage, roots/list")
    holder: Holder = Field(description="the replica waiting for the reply (its own address for replies)")
    timeout_seconds: Seconds = Field(
        description="the deadline, from now (1 to MAX_PENDING_TIMEOUT_SECONDS); past it the request is "
        "timed_out and a reply to it is refused"
    )


def _exactly_one_outcome(schema: dict[str, Any]) -> None:
    """State in the schema what `_one_outcome` checks: `result` or `error`, an object, never both."""
    for name in ("result", "error"):
        schema["properties"][name] = {"type": "object", "additionalProperties": True, "title": name.title()}
    schema["oneOf"] = [{"required": ["result"]}, {"required": ["error"]}]


class Reply(RequestModel):
    """Body of `POST /v1/sessions/{session_id}/replies`: the client's JSON-RPC response, as it arrived."""

    model_config = ConfigDict(json_schema_extra=_exactly_one_outcome)

    jsonrpc: Literal["2.0"]
    id: RequestId
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_outcome(self) -> Reply:
        present = [name for name in ("result", "error") if name in self.model_fields_set]
        if len(present) != 1 or getattr(self, present[0]) is None:
            raise ValueError("a JSON-RPC response has exactly one of result and error, an object")
        return self


class PendingRequest(BaseModel):
    pending_id: str
    request_id: int | str
    method: str
    holder: str
    state: str = Field(description="pending, answered, cancelled or timed_out")
    created_at: datetime
    deadline: datetime
    ended_at: datetime | None = None
    response: dict[str, Any] | None = Field(
        None, description="the client's JSON-RPC response, once answered (only on GET)"
    )


class LeaseGranted(LeaseRead):
    """A lease just acquired or renewed."""

    session_id: str
    ttl_seconds: int


# Bodies the routes parse themselves (`request_body`), listed for the OpenAPI components section.
WORK_REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    LeaseAcquire,
    LeaseRenew,
    InFlightBegin,
    InFlightRenew,
    PendingRecord,
    Reply,
)
