"""`BrokerSessionMiddleware`: pure ASGI middleware that makes the broker the session table of a
Streamable HTTP MCP server (the python SDK's or FastMCP's), so any replica can serve any session.

Two modes (docs/gateway-kit.md explains the trade-off):

- `mode="own"` (default): the app runs **stateless**; the middleware owns sessions. `initialize`
  without a session id creates the broker session *before* the app does any work (a full quota or a
  broker outage is answered without calling the app), records the client's `initialize` params, and
  puts `Mcp-Session-Id` on the response; if the app then fails the initialize, the broker session is
  ended again. Every request with an id is a broker `touch` first. `DELETE` ends the broker session;
  `GET` is 405 (a stateless server has no standalone stream).
- `mode="register"`: the app is a **stateful** SDK server (with `BrokerAwareSessionManager`, so other
  replicas adopt its sessions). The SDK mints the id; the middleware holds the `initialize` response
  until it has registered that id in the broker, so a client never gets a session that exists on one
  replica only (a failed register becomes a 503 and the app's local session is closed again).

In both modes an unknown, ended or another principal's session id gets the SDK's canonical 404, and a
broker that cannot answer gets 503 with `Retry-After` and a JSON-RPC -32603 body: never a 404, which
would make every client re-initialize at once. Requests of a sessionless protocol revision (an
`MCP-Protocol-Version` header that is not a handshake-era version, e.g. 2026-07-28) pass through
untouched. The middleware must sit inside the app's authentication middleware, because the principal is
read from the authenticated user (`principal=` callable; see `principal.py`).

Request outcomes (method, ok, duration) go to the broker's analytics in the background
(`AnalyticsReporter`), never on the request path.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Collection
from typing import Any, Literal

from session_broker_client.analytics import AnalyticsReporter
from session_broker_client.client import SessionBroker
from session_broker_client.errors import (
    BrokerError,
    BrokerUnavailable,
    MetadataTooLarge,
    PayloadTooLarge,
    QuotaExceeded,
    SessionExists,
    SessionNotFound,
    ValidationFailed,
)
from session_broker_client.mcp import jsonrpc
from session_broker_client.mcp.asgi import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    header,
    read_body,
    replaying,
    respond,
    watching,
    whole_seconds,
)
from session_broker_client.mcp.back_channel import BackChannel
from session_broker_client.mcp.liveness import InFlightKeeper, StreamLeases
from session_broker_client.mcp.metadata import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    SESSION_KIND,
    initialize_metadata,
    negotiated_version,
)
from session_broker_client.mcp.principal import PrincipalFn, sdk_client_id, sdk_principal
from session_broker_client.mcp.response_watch import ResponseWatcher
from session_broker_client.models import Touched
from session_broker_client.work import BrokerWork

log = logging.getLogger(__name__)

SESSION_HEADER = b"mcp-session-id"
VERSION_HEADER = b"mcp-protocol-version"
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024  # the SDK's own request body limit
Mode = Literal["own", "register"]


class BrokerSessionMiddleware:
    """Wrap an MCP server's ASGI app. Options:

    - `broker`: the `SessionBroker` (its `near_cache_seconds` turns on the touch near-cache).
    - `mode`: `"own"` (stateless app; default) or `"register"` (stateful SDK app).
    - `path`: the MCP endpoint's path (`"/mcp"`); other paths pass through. None: every HTTP request.
    - `principal(scope) -> str | None`: the authenticated end user; default: the SDK's
      `issuer|subject|client_id` from `scope["user"]`. `client_id(scope)`: the broker's client id.
    - `not_found_code`: JSON-RPC code of the 404 body (-32600 as the python SDK; -32001 as TypeScript).
    - `idle_timeout_seconds`, `max_lifetime_seconds`, `owner`: passed to the broker on create/register.
    - `retry_after_seconds`: `Retry-After` on a 503 when the broker gave none (it was unreachable).
    - `analytics_interval`: seconds between analytics batches (0 turns request analytics off).
    - `close_broker`: close the broker client at shutdown (default True).

    Work across replicas (`back_channel.py`, `liveness.py`; in-flight marks in both modes, the rest in
    register mode, where the SDK keeps streams and server-to-client requests):
    - `holder`: this replica's name in the broker's leases, marks and pending requests (its own
      address for replies, e.g. its internal URL); default `owner`, else host name and process id.
    - `pending_timeout_seconds`: deadline of each server-to-client request (elicitation, sampling,
      roots) recorded so that a reply reaching another replica finds its way back (0: off).
    - `in_flight_methods`, `in_flight_ttl_seconds`: requests marked in flight once they run halfway to
      the expiry their touch set, so idle expiry waits for them (empty: off); the mark is renewed every
      third of its TTL.
    - `stream_lease_ttl_seconds`: a GET stream holds the session's stream lease, renewed every third of
      this (0: off).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        broker: SessionBroker,
        mode: Mode = "own",
        path: str | None = "/mcp",
        principal: PrincipalFn = sdk_principal,
        client_id: PrincipalFn = sdk_client_id,
        not_found_code: int = jsonrpc.INVALID_REQUEST,
        idle_timeout_seconds: int | None = None,
        max_lifetime_seconds: int | None = None,
        owner: str | None = None,
        retry_after_seconds: int = 2,
        analytics_interval: float = 2.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        close_broker: bool = True,
        holder: str | None = None,
        pending_timeout_seconds: int = 60,
        in_flight_methods: Collection[str] = ("tools/call",),
        in_flight_ttl_seconds: int = 30,
        stream_lease_ttl_seconds: int = 15,
    ) -> None:
        if mode not in ("own", "register"):
            raise ValueError(f"mode must be 'own' or 'register', not {mode!r}")
        self.app = app
        self.broker = broker
        self.mode = mode
        self.path = path.rstrip("/") if path else None
        self.principal = principal
        self.client_id = client_id
        self.not_found_body = jsonrpc.session_not_found(not_found_code)
        self.idle_timeout_seconds = idle_timeout_seconds
        self.max_lifetime_seconds = max_lifetime_seconds
        self.owner = owner
        self.retry_after_seconds = retry_after_seconds
        self.max_body_bytes = max_body_bytes
        self.close_broker = close_broker
        self.analytics = (
            AnalyticsReporter(broker, interval=analytics_interval) if analytics_interval > 0 else None
        )
        self._started = False
        self.holder = holder or owner or f"{socket.gethostname()}-{os.getpid()}"
        work = BrokerWork(broker)
        stateful = mode == "register"
        self.back_channel = (
            BackChannel(app, work, self.holder, pending_timeout_seconds)
            if stateful and pending_timeout_seconds > 0
            else None
        )
        self.in_flight = InFlightKeeper(work, self.holder, in_flight_ttl_seconds, in_flight_methods)
        self.stream_leases = (
            StreamLeases(work, self.holder, stream_lease_ttl_seconds)
            if stateful and stream_lease_ttl_seconds > 0
            else None
        )

    # --- ASGI entry ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] != "http" or (self.path is not None and scope["path"].rstrip("/") != self.path):
            await self.app(scope, receive, send)
            return
        session_id: str | None = None
        version: str | None = None
        for name, value in scope["headers"]:
            if name == SESSION_HEADER:
                session_id = value.decode("latin-1")
            elif name == VERSION_HEADER:
                version = value.decode("latin-1")
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            await self.app(scope, receive, send)  # a sessionless revision: no session to broker
            return
        if not self._started:
            await self.startup()
        method = scope["method"]
        if method == "POST":
            await self._post(scope, receive, send, session_id)
        elif method == "DELETE":
            await self._delete(scope, send, session_id)
        elif method == "GET" and self.mode == "own":
            await respond(send, 405, jsonrpc.method_not_allowed(), [(b"allow", b"POST, DELETE")])
        elif method == "GET" and session_id is not None:
            if await self._touch(scope, send, session_id, None):
                await self._stream(scope, receive, send, session_id)
        else:
            await self.app(scope, receive, send)

    # --- POST ----------------------------------------------------------------------------------

    async def _post(self, scope: Scope, receive: Receive, send: Send, session_id: str | None) -> None:
        started = time.perf_counter()
        body = await read_body(receive, self.max_body_bytes)
        if body is None:
            await respond(send, 413, jsonrpc.error_body(jsonrpc.INVALID_REQUEST, "Request body too large"))
            return
        inbound = jsonrpc.read_inbound(body)
        replay = replaying(body, receive)
        if session_id is None:
            if inbound.is_initialize:
                if self.mode == "own":
                    await self._open_session(scope, replay, send, inbound, started)
                else:
                    await self._register_session(scope, replay, send, inbound, started)
            elif inbound.parsed:
                await respond(send, 400, jsonrpc.missing_session_id())
            else:
                await self.app(scope, replay, send)  # the app answers the parse error
            return
        touched = await self._touch(scope, send, session_id, inbound, started)
        if touched is None:
            return
        principal = self.principal(scope)
        if self.back_channel is not None and inbound.is_response:
            # The client's reply to a server-to-client request: its holder may be another replica.
            await self.back_channel.hand_over(send, session_id, body, principal)
            return
        watcher = ResponseWatcher(inbound.request_id) if inbound.is_request else None
        answer = watching(send, watcher)
        if self.back_channel is not None:
            answer = self.back_channel.watching(answer, scope, session_id, principal)
        try:
            async with self.in_flight.held(session_id, inbound.method, principal, touched.expires_at):
                await self.app(scope, replay, answer)
        finally:
            self._record(inbound, watcher, started)

    async def _stream(self, scope: Scope, receive: Receive, send: Send, session_id: str) -> None:
        """Register mode's GET: the standalone stream, under the session's stream lease; server-to-client
        requests sent on it are recorded like those on a POST's stream."""
        principal = self.principal(scope)
        answer = (
            send
            if self.back_channel is None
            else self.back_channel.watching(send, scope, session_id, principal)
        )
        if self.stream_leases is None:
            await self.app(scope, receive, answer)
            return
        try:
            lease = await self.stream_leases.acquire(session_id, principal)
        except SessionNotFound:
            await respond(send, 404, self.not_found_body)
            return
        except BrokerUnavailable as error:
            await self._unavailable(send, error, None)
            return
        if lease is None:
            await respond(send, 409, jsonrpc.stream_conflict())
            return
        async with self.stream_leases.renewed(session_id, lease, principal):
            await self.app(scope, receive, answer)

    async def _open_session(
        self, scope: Scope, receive: Receive, send: Send, inbound: jsonrpc.Inbound, started: float
    ) -> None:
        """Mode own: create in the broker first, then let the stateless app answer `initialize`."""
        version = negotiated_version(inbound.params.get("protocolVersion"))
        try:
            session = await self.broker.create(
                kind=SESSION_KIND,
                principal=self.principal(scope),
                client_id=self.client_id(scope),
                owner=self.owner,
                protocol_version=version,
                metadata=initialize_metadata(inbound.params, version),
                idle_timeout_seconds=self.idle_timeout_seconds,
                max_lifetime_seconds=self.max_lifetime_seconds,
            )
        except BrokerError as error:
            await self._refuse_initialize(send, inbound, error)
            self._record(inbound, None, started, ok=False)
            return
        session_id = session.id
        header = (SESSION_HEADER, session_id.encode("latin-1"))
        scope = dict(scope)
        scope["headers"] = [*scope["headers"], header]  # what the app sees (FastMCP's ctx.session_id)
        watcher = ResponseWatcher(inbound.request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        established = False
        try:
            await self.app(scope, receive, watching(send_with_id, watcher))
            watcher.finish()
            established = watcher.ok
        finally:
            if not established:
                await self._end_quietly(session_id, scope)
            self._record(inbound, watcher, started, ok=established)

    async def _register_session(
        self, scope: Scope, receive: Receive, send: Send, inbound: jsonrpc.Inbound, started: float
    ) -> None:
        """Mode register: the stateful app mints the id; hold its answer until the broker has it."""
        watcher = ResponseWatcher(inbound.request_id, want_result=True)
        held: list[Message] = []
        state: dict[str, Any] = {"decided": False, "refused": False, "session_id": None}

        async def decide() -> None:
            state["decided"] = True
            session_id = state["session_id"]
            if watcher.result is None:  # the app failed the initialize: nothing to register
                for message in held:
                    await send(message)
                return
            version = str(watcher.result.get("protocolVersion") or negotiated_version(None))
            try:
                await self.broker.register(
                    session_id,
                    kind=SESSION_KIND,
                    principal=self.principal(scope),
                    client_id=self.client_id(scope),
                    owner=self.owner,
                    protocol_version=version,
                    metadata=initialize_metadata(inbound.params, version),
                    idle_timeout_seconds=self.idle_timeout_seconds,
                    max_lifetime_seconds=self.max_lifetime_seconds,
                )
            except BrokerError as error:
                state["refused"] = True
                await self._refuse_initialize(send, inbound, error)
                return
            for message in held:
                await send(message)

        async def holding_send(message: Message) -> None:
            if state["decided"]:
                if not state["refused"]:
                    await send(message)
                return
            if message["type"] == "http.response.start":
                watcher.start(message["status"], list(message.get("headers", [])))
                session_id = header(message.get("headers", []), SESSION_HEADER)
                if message["status"] >= 400 or session_id is None:
                    state["decided"] = True  # refused by the app: nothing was opened
                    await send(message)
                    return
                state["session_id"] = session_id
                held.append(message)
                return
            held.append(message)
            if message["type"] == "http.response.body":
                watcher.feed(message.get("body", b""))
                if not message.get("more_body", False):
                    watcher.finish()
                if watcher.answered or not message.get("more_body", False):
                    await decide()

        try:
            await self.app(scope, receive, holding_send)
        finally:
            if not state["decided"] and state["session_id"] is not None:
                await decide()
            if state["refused"]:
                await self._close_local_session(scope, state["session_id"])
            self._record(inbound, watcher, started, ok=watcher.result is not None and not state["refused"])

    async def _refuse_initialize(self, send: Send, inbound: jsonrpc.Inbound, error: BrokerError) -> None:
        """Answer an `initialize` the broker would not open a session for."""
        request_id = inbound.request_id
        if isinstance(error, QuotaExceeded):
            retry_after = whole_seconds(error.retry_after, self.retry_after_seconds)
            body = jsonrpc.quota_exceeded(request_id, error.scope, error.limit)
            await respond(send, 429, body, [(b"retry-after", retry_after)])
        elif isinstance(error, BrokerUnavailable):
            await self._unavailable(send, error, request_id)
        elif isinstance(error, SessionExists):  # register: the SDK minted an id the broker already has
            await self._unavailable(send, None, request_id)
        elif isinstance(error, ValidationFailed | MetadataTooLarge | PayloadTooLarge):
            message = f"Session could not be created: {error.detail}"
            await respond(send, 400, jsonrpc.error_body(jsonrpc.INVALID_REQUEST, message, request_id))
        else:
            log.error("the broker refused to open a session: %s", error.detail)
            message = "Session could not be created (the gateway's broker configuration was refused)"
            await respond(send, 500, jsonrpc.error_body(jsonrpc.INTERNAL_ERROR, message, request_id))

    # --- requests with a session id ------------------------------------------------------------

    async def _touch(
        self,
        scope: Scope,
        send: Send,
        session_id: str,
        inbound: jsonrpc.Inbound | None,
        started: float | None = None,
    ) -> Touched | None:
        """Touch the session; if it is not live (or the broker cannot say), answer and return None."""
        try:
            return await self.broker.touch(session_id, principal=self.principal(scope))
        except SessionNotFound:
            await respond(send, 404, self.not_found_body)
        except BrokerUnavailable as error:
            await self._unavailable(send, error, inbound.request_id if inbound else None)
        except BrokerError as error:
            log.error("the broker refused a touch: %s", error.detail)
            request_id = inbound.request_id if inbound else None
            body = jsonrpc.error_body(jsonrpc.INTERNAL_ERROR, "Session check failed", request_id)
            await respond(send, 500, body)
        if inbound is not None and started is not None:
            self._record(inbound, None, started, ok=False)
        return None

    async def _delete(self, scope: Scope, send: Send, session_id: str | None) -> None:
        if session_id is None:
            await respond(send, 400, jsonrpc.missing_session_id())
            return
        try:
            await self.broker.delete(session_id, principal=self.principal(scope))
        except SessionNotFound:
            await respond(send, 404, self.not_found_body)
            return
        except BrokerUnavailable as error:
            await self._unavailable(send, error, None)
            return
        # Register mode: replicas holding a local transport drop it when the broker's `session.ended`
        # event reaches their BrokerAwareSessionManager (and touch answers 404 before that).
        await respond(send, 200, b"")

    # --- helpers -------------------------------------------------------------------------------

    async def _unavailable(self, send: Send, error: BrokerUnavailable | None, request_id: Any) -> None:
        retry_after = whole_seconds(error.retry_after if error else None, self.retry_after_seconds)
        await respond(send, 503, jsonrpc.unavailable(request_id), [(b"retry-after", retry_after)])

    async def _end_quietly(self, session_id: str, scope: Scope) -> None:
        """End a session whose initialize failed; if the broker cannot be reached it expires idle."""
        try:
            await self.broker.delete(session_id, principal=self.principal(scope))
        except BrokerError as error:
            log.warning("could not end the session of a failed initialize: %s", error.detail)

    async def _close_local_session(self, scope: Scope, session_id: str | None) -> None:
        """Register mode: the broker refused the SDK's id, so close the app's local session through its
        own DELETE handling (the response goes nowhere: the client already has its 503)."""
        if session_id is None:
            return
        headers = [
            (name, value)
            for name, value in scope["headers"]
            if name not in (b"content-type", b"content-length")
        ]
        delete_scope = {
            **scope,
            "method": "DELETE",
            "headers": [*headers, (SESSION_HEADER, session_id.encode())],
        }

        async def no_body() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def discard(message: Message) -> None:
            return None

        try:
            await self.app(delete_scope, no_body, discard)
        except Exception:
            log.exception("closing the local session of a refused registration failed")

    def _record(
        self,
        inbound: jsonrpc.Inbound,
        watcher: ResponseWatcher | None,
        started: float,
        ok: bool | None = None,
    ) -> None:
        if self.analytics is None or inbound.method is None:
            return
        if ok is None:
            ok = watcher.ok if watcher is not None else True
        self.analytics.record(inbound.method, ok, (time.perf_counter() - started) * 1000.0)

    # --- lifespan ------------------------------------------------------------------------------

    async def startup(self) -> None:
        """Start the background work (analytics sender, near-cache event stream). Called at ASGI
        lifespan startup, or on the first request when the server runs no lifespan."""
        if self._started:
            return
        self._started = True
        if self.analytics is not None:
            self.analytics.start()
        await self.broker.start()

    async def shutdown(self) -> None:
        """Send the last analytics and stop the background work."""
        if not self._started:
            return
        self._started = False
        if self.analytics is not None:
            await self.analytics.aclose()
        if self.back_channel is not None:
            await self.back_channel.aclose()
        if self.close_broker:
            await self.broker.aclose()

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_startup(message_source: Receive = receive) -> Message:
            message = await message_source()
            if message["type"] == "lifespan.startup":
                await self.startup()
            return message

        async def send_shutdown(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.shutdown()  # after the app has stopped: its last requests are counted
            await send(message)

        await self.app(scope, receive_startup, send_shutdown)
