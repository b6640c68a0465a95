"""Server-to-client requests across replicas: `ctx.elicit`, `ctx.sample` and roots for handshake-era
clients of a stateful SDK server behind a load balancer (register mode).

The SDK sends such a request on the stream of the POST (or GET) it serves and waits, in that process, for
the client's JSON-RPC response, which the client POSTs as a new request that may reach another replica.
So (the broker's docs/design.md, "Pending requests"):

- the holder records each server-to-client request it sees leaving on a stream in the broker *before*
  forwarding it (`ServerRequests` reads the SSE frames), and starts a waiter for it;
- the replica that receives the client's response, whichever it is, hands it to the broker
  (`hand_over`) and answers the client 202 itself: the response never reaches its own SDK, which would
  drop it;
- the holder's waiter gets the response from the broker and replays it into its own SDK app as the
  client's POST (same scope, so the same authenticated user), and the tool call resumes. A request whose
  deadline passes, or that is cancelled, is answered locally with a JSON-RPC error, so the tool sees an
  error instead of waiting forever.

Replicas never talk to each other; each only needs the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from session_broker_client.errors import (
    BrokerError,
    BrokerUnavailable,
    PendingRequestEnded,
    PendingRequestNotFound,
    SessionNotFound,
)
from session_broker_client.mcp import jsonrpc
from session_broker_client.work import BrokerWork

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_TIMED_OUT = -32001  # the code the SDKs use for a request that got no answer in time
# Each wait asks the broker for at most this long, so a lost connection is noticed.
WAIT_SLICE_SECONDS = 20.0
# Replaced on a replayed reply: a GET stream need accept only text/event-stream (the spec asks no more),
# and the SDK wants a POST to accept both.
_REPLAYED_HEADERS = (b"content-type", b"content-length", b"accept")


def is_response(message: Any) -> bool:
    """A JSON-RPC response (result or error) to a server-to-client request."""
    return (
        isinstance(message, dict)
        and "method" not in message
        and "id" in message
        and message.get("id") is not None
        and ("result" in message or "error" in message)
    )


class ServerRequests:
    """Reads the SSE frames a response body carries and yields the server-to-client requests in them
    (messages with a `method` and an `id`). Frames may be split across body chunks."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        self._buffer += chunk.replace(b"\r\n", b"\n")
        requests: list[dict[str, Any]] = []
        while b"\n\n" in self._buffer:
            frame, self._buffer = self._buffer.split(b"\n\n", 1)
            data = b"\n".join(line[5:].lstrip() for line in frame.split(b"\n") if line.startswith(b"data:"))
            if not data:
                continue
            try:
                message = json.loads(data)
            except ValueError:
                continue
            if isinstance(message, dict) and isinstance(message.get("method"), str) and "id" in message:
                requests.append(message)
        return requests


class BackChannel:
    """Pending server-to-client requests of one middleware: recording, waiting, replaying, handing over.

    `app` is the SDK app the middleware wraps (replies are replayed into it), `holder` this replica's
    name in the broker's records, `timeout_seconds` each request's deadline."""

    def __init__(self, app: ASGIApp, work: BrokerWork, holder: str, timeout_seconds: int) -> None:
        self.app = app
        self.work = work
        self.holder = holder
        self.timeout_seconds = timeout_seconds
        self.counts = {"recorded": 0, "handed_over": 0, "refused": 0, "replayed": 0, "timed_out": 0}
        self._tasks: set[asyncio.Task[None]] = set()

    # --- the holder: watch what leaves on a stream ------------------------------------------------

    def watching(self, send: Send, scope: Scope, session_id: str, principal: str | None) -> Send:
        """`send` for the SDK's answer to a request of `session_id`: server-to-client requests in it are
        recorded (before the client can see them) and waited for."""
        reader: ServerRequests | None = None

        async def watched(message: Message) -> None:
            nonlocal reader
            if message["type"] == "http.response.start":
                content_type = _header(message.get("headers", []), b"content-type") or ""
                reader = ServerRequests() if content_type.startswith("text/event-stream") else None
            elif message["type"] == "http.response.body" and reader is not None:
                for request in reader.feed(message.get("body", b"")):
                    await self._record(scope, session_id, principal, request)
            await send(message)

        return watched

    async def _record(
        self, scope: Scope, session_id: str, principal: str | None, request: dict[str, Any]
    ) -> None:
        try:
            pending_id = await self.work.record_pending(
                session_id,
                request["id"],
                request["method"],
                self.holder,
                self.timeout_seconds,
                principal=principal,
            )
        except BrokerError as error:
            # Unrecorded, a reply that reaches another replica is lost; one that comes back here is too,
            # since every replica hands replies to the broker. Say so; the request will time out.
            log.warning("could not record a %s request in the broker: %s", request["method"], error.detail)
            return
        self.counts["recorded"] += 1
        task = asyncio.create_task(
            self._wait(dict(scope), session_id, principal, request["id"], pending_id),
            name=f"pending-{pending_id}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wait(
        self, scope: Scope, session_id: str, principal: str | None, request_id: Any, pending_id: str
    ) -> None:
        deadline = time.monotonic() + self.timeout_seconds + 5.0
        while time.monotonic() < deadline:
            try:
                state = await self.work.wait_pending(
                    session_id,
                    pending_id,
                    min(WAIT_SLICE_SECONDS, self.timeout_seconds + 1.0),
                    principal=principal,
                )
            except SessionNotFound:
                return  # the session ended: the SDK drops its transport, and the tool call with it
            except BrokerUnavailable:
                await asyncio.sleep(0.5)
                continue
            except BrokerError as error:
                log.warning("lost track of a pending request: %s", error.detail)
                return
            if state.state == "pending":
                continue
            if state.state == "answered" and state.response is not None:
                body = json.dumps(state.response, separators=(",", ":")).encode()
            else:
                self.counts["timed_out"] += state.state == "timed_out"
                message = f"The client did not answer in time ({state.state})"
                body = jsonrpc.error_body(REQUEST_TIMED_OUT, message, request_id)
            await self._replay(scope, session_id, body)
            return

    async def _replay(self, scope: Scope, session_id: str, body: bytes) -> None:
        """Give the SDK app the reply as if the client had POSTed it here."""
        headers = [(name, value) for name, value in scope["headers"] if name.lower() not in _REPLAYED_HEADERS]
        replay_scope = {
            **scope,
            "method": "POST",
            "headers": [
                *headers,
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"accept", b"application/json, text/event-stream"),
            ],
        }
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # never disconnects while the app answers
            raise AssertionError("unreachable")

        status: list[int] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        try:
            await self.app(replay_scope, receive, capture)
        except Exception:
            log.exception("replaying a client's reply into the SDK failed")
            return
        if status and status[0] == 202:
            self.counts["replayed"] += 1
        else:
            log.warning("the SDK refused a replayed reply (HTTP %s)", status[0] if status else None)

    # --- any replica: hand a client's reply over --------------------------------------------------

    async def hand_over(self, send: Send, session_id: str, body: bytes, principal: str | None) -> None:
        """Answer a POST that carries the client's response: 202 once the broker has it for its holder;
        400 (nothing changed) when it answers no pending request; 503 when the broker cannot say."""
        try:
            await self.work.reply(session_id, body, principal=principal)
        except (PendingRequestNotFound, PendingRequestEnded) as error:
            self.counts["refused"] += 1
            message = f"No pending request has this id: {error.detail}"
            await _respond(send, 400, jsonrpc.error_body(jsonrpc.INVALID_REQUEST, message))
            return
        except SessionNotFound:
            await _respond(send, 404, jsonrpc.session_not_found())
            return
        except BrokerUnavailable as error:
            retry_after = str(max(1, int(error.retry_after or 2))).encode()
            await _respond(send, 503, jsonrpc.unavailable(), [(b"retry-after", retry_after)])
            return
        self.counts["handed_over"] += 1
        await send({"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _header(headers: Any, name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", jsonrpc.JSON.encode()),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
