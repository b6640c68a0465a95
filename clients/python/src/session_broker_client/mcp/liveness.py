"""What keeps a session's work alive across replicas: in-flight marks for long requests, and the stream
lease of a live GET stream (the broker's docs/design.md, "In-flight work", "Leases").

- `InFlightKeeper`: a `tools/call` (by default) that is still running halfway to the expiry its touch
  set is marked in flight in the broker, and the mark renewed every third of its TTL while the call
  runs, so idle expiry cannot end the session under it; the mark ends with the call, and the idle
  timeout counts from then. If this replica dies, the mark lapses. Calls shorter than that cost no
  broker call at all (with 30-minute sessions, every call shorter than 15 minutes).
- `StreamLeases`: a replica serving a session's standalone GET stream holds its lease and renews it; a
  second stream for the session (on any replica) gets 409, as the SDK answers a second stream on one
  replica. A replica that dies loses the lease within its TTL, and the client's next GET, wherever it
  lands, takes it over at once.

Both are best effort on the request path: a broker that cannot be reached does not fail the request
(the touch that preceded it already proved the session live), it is logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime

from session_broker_client.errors import BrokerError, LeasesFull
from session_broker_client.work import BrokerWork, Lease

log = logging.getLogger(__name__)


class InFlightKeeper:
    def __init__(self, work: BrokerWork, holder: str, ttl_seconds: int, methods: Collection[str]) -> None:
        self.work = work
        self.holder = holder
        self.ttl_seconds = ttl_seconds
        self.methods = frozenset(methods)
        self.counts = {"marked": 0, "renewed": 0}

    @asynccontextmanager
    async def held(
        self, session_id: str, method: str | None, principal: str | None, expires_at: datetime
    ) -> AsyncIterator[None]:
        """Around a request whose touch left the session expiring at `expires_at`."""
        if method is None or method not in self.methods:
            yield
            return
        # Halfway to the expiry on this replica's clock (a skewed clock only makes the mark come early).
        delay = max(0.0, (expires_at - datetime.now(UTC)).total_seconds() / 2)
        begun: list[asyncio.Task[str]] = []
        keeping = asyncio.create_task(self._keep(session_id, method, principal, delay, begun))
        try:
            yield
        finally:
            keeping.cancel()
            with suppress(asyncio.CancelledError):
                await keeping
            # A begin already sent is seen through (it was shielded from the cancel), so its mark is
            # ended too instead of holding the session until its TTL.
            for task in begun:
                try:
                    mark_id = await task
                except BrokerError:
                    continue
                try:
                    await self.work.end_in_flight(session_id, mark_id, principal=principal)
                except BrokerError as error:
                    log.warning("could not end an in-flight mark (it lapses by itself): %s", error.detail)

    async def _keep(
        self,
        session_id: str,
        method: str,
        principal: str | None,
        delay: float,
        begun: list[asyncio.Task[str]],
    ) -> None:
        await asyncio.sleep(delay)
        task = asyncio.create_task(
            self.work.begin_in_flight(
                session_id, self.ttl_seconds, method=method, holder=self.holder, principal=principal
            )
        )
        begun.append(task)
        try:
            mark_id = await asyncio.shield(task)
        except BrokerError as error:
            log.warning("could not mark a %s in flight: %s", method, error.detail)
            return
        self.counts["marked"] += 1
        await self._renew(session_id, mark_id, principal)

    async def _renew(self, session_id: str, mark_id: str, principal: str | None) -> None:
        while True:
            await asyncio.sleep(self.ttl_seconds / 3)
            try:
                await self.work.renew_in_flight(session_id, mark_id, self.ttl_seconds, principal=principal)
                self.counts["renewed"] += 1
            except BrokerError as error:
                log.warning("could not renew an in-flight mark: %s", error.detail)


class StreamLeases:
    def __init__(self, work: BrokerWork, holder: str, ttl_seconds: int) -> None:
        self.work = work
        self.holder = holder
        self.ttl_seconds = ttl_seconds
        self.counts = {"acquired": 0, "refused": 0, "lost": 0}

    async def acquire(self, session_id: str, principal: str | None) -> Lease | None:
        """The session's stream lease, or None when another stream holds it (raises nothing else but
        `BrokerError` subclasses the caller maps)."""
        try:
            lease = await self.work.acquire_lease(
                session_id, self.holder, self.ttl_seconds, principal=principal
            )
        except LeasesFull:
            self.counts["refused"] += 1
            return None
        self.counts["acquired"] += 1
        return lease

    @asynccontextmanager
    async def renewed(self, session_id: str, lease: Lease, principal: str | None) -> AsyncIterator[None]:
        """Renew `lease` while the stream is served, release it afterwards."""
        renewing = asyncio.create_task(self._renew(session_id, lease, principal))
        try:
            yield
        finally:
            renewing.cancel()
            with suppress(asyncio.CancelledError):
                await renewing
            try:
                await self.work.release_lease(session_id, lease.lease_id, principal=principal)
            except BrokerError as error:
                log.info("stream lease not released (it expires by itself): %s", error.detail)

    async def _renew(self, session_id: str, lease: Lease, principal: str | None) -> None:
        while True:
            await asyncio.sleep(self.ttl_seconds / 3)
            try:
                await self.work.renew_lease(session_id, lease.lease_id, principal=principal)
            except BrokerError as error:
                self.counts["lost"] += 1
                log.warning("stream lease renewal failed: %s", error.detail)
