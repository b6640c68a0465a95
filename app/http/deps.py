"""FastAPI dependencies, as `Annotated` aliases: the typed state, the caller, the principal, the id."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Path, Request

from app.auth import Caller
from app.errors import AdminRequired
from app.http.bodies import read_body
from app.http.headers import (
    AUTHORIZATION,
    IDEMPOTENCY_KEY,
    IDEMPOTENCY_KEY_PATTERN,
    SESSION_PRINCIPAL,
    authenticate_tenant,
    authorization_of,
    idempotency_key_of,
    principal_of,
    read_headers,
)
from app.service import SessionService
from app.state import BrokerState, Runtime

_AUTHORIZATION = frozenset({AUTHORIZATION})
_PRINCIPAL = frozenset({SESSION_PRINCIPAL})
_IDEMPOTENCY_KEY = frozenset({IDEMPOTENCY_KEY})


# Every dependency is `async def`: FastAPI runs plain `def` dependencies in a thread pool.


def _broker(request: Request) -> BrokerState:
    broker: BrokerState = request.app.broker
    return broker


async def broker_of(request: Request) -> BrokerState:
    return _broker(request)


async def runtime_of(request: Request) -> Runtime:
    return _broker(request).runtime


async def service_of(request: Request) -> SessionService:
    return _broker(request).runtime.service


async def tenant_of(request: Request) -> str:
    """Authenticate a tenant key (401 otherwise); admin keys address no tenant (403)."""
    headers = read_headers(request.scope, _AUTHORIZATION)
    return authenticate_tenant(request.scope, _broker(request).keys, headers)


async def admin_of(request: Request) -> Caller:
    """Authenticate an admin key (401 otherwise); tenant keys get 403."""
    headers = read_headers(request.scope, _AUTHORIZATION)
    caller = _broker(request).keys.authenticate(authorization_of(headers))
    if not caller.is_admin:
        raise AdminRequired("This operation crosses tenants and needs an admin API key.")
    request.state.tenant = "admin"
    return caller


async def principal_dependency(
    request: Request,
    session_principal: Annotated[
        str | None,
        Header(
            alias="Session-Principal",
            description="the end user the caller acts for; a session bound to another principal answers 404",
        ),
    ] = None,
) -> str | None:
    # The parameter documents the header; the value is read like the hot path reads it.
    return principal_of(read_headers(request.scope, _PRINCIPAL))


async def body_of(request: Request) -> bytes:
    """The request body, read the way the hot path reads it (`read_body`); declare it after the caller's
    dependencies, so a request that fails authentication is answered before its body is read."""
    return await read_body(request.receive, _broker(request).settings.http_body_timeout_seconds)


async def idempotency_key_dependency(
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="makes the request safe to retry: the same key with the same request within "
            "IDEMPOTENCY_KEY_RETENTION_SECONDS answers what the first one did (201, the same session) "
            "instead of doing it again; with a different request, 422 `idempotency-key-reused`",
            json_schema_extra={"pattern": IDEMPOTENCY_KEY_PATTERN},
        ),
    ] = None,
) -> str | None:
    # As for Session-Principal: documented here, read and validated like the hot path does.
    return idempotency_key_of(read_headers(request.scope, _IDEMPOTENCY_KEY))


BrokerDep = Annotated[BrokerState, Depends(broker_of)]
BodyDep = Annotated[bytes, Depends(body_of)]
RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
ServiceDep = Annotated[SessionService, Depends(service_of)]
TenantDep = Annotated[str, Depends(tenant_of)]
AdminDep = Annotated[Caller, Depends(admin_of)]
PrincipalDep = Annotated[str | None, Depends(principal_dependency)]
IdempotencyKeyDep = Annotated[str | None, Depends(idempotency_key_dependency)]
# No pattern check on purpose: an impossible id is "no such session" (404), except on register (422).
SessionIdPath = Annotated[
    str,
    # The pattern is documentation only: FastAPI sees the still-encoded segment, the service validates.
    Path(
        description="the session id, percent-encoded (ids may contain `/ ? # % +`)",
        json_schema_extra={"pattern": "^[\\x21-\\x7e]{1,255}$"},
    ),
]
