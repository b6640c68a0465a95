"""`SessionBroker`: the async client for every operation of the broker's HTTP API (`openapi.yaml`)."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx

from session_broker_client.errors import BrokerError, BrokerUnavailable, SessionNotFound, error_from_problem
from session_broker_client.events import EventFeed, EventStream
from session_broker_client.models import RequestOutcome, Session, SessionPage, Stats, Touched
from session_broker_client.near_cache import NearCache
from session_broker_client.retry import NO_RETRY, RetryPolicy, with_retries

log = logging.getLogger(__name__)

PRINCIPAL_HEADER = "Session-Principal"
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MERGE_PATCH = "application/merge-patch+json"
# The broker accepts up to 1000 outcomes per analytics batch; 500 keeps a batch well inside its body limit.
ANALYTICS_BATCH_SIZE = 500
METHOD_NAME_LIMIT = 128


class _Unset:
    """Marks an argument that was not given (None is a value: in a merge patch it clears a field)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def session_path(session_id: str) -> str:
    """Ids may contain `/ ? # % +` (MCP allows any visible ASCII): always percent-encode all of them."""
    return "/v1/sessions/" + quote(session_id, safe="")


class SessionBroker:
    """Async client of one broker (one tenant: the API key selects it).

    `timeout` bounds each call (connect, read, write, pool). `http` lets you pass your own
    `httpx.AsyncClient` (its base URL and auth are then yours to set; it is not closed by `aclose`).
    `retry` is the policy of the idempotent calls (see `retry.py`); `touch_retry` that of `touch`, which
    sits on every gateway request and so gets a tighter one. `near_cache_seconds` > 0 turns on the
    touch near-cache (off by default; see `near_cache.py`); it follows the tenant's event stream while
    the client is in use.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 5.0,
        http: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
        touch_retry: RetryPolicy | None = None,
        near_cache_seconds: float = 0.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.touch_retry = touch_retry or RetryPolicy(attempts=2, base_delay=0.05, max_delay=0.25)
        self._owns_http = http is None
        if http is None:
            headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
            http = httpx.AsyncClient(
                base_url=self.base_url,
                headers=headers,
                timeout=httpx.Timeout(timeout),
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=128),
            )
        self._http = http
        self.near_cache = NearCache(near_cache_seconds) if near_cache_seconds > 0 else None
        self.feed = EventFeed(self)
        self._near_cache_subscribed = False
        self.calls: dict[str, int] = {}  # HTTP calls made, by operation (retries included)

    async def __aenter__(self) -> SessionBroker:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the event feed and close the HTTP client (if this object created it)."""
        await self.feed.aclose()
        self._near_cache_subscribed = False
        if self._owns_http:
            await self._http.aclose()

    # --- sessions ----------------------------------------------------------------------------------

    async def create(
        self,
        *,
        kind: str = "mcp",
        principal: str | None = None,
        client_id: str | None = None,
        owner: str | None = None,
        protocol_version: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        idle_timeout_seconds: int | None = None,
        max_lifetime_seconds: int | None = None,
        idempotency_key: str | None = None,
        max_requests: int | None = None,
        max_requests_per_minute: int | None = None,
    ) -> Session:
        """Create a session; the broker mints its id. Retried only with `idempotency_key` (sent as the
        `Idempotency-Key` header), because a blind repeat of a create whose answer was lost makes two.
        The same key with the same request answers the first one's session again (`.replayed` is then
        True); with another request it raises `IdempotencyKeyReused`. `max_requests` and
        `max_requests_per_minute` limit the session's touches (0: unlimited; None: the tenant's
        default); past them `touch` raises `SessionRequestLimit` or `SessionRateLimited`."""
        body = _session_body(
            kind,
            principal,
            client_id,
            owner,
            protocol_version,
            metadata,
            idle_timeout_seconds,
            max_lifetime_seconds,
            max_requests,
            max_requests_per_minute,
        )
        headers = {IDEMPOTENCY_HEADER: idempotency_key} if idempotency_key else None
        policy = self.retry if idempotency_key else NO_RETRY
        response = await self._call("create", "POST", "/v1/sessions", policy, json=body, headers=headers)
        replayed = response.headers.get(REPLAYED_HEADER, "").lower() == "true"
        return dataclasses.replace(Session.from_json(response.json()), replayed=replayed)

    async def register(
        self,
        session_id: str,
        *,
        kind: str = "mcp",
        principal: str | None = None,
        client_id: str | None = None,
        owner: str | None = None,
        protocol_version: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        idle_timeout_seconds: int | None = None,
        max_lifetime_seconds: int | None = None,
        max_requests: int | None = None,
        max_requests_per_minute: int | None = None,
    ) -> Session:
        """Register an id minted elsewhere (e.g. by an MCP SDK). Not retried: a repeat after a lost
        answer would be refused with `SessionExists` for the session the first attempt made."""
        body = _session_body(
            kind,
            principal,
            client_id,
            owner,
            protocol_version,
            metadata,
            idle_timeout_seconds,
            max_lifetime_seconds,
            max_requests,
            max_requests_per_minute,
        )
        response = await self._call("register", "PUT", session_path(session_id), NO_RETRY, json=body)
        return Session.from_json(response.json())

    async def get(self, session_id: str, *, principal: str | None = None) -> Session:
        """Read a live session (does not touch it)."""
        response = await self._call(
            "get", "GET", session_path(session_id), self.retry, headers=_principal_header(principal)
        )
        return Session.from_json(response.json())

    async def touch(self, session_id: str, *, principal: str | None = None) -> Touched:
        """Slide the session's idle expiry; `SessionNotFound` if it is unknown, ended or another
        principal's. With the near-cache on, a recent success may be answered locally (`.local`)."""
        cache = self.near_cache
        began = 0.0
        if cache is not None:
            self._subscribe_near_cache()
            hit = cache.lookup(session_id, principal)
            if hit is not None:
                return hit
            began = cache.begin()
        response = await self._call(
            "touch",
            "POST",
            session_path(session_id) + "/touch",
            self.touch_retry,
            headers=_principal_header(principal),
        )
        touched = Touched.from_json(response.json())
        if cache is not None:
            cache.store(session_id, principal, touched, began)
        return touched

    async def patch(
        self,
        session_id: str,
        *,
        metadata: Mapping[str, Any] | None = UNSET,
        owner: str | None = UNSET,
        client_id: str | None = UNSET,
        protocol_version: str | None = UNSET,
        max_requests: int | None = UNSET,
        max_requests_per_minute: int | None = UNSET,
        if_match: str | None = None,
        principal: str | None = None,
    ) -> Session:
        """JSON Merge Patch (RFC 7396): `metadata` is merged (a member set to None is removed); the
        other fields are replaced, None clears them (for the request limits: unlimited, as 0); fields not
        given are left alone. `if_match` is an ETag (`session.etag`) or `*`; a mismatch raises
        `PreconditionFailed`."""
        document = {
            name: value
            for name, value in (
                ("metadata", metadata),
                ("owner", owner),
                ("client_id", client_id),
                ("protocol_version", protocol_version),
                ("max_requests", max_requests),
                ("max_requests_per_minute", max_requests_per_minute),
            )
            if value is not UNSET
        }
        if not document:
            raise ValueError(
                "patch needs at least one of metadata, owner, client_id, protocol_version, max_requests, "
                "max_requests_per_minute"
            )
        headers = {"Content-Type": MERGE_PATCH, **_principal_header(principal)}
        if if_match is not None:
            headers["If-Match"] = if_match
        response = await self._call(
            "patch",
            "PATCH",
            session_path(session_id),
            self.retry,
            content=_json_bytes(document),
            headers=headers,
        )
        return Session.from_json(response.json())

    async def delete(self, session_id: str, *, principal: str | None = None) -> None:
        """End a session. If an attempt's outcome was unknown (transport error) and the retry finds the
        session already deleted, that is the first attempt's success and is not raised."""
        outcome_unknown = False

        async def attempt() -> None:
            nonlocal outcome_unknown
            try:
                await self._send(
                    "delete", "DELETE", session_path(session_id), headers=_principal_header(principal)
                )
            except SessionNotFound as error:
                if outcome_unknown and error.reason == "deleted":
                    return
                raise
            except BrokerUnavailable as error:
                outcome_unknown = outcome_unknown or error.status is None
                raise

        await with_retries(self.retry, attempt)

    async def rotate(self, session_id: str, *, principal: str | None = None) -> Session:
        """Move the session to a new minted id (the old id ends with reason `rotated`). Not retried: a
        repeat after a lost answer would find the old id ended."""
        response = await self._call(
            "rotate",
            "POST",
            session_path(session_id) + "/rotate",
            NO_RETRY,
            headers=_principal_header(principal),
        )
        return Session.from_json(response.json())

    async def list_page(
        self,
        *,
        kind: str | None = None,
        principal: str | None = None,
        client_id: str | None = None,
        owner: str | None = None,
        protocol_version: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SessionPage:
        """One page of live sessions matching every filter given (keyset pagination by id)."""
        params = _filters(kind=kind, principal=principal, client_id=client_id, owner=owner)
        if protocol_version is not None:
            params["protocol_version"] = protocol_version
        params["limit"] = str(limit)
        if cursor is not None:
            params["cursor"] = cursor
        response = await self._call("list", "GET", "/v1/sessions", self.retry, params=params)
        return SessionPage.from_json(response.json())

    async def list(
        self,
        *,
        kind: str | None = None,
        principal: str | None = None,
        client_id: str | None = None,
        owner: str | None = None,
        protocol_version: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[Session]:
        """Every live session matching the filters, following cursors page by page."""
        cursor: str | None = None
        while True:
            page = await self.list_page(
                kind=kind,
                principal=principal,
                client_id=client_id,
                owner=owner,
                protocol_version=protocol_version,
                limit=page_size,
                cursor=cursor,
            )
            for session in page.items:
                yield session
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def revoke(
        self,
        *,
        principal: str | None = None,
        client_id: str | None = None,
        owner: str | None = None,
        kind: str | None = None,
        all: bool = False,
    ) -> int:
        """End every live session matching all the filters given (at least one), or with `all=True`
        (and no filter) every live session of the tenant; returns how many. Idempotent (a retry revokes
        0 more), so it is retried."""
        params = _filters(kind=kind, principal=principal, client_id=client_id, owner=owner)
        if all and params:
            raise ValueError("revoke(all=True) takes no filters")
        if all:
            params = {"all": "true"}
        elif not params:
            raise ValueError(
                "revoke needs at least one filter: principal, client_id, owner or kind (or all=True)"
            )
        response = await self._call("revoke", "DELETE", "/v1/sessions", self.retry, params=params)
        return int(response.json()["revoked"])

    async def stats(self, *, window_seconds: int | None = None) -> Stats:
        """The tenant's live sessions (exact), totals, request analytics and configured limits; with
        `window_seconds` (1-86400) also `.window`: created, ended, peak live and lifetimes over it."""
        params = None if window_seconds is None else {"window_seconds": str(window_seconds)}
        response = await self._call("stats", "GET", "/v1/stats", self.retry, params=params)
        return Stats.from_json(response.json())

    # --- analytics and events ----------------------------------------------------------------------

    async def report_requests(self, outcomes: Iterable[RequestOutcome]) -> int:
        """Send request outcomes to `POST /v1/analytics` (in batches the broker accepts); returns how
        many were recorded. Not retried here: `AnalyticsReporter` keeps what failed for its next send."""
        items = [_outcome_json(outcome) for outcome in outcomes]
        recorded = 0
        for start in range(0, len(items), ANALYTICS_BATCH_SIZE):
            batch = {"requests": items[start : start + ANALYTICS_BATCH_SIZE]}
            response = await self._call("report_requests", "POST", "/v1/analytics", NO_RETRY, json=batch)
            recorded += int(response.json()["recorded"])
        return recorded

    def events(self, last_event_id: str | None = None) -> EventStream:
        """The tenant's lifecycle events as an async iterator that reconnects (resuming after
        `last_event_id`, or from now) and yields `stream.gap` when retention lost some; see `events.py`."""
        return EventStream(self, last_event_id)

    @asynccontextmanager
    async def stream_events(
        self, headers: dict[str, str], read_timeout: float
    ) -> AsyncIterator[httpx.Response]:
        """The raw `GET /v1/events` response (for `EventStream`); transport errors are BrokerUnavailable."""
        self._count("events")
        timeout = httpx.Timeout(self.timeout, read=read_timeout)
        try:
            async with self._http.stream("GET", "/v1/events", headers=headers, timeout=timeout) as response:
                yield response
        except httpx.TransportError as error:
            raise BrokerUnavailable(f"the broker's event stream failed: {type(error).__name__}") from error

    # --- plumbing ----------------------------------------------------------------------------------

    def _subscribe_near_cache(self) -> None:
        if not self._near_cache_subscribed and self.near_cache is not None:
            self.feed.subscribe(self.near_cache.on_event)
            self._near_cache_subscribed = True

    async def start(self) -> None:
        """Start what runs in the background (the near-cache's event stream) now rather than on the
        first touch. Optional; the middleware calls it at startup."""
        self._subscribe_near_cache()

    def _count(self, operation: str) -> None:
        self.calls[operation] = self.calls.get(operation, 0) + 1

    async def _call(
        self, operation: str, method: str, path: str, policy: RetryPolicy, **kwargs: Any
    ) -> httpx.Response:
        return await with_retries(policy, lambda: self._send(operation, method, path, **kwargs))

    async def _send(self, operation: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One HTTP attempt; any non-2xx answer raises its problem type's exception."""
        self._count(operation)
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise BrokerUnavailable(
                f"the broker could not be reached: {type(error).__name__}: {error}"
            ) from error
        if response.status_code >= 400:
            raise _error_of(response)
        return response


def _error_of(response: httpx.Response) -> BrokerError:
    problem: Any = {}
    if "json" in response.headers.get("content-type", ""):
        try:
            problem = response.json()
        except ValueError:
            problem = {}
    return error_from_problem(
        response.status_code,
        problem if isinstance(problem, dict) else {},
        response.headers.get("retry-after"),
    )


def _principal_header(principal: str | None) -> dict[str, str]:
    return {PRINCIPAL_HEADER: principal} if principal else {}


def _filters(**values: str | None) -> dict[str, str]:
    return {name: value for name, value in values.items() if value is not None}


def _session_body(
    kind: str,
    principal: str | None,
    client_id: str | None,
    owner: str | None,
    protocol_version: str | None,
    metadata: Mapping[str, Any] | None,
    idle_timeout_seconds: int | None,
    max_lifetime_seconds: int | None,
    max_requests: int | None = None,
    max_requests_per_minute: int | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": kind}
    optional = {
        "principal": principal,
        "client_id": client_id,
        "owner": owner,
        "protocol_version": protocol_version,
        "metadata": dict(metadata) if metadata is not None else None,
        "idle_timeout_seconds": idle_timeout_seconds,
        "max_lifetime_seconds": max_lifetime_seconds,
        "max_requests": max_requests,
        "max_requests_per_minute": max_requests_per_minute,
    }
    body.update({name: value for name, value in optional.items() if value is not None})
    return body


def _outcome_json(outcome: RequestOutcome) -> dict[str, Any]:
    duration = outcome.duration_ms
    return {
        "method": outcome.method[:METHOD_NAME_LIMIT] or "other",
        "ok": bool(outcome.ok),
        # The broker wants a float (JSON has one number type, but its model is strict about bools).
        "duration_ms": None if duration is None else max(0.0, float(duration)),
    }


def _json_bytes(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()
