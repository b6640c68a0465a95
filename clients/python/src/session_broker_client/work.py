"""The broker's work-across-replicas calls (stream leases, in-flight marks, pending server-to-client
requests), on a `SessionBroker`'s connection and retry policies. The MCP middleware uses them so that
`ctx.elicit`, `ctx.sample` and roots work when the client's reply reaches another replica, and a long
tool call keeps its session alive; see the broker's docs/design.md, "Leases", "In-flight work",
"Pending requests"."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from session_broker_client.client import SessionBroker, _principal_header, session_path
from session_broker_client.retry import NO_RETRY

JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Lease:
    lease_id: str
    fencing_token: int
    expires_at: str
    holder: str


@dataclass(frozen=True)
class PendingState:
    pending_id: str
    state: str  # pending, answered, cancelled, timed_out
    response: dict[str, Any] | None = None


def _body(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


class BrokerWork:
    """Leases, in-flight marks and pending requests of one broker (`SessionBroker`)."""

    def __init__(self, broker: SessionBroker) -> None:
        self.broker = broker

    def _headers(self, principal: str | None) -> dict[str, str]:
        return {**JSON_HEADERS, **_principal_header(principal)}

    # --- stream leases ----------------------------------------------------------------------------

    async def acquire_lease(
        self, session_id: str, holder: str, ttl_seconds: int, *, principal: str | None = None
    ) -> Lease:
        """`LeasesFull` while every lease is held. Not retried: a lost answer could hold a lease."""
        response = await self.broker._call(
            "acquire_lease",
            "POST",
            session_path(session_id) + "/leases",
            NO_RETRY,
            content=_body({"holder": holder, "ttl_seconds": ttl_seconds}),
            headers=self._headers(principal),
        )
        data = response.json()
        return Lease(data["lease_id"], data["fencing_token"], data["expires_at"], data["holder"])

    async def set_max_leases(self, session_id: str, max_leases: int, *, principal: str | None = None) -> None:
        """How many stream leases the session admits at once (1 by default; fast-mcp's
        `max_connections_per_session`)."""
        await self.broker._call(
            "patch",
            "PATCH",
            session_path(session_id),
            self.broker.retry,  # a merge patch is idempotent
            content=_body({"max_leases": max_leases}),
            headers={"Content-Type": "application/merge-patch+json", **_principal_header(principal)},
        )

    async def renew_lease(self, session_id: str, lease_id: str, *, principal: str | None = None) -> None:
        """`LeaseLost` once the lease expired or was taken over."""
        await self.broker._call(
            "renew_lease",
            "PUT",
            f"{session_path(session_id)}/leases/{lease_id}",
            self.broker.retry,
            headers=_principal_header(principal),
        )

    async def release_lease(self, session_id: str, lease_id: str, *, principal: str | None = None) -> None:
        await self.broker._call(
            "release_lease",
            "DELETE",
            f"{session_path(session_id)}/leases/{lease_id}",
            NO_RETRY,
            headers=_principal_header(principal),
        )

    # --- in-flight marks --------------------------------------------------------------------------

    async def begin_in_flight(
        self,
        session_id: str,
        ttl_seconds: int,
        *,
        method: str | None = None,
        holder: str | None = None,
        principal: str | None = None,
    ) -> str:
        """Mark a request in flight; returns the mark's id (renew it within `ttl_seconds`)."""
        document: dict[str, Any] = {"ttl_seconds": ttl_seconds}
        if method is not None:
            document["method"] = method[:128]
        if holder is not None:
            document["holder"] = holder
        response = await self.broker._call(
            "begin_in_flight",
            "POST",
            session_path(session_id) + "/in-flight",
            NO_RETRY,
            content=_body(document),
            headers=self._headers(principal),
        )
        return str(response.json()["mark_id"])

    async def renew_in_flight(
        self, session_id: str, mark_id: str, ttl_seconds: int, *, principal: str | None = None
    ) -> None:
        await self.broker._call(
            "renew_in_flight",
            "PUT",
            f"{session_path(session_id)}/in-flight/{mark_id}",
            self.broker.retry,
            content=_body({"ttl_seconds": ttl_seconds}),
            headers=self._headers(principal),
        )

    async def end_in_flight(self, session_id: str, mark_id: str, *, principal: str | None = None) -> None:
        await self.broker._call(
            "end_in_flight",
            "DELETE",
            f"{session_path(session_id)}/in-flight/{mark_id}",
            self.broker.retry,
            headers=_principal_header(principal),
        )

    # --- pending server-to-client requests --------------------------------------------------------

    async def record_pending(
        self,
        session_id: str,
        request_id: Any,
        method: str,
        holder: str,
        timeout_seconds: int,
        *,
        principal: str | None = None,
    ) -> str:
        """Record a request sent to the client; returns its pending id."""
        response = await self.broker._call(
            "record_pending",
            "POST",
            session_path(session_id) + "/pending",
            self.broker.retry,  # a repeat finds its own record pending: PendingRequestExists
            content=_body(
                {
                    "request_id": request_id,
                    "method": method,
                    "holder": holder,
                    "timeout_seconds": timeout_seconds,
                }
            ),
            headers=self._headers(principal),
        )
        return str(response.json()["pending_id"])

    async def wait_pending(
        self, session_id: str, pending_id: str, wait_seconds: float, *, principal: str | None = None
    ) -> PendingState:
        """The request once it has ended, or still pending after `wait_seconds` (at most 30)."""
        response = await self.broker._call(
            "wait_pending",
            "GET",
            f"{session_path(session_id)}/pending/{pending_id}",
            self.broker.retry,
            params={"wait_seconds": f"{wait_seconds:.3f}"},
            headers=_principal_header(principal),
            timeout=wait_seconds + 10.0,
        )
        data = response.json()
        return PendingState(data["pending_id"], data["state"], data.get("response"))

    async def cancel_pending(self, session_id: str, pending_id: str, *, principal: str | None = None) -> None:
        await self.broker._call(
            "cancel_pending",
            "DELETE",
            f"{session_path(session_id)}/pending/{pending_id}",
            self.broker.retry,
            headers=_principal_header(principal),
        )

    async def reply(self, session_id: str, response: bytes, *, principal: str | None = None) -> str:
        """Hand the client's JSON-RPC response over to the replica waiting for it; returns that holder.
        `PendingRequestNotFound` / `PendingRequestEnded` when it answers nothing (nothing changed)."""
        answered = await self.broker._call(
            "reply",
            "POST",
            session_path(session_id) + "/replies",
            NO_RETRY,  # a repeat after a lost answer would be refused as ended
            content=response,
            headers=self._headers(principal),
        )
        return str(answered.json()["holder"])
