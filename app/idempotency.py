"""Idempotent create and rotation: the `Idempotency-Key` rules (docs/design.md, "Idempotent create").

A gateway that retries a create after a timeout or a 503 cannot know whether the first attempt committed.
With the same key and the same request, the retry gets the first attempt's answer (the same session,
201, the same body) instead of a second session; the same key with a different request is refused (422)
rather than answered with a session that was made for something else. Keys belong to the tenant and are
remembered for IDEMPOTENCY_KEY_RETENTION_SECONDS; the purge forgets them after that.

"The same request" is the validated request, not its bytes: `{}` and an empty body, or the same fields in
another order, are the same create. A rotation's request is the session it rotates and the principal the
caller acts for (a retry on behalf of someone else must not learn the new id).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg

from app import jsonio, metrics
from app.errors import IdempotencyConflict, IdempotencyKeyReused
from app.records import SESSION_FIELDS, IdempotencyClaim, IdempotencyRace, Remembered
from app.schemas import SessionCreate

Result = TypeVar("Result")
# Rounds of a request that lost the race to a concurrent request with the same key (which committed
# first): the next round sees that request's answer, unless it rolled back too.
ATTEMPTS = 3

_TIMESTAMPS = ("created_at", "last_seen_at", "expires_at")


def _digest(*parts: bytes) -> str:
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


def create_fingerprint(how: str, request: SessionCreate, session_id: str | None) -> str:
    body = jsonio.dumps(request.model_dump(mode="json"), jsonio.OPT_SORT_KEYS)
    return _digest(b"create", how.encode(), (session_id or "").encode(), body)


def rotate_fingerprint(session_id: str, principal: str | None) -> str:
    return _digest(b"rotate", session_id.encode(), (principal or "").encode())


def claim(key: str | None, fingerprint: str, retention_seconds: int) -> IdempotencyClaim | None:
    """What an insert or rotation checks and records for the request's key (None: no key)."""
    return None if key is None else IdempotencyClaim(key, fingerprint, retention_seconds)


def transaction_if(connection: asyncpg.Connection, claim: IdempotencyClaim | None) -> Any:
    """With a key, a transaction around the statement: it is rolled back when the race is lost."""
    return connection.transaction() if claim is not None else contextlib.nullcontext()


def replayed(tenant: str, remembered: Remembered, claim: IdempotencyClaim | None) -> dict[str, Any]:
    """The session the key's first request answered with, exactly as it was answered; 422 when this
    request is not the one the key was first used for."""
    assert claim is not None  # only an idempotent statement remembers anything
    if remembered.fingerprint != claim.fingerprint:
        raise IdempotencyKeyReused()
    metrics.count_idempotent_replay(tenant)
    stored = remembered.response  # the session row as JSON, written by the statement that created it
    session = {name: stored[name] for name in SESSION_FIELDS}
    for name in _TIMESTAMPS:
        session[name] = datetime.fromisoformat(stored[name]).astimezone(UTC)
    return session


async def retrying(attempt: Callable[[], Awaitable[Result]]) -> Result:
    """Run `attempt` (one transaction) again when it lost the race for its key; 409 if it keeps losing."""
    for _ in range(ATTEMPTS):
        try:
            return await attempt()
        except IdempotencyRace:
            continue
    raise IdempotencyConflict()
