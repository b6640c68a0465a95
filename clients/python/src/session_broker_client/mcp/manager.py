"""`BrokerAwareSessionManager`: the python SDK's stateful session manager, taught to serve sessions that
another replica opened.

The SDK keeps sessions in process-local dicts and offers no hook to load one (see docs/gateway-kit.md).
This subclass, used together with `BrokerSessionMiddleware(mode="register")`:

- **adopts** a session id that is live in the broker but unknown here: it reads the session, rebuilds a
  born-ready connection from the `initialize` params the middleware stored in its metadata (client info,
  capabilities, negotiated version), and registers a transport for it exactly where the SDK keeps its
  own, so the SDK's request handling takes over from there;
- **drops** its local transport when the broker's event stream says the session ended or was rotated
  elsewhere (deleted through another replica, revoked, expired, evicted).

It relies on private parts of `mcp.server.streamable_http_manager.StreamableHTTPSessionManager` as of
mcp 2.3: `_handle_stateful_request`, `_server_instances`, `_session_owners`, `_task_group`,
`_lifespan_state`, `_session_creation_lock` and `_discard_session`. That is why the `mcp` extra pins the
SDK minor; a test runs it against the installed SDK.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import TaskStatus
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.server.connection import Connection
from mcp.server.lowlevel.server import Server
from mcp.server.runner import serve_connection
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.transport_context import TransportContext
from mcp_types import InitializeRequestParams
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from session_broker_client.client import SessionBroker
from session_broker_client.errors import BrokerUnavailable, SessionNotFound
from session_broker_client.mcp import jsonrpc
from session_broker_client.mcp.asgi import respond
from session_broker_client.mcp.metadata import LATEST_HANDSHAKE_VERSION, initialize_params
from session_broker_client.mcp.middleware import BrokerSessionMiddleware
from session_broker_client.mcp.principal import PrincipalFn, sdk_principal
from session_broker_client.models import Event

log = logging.getLogger(__name__)

ENDING_EVENTS = ("session.ended", "session.rotated")


class BrokerAwareSessionManager(StreamableHTTPSessionManager):
    """`StreamableHTTPSessionManager(app, ...)` plus `broker=`, `principal=` (as the middleware's) and
    `not_found_code=`. Counters: `adopted` (sessions taken over), `dropped` (ended elsewhere)."""

    def __init__(
        self,
        app: Server[Any],
        *,
        broker: SessionBroker,
        principal: PrincipalFn = sdk_principal,
        not_found_code: int = jsonrpc.INVALID_REQUEST,
        retry_after_seconds: int = 2,
        **options: Any,
    ) -> None:
        if options.get("stateless"):
            raise ValueError(
                "BrokerAwareSessionManager is the stateful tier; use mode='own' for stateless apps"
            )
        super().__init__(app, **options)
        self.broker = broker
        self.principal = principal
        self.not_found_body = jsonrpc.session_not_found(not_found_code)
        self.retry_after_seconds = retry_after_seconds
        self.adopted = 0
        self.dropped = 0

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        async with super().run():
            unsubscribe = self.broker.feed.subscribe(self._on_event)
            try:
                yield
            finally:
                unsubscribe()

    async def _handle_stateful_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        session_id = Request(scope).headers.get(MCP_SESSION_ID_HEADER)
        # DELETE never adopts: the middleware ends the broker session itself; a DELETE that reaches the
        # manager closes a local transport (or answers 404 like the SDK).
        adopt = (
            session_id is not None
            and session_id not in self._server_instances
            and scope["method"] != "DELETE"
        )
        if adopt and not await self._adopt(str(session_id), scope, send):
            return
        await super()._handle_stateful_request(scope, receive, send)

    async def _adopt(self, session_id: str, scope: Scope, send: Send) -> bool:
        """Take over a session that is live in the broker; answer 404/503 and return False otherwise."""
        try:
            session = await self.broker.get(session_id, principal=self.principal(scope))
        except SessionNotFound:
            await respond(send, 404, self.not_found_body)
            return False
        except BrokerUnavailable as error:
            retry_after = str(max(1, int(error.retry_after or self.retry_after_seconds))).encode()
            await respond(send, 503, jsonrpc.unavailable(), [(b"retry-after", retry_after)])
            return False
        params = _client_params(initialize_params(session.metadata))
        version = session.protocol_version or (
            params.protocol_version if params else LATEST_HANDSHAKE_VERSION
        )
        user = scope.get("user")
        requestor = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
        async with self._session_creation_lock:
            if session_id in self._server_instances:  # a concurrent request adopted it first
                return True
            if self.max_sessions is not None and len(self._server_instances) >= self.max_sessions:
                body = jsonrpc.error_body(jsonrpc.INTERNAL_ERROR, "Too many open sessions")
                await respond(send, 503, body)
                return False
            transport = StreamableHTTPServerTransport(
                mcp_session_id=session_id,
                is_json_response_enabled=self.json_response,
                event_store=self.event_store,
                security_settings=self.security_settings,
                retry_interval=self.retry_interval,
                idle_timeout=self.session_idle_timeout,
            )
            self._server_instances[session_id] = transport
            if requestor is not None:
                self._session_owners[session_id] = requestor
            assert self._task_group is not None
            await self._task_group.start(self._serve_adopted, transport, version, params)
            self.adopted += 1
        return True

    async def _serve_adopted(
        self,
        transport: StreamableHTTPServerTransport,
        protocol_version: str,
        params: InitializeRequestParams | None,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """The SDK's per-session server task (`_serve_opening_request.run_server`), except that the
        connection is born ready: the handshake happened on another replica."""
        session_id = transport.mcp_session_id
        assert session_id is not None
        async with transport.connect() as (read_stream, write_stream):
            task_status.started()
            try:
                idle_scope = transport.idle_scope if transport.idle_scope is not None else anyio.CancelScope()
                with idle_scope:
                    dispatcher: JSONRPCDispatcher[TransportContext] = JSONRPCDispatcher(
                        read_stream, write_stream, inline_methods=frozenset({"initialize"})
                    )
                    connection = Connection(
                        dispatcher,
                        protocol_version=protocol_version,
                        session_id=session_id,
                        client_params=params,
                    )
                    connection.initialized.set()
                    await serve_connection(
                        self.app, dispatcher, connection=connection, lifespan_state=self._lifespan_state
                    )
            except Exception:
                log.exception("adopted session crashed")
            finally:
                await self._discard_session(session_id, transport)

    def _on_event(self, event: Event) -> None:
        if event.type not in ENDING_EVENTS or self._task_group is None:
            return
        session_id = event.data.get("old_id") if event.type == "session.rotated" else event.session_id
        transport = self._server_instances.get(session_id) if isinstance(session_id, str) else None
        if transport is not None and session_id is not None:
            self.dropped += 1
            self._task_group.start_soon(self._discard_session, session_id, transport)


def _client_params(params: dict[str, Any] | None) -> InitializeRequestParams | None:
    if params is None:
        return None
    try:
        return InitializeRequestParams.model_validate(params, by_name=False)
    except ValidationError:
        return None


def brokered_stateful_app(
    server: Any,
    *,
    broker: SessionBroker,
    path: str = "/mcp",
    middleware: Sequence[Middleware] = (),
    principal: PrincipalFn = sdk_principal,
    manager_options: dict[str, Any] | None = None,
    **middleware_options: Any,
) -> Starlette:
    """A Starlette app serving `server` (an SDK `Server`, or an `MCPServer`) statefully at `path`, with
    `BrokerAwareSessionManager` and `BrokerSessionMiddleware(mode="register")`. Put your authentication
    middleware in `middleware`: it runs outside the broker middleware, which reads the user it sets."""
    lowlevel = server if isinstance(server, Server) else server._lowlevel_server  # MCPServer's SDK server
    manager = BrokerAwareSessionManager(
        lowlevel, broker=broker, principal=principal, **(manager_options or {})
    )
    app = Starlette(
        routes=[Route(path, endpoint=StreamableHTTPASGIApp(manager))],
        middleware=[
            *middleware,
            Middleware(
                BrokerSessionMiddleware,
                broker=broker,
                mode="register",
                path=path,
                principal=principal,
                **middleware_options,
            ),
        ],
        lifespan=lambda app: manager.run(),
    )
    app.state.session_manager = manager
    return app
