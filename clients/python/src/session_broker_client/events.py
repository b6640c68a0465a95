"""The tenant's lifecycle event stream (`GET /v1/events`, Server-Sent Events), followed across drops.

`EventStream` is what `SessionBroker.events()` returns: an async iterator that reconnects after the
connection drops, resuming with `Last-Event-ID` so nothing retained is lost, and that yields every
frame the broker sends, notices included. In particular `stream.gap` (events were removed by retention
before we resumed) is yielded, never hidden: a consumer that tracks sessions must re-read them.

Besides the broker's own frames it yields one frame of its own, `stream.disconnected`, each time the
connection is lost (before it waits to reconnect): a cache that relies on the stream learns at once
that it can no longer trust it.

`EventFeed` runs one such stream in a background task and hands each event to several subscribers
(the touch near-cache, the adopting session manager), so one broker client holds one stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import httpx

from session_broker_client.errors import BrokerError, BrokerUnavailable, error_from_problem
from session_broker_client.models import Event

if TYPE_CHECKING:
    from session_broker_client.client import SessionBroker

log = logging.getLogger(__name__)

DISCONNECTED = "stream.disconnected"
# The broker sends a keepalive comment every 15 s on an idle stream; silence for longer than this
# means the connection is dead even if TCP has not noticed.
READ_TIMEOUT_SECONDS = 35.0


class Backoff:
    """Bounded, jittered reconnection delays: full jitter under a cap that doubles up to `maximum`;
    `Retry-After` from the broker is a floor (capped at `maximum` too)."""

    def __init__(self, initial: float = 0.1, maximum: float = 5.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self, retry_after: float | None = None) -> float:
        self.failures += 1
        cap = min(self.maximum, self.initial * (2 ** (self.failures - 1)))
        delay = random.uniform(cap / 2, cap)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.maximum))
        return delay


async def parse_frames(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str | None, str]]:
    """SSE frames as (event, id, data) from a response's lines (comments and `retry:` are skipped)."""
    event, event_id = "message", None
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield event, event_id, "\n".join(data)
            event, event_id, data = "message", None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "id":
            event_id = value
        elif name == "data":
            data.append(value)


class EventStream:
    """Async iterator over the tenant's events; see the module docstring. `last_event_id` is where a
    new stream would resume (it advances with every frame that carries an id, `stream.open` included)."""

    def __init__(
        self, broker: SessionBroker, last_event_id: str | None = None, *, backoff: Backoff | None = None
    ) -> None:
        self._broker = broker
        self.last_event_id = last_event_id
        self.backoff = backoff or Backoff()
        self.connected = False
        self._iterator: AsyncIterator[Event] | None = None

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        if self._iterator is None:
            self._iterator = self._follow()
        return await self._iterator.__anext__()

    async def aclose(self) -> None:
        if self._iterator is not None:
            await self._iterator.aclose()  # type: ignore[attr-defined]

    async def _follow(self) -> AsyncIterator[Event]:
        while True:
            retry_after: float | None = None
            try:
                async for event in self._one_connection():
                    yield event
                detail = "the broker ended the stream"
            except BrokerUnavailable as error:
                retry_after = error.retry_after
                detail = error.detail
            except (httpx.TransportError, json.JSONDecodeError) as error:
                detail = f"the event stream broke: {type(error).__name__}"
            if self.connected:
                self.connected = False
                yield Event(type=DISCONNECTED, id=None, data={"detail": detail})
            await asyncio.sleep(self.backoff.next_delay(retry_after))

    async def _one_connection(self) -> AsyncIterator[Event]:
        headers = {"Accept": "text/event-stream"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        async with self._broker.stream_events(headers, READ_TIMEOUT_SECONDS) as response:
            if response.status_code != 200:
                await response.aread()
                raise self._error(response)
            async for event_type, event_id, data in parse_frames(response.aiter_lines()):
                payload: Any = json.loads(data)
                event = Event.from_frame(event_type, event_id, payload if isinstance(payload, dict) else {})
                if event_id is not None:
                    self.last_event_id = event_id
                if event_type in ("stream.open", "stream.gap"):
                    self.connected = True
                    self.backoff.reset()
                elif event_type == "stream.error":
                    # The broker's store went away; it ends the stream after this frame.
                    self.connected = False
                yield event

    @staticmethod
    def _error(response: httpx.Response) -> BrokerError:
        try:
            problem = response.json()
        except ValueError:
            problem = {}
        return error_from_problem(
            response.status_code,
            problem if isinstance(problem, dict) else {},
            response.headers.get("retry-after"),
        )


Subscriber = Callable[[Event], None]


class EventFeed:
    """One event stream in a background task, fanned out to subscribers (called in order, on the event
    loop; a subscriber that raises is logged and skipped). `connected` says whether the stream is up
    right now. The feed starts with its first subscriber and stops with its last."""

    def __init__(self, broker: SessionBroker) -> None:
        self._broker = broker
        self._subscribers: list[Subscriber] = []
        self._task: asyncio.Task[None] | None = None
        self._stream: EventStream | None = None

    @property
    def connected(self) -> bool:
        return self._stream is not None and self._stream.connected

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Start delivering events to `subscriber` (starting the stream if needed); returns the
        function that unsubscribes it. Must be called with an event loop running."""
        self._subscribers.append(subscriber)
        if self._task is None or self._task.done():
            self._stream = self._broker.events()
            self._task = asyncio.get_running_loop().create_task(self._run(self._stream), name="broker-events")

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(subscriber)

        return unsubscribe

    async def _run(self, stream: EventStream) -> None:
        try:
            async for event in stream:
                for subscriber in list(self._subscribers):
                    try:
                        subscriber(event)
                    except Exception:
                        log.exception("event subscriber failed on %s", event.type)
        except BrokerError as error:  # 401/403/422: retrying cannot help
            log.error("the broker refused the event stream: %s", error.detail)
        finally:
            stream.connected = False

    async def aclose(self) -> None:
        task, self._task = self._task, None
        self._subscribers.clear()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
