"""`SessionRepository`: runs the session statements of `app/sql/` on one connection and turns their rows
into the shapes of `app/records.py`. No SQL text lives here, and nothing here commits: each call is one
autocommit statement unless the caller holds a transaction."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from app import jsonio, rules
from app.records import (
    NEW_SESSION_FIELDS,
    QUOTA_SCOPES,
    SESSION_FIELDS,
    IdempotencyClaim,
    IdempotencyRace,
    InsertOutcome,
    Lookup,
    NewSession,
    QuotaLimits,
    Remembered,
    RequestCounts,
    TouchOutcome,
)
from app.sql import change, create, end, read, touch


def _new_session_values(new: NewSession) -> dict[str, Any]:
    """The insert statements' parameters named like NewSession's fields."""
    return {name: getattr(new, name) for name in (*NEW_SESSION_FIELDS, "warning_seconds")}


def _session(record: asyncpg.Record) -> dict[str, Any]:
    return {name: record[name] for name in SESSION_FIELDS}


def _tight_scopes(record: asyncpg.Record) -> tuple[str, ...]:
    return tuple(scope for scope in QUOTA_SCOPES if record[f"{scope}_tight"])


def _touch_outcome(record: asyncpg.Record) -> TouchOutcome:
    limited = record["max_requests"] or record["max_requests_per_minute"]
    return TouchOutcome(
        found=record["expires_at"] is not None,
        principal=record["principal"],
        expires_at=record["expires_at"],
        written=record["written"],
        due=bool(record["due"]),
        ended_reason=record["ended_reason"],
        limits=RequestCounts(
            record["max_requests"],
            record["max_requests_per_minute"],
            record["created_at"],
            record["request_count"],
            record["rate_window"],
            record["rate_count"],
            record["window_left"],
        )
        if limited
        else None,
    )


def _remembered(record: asyncpg.Record) -> Remembered | None:
    if record["key_fingerprint"] is None:
        return None
    return Remembered(record["key_fingerprint"], record["key_response"])


def _check_recorded(record: asyncpg.Record, claim: IdempotencyClaim | None) -> None:
    """With a claim, a session written without its key recorded lost a race with the same key."""
    if claim is not None and record["id"] is not None and not record["key_recorded"]:
        raise IdempotencyRace()


class SessionRepository:
    """All reads and writes of sessions for one connection."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection

    async def insert(
        self,
        tenant: str,
        session_id: str,
        new: NewSession,
        *,
        how: str,
        limits: QuotaLimits,
        headroom: int,
        claim: IdempotencyClaim | None = None,
    ) -> InsertOutcome:
        """Insert a new session unless a live session or tombstone holds the id, or a quota scope has less
        than `headroom` room left (then `tight_scopes` says which, and nothing is written). With a `claim`,
        also unless its key is remembered (then `remembered` is what it answered), and the key is recorded
        with the new session; raises IdempotencyRace (run it in a transaction) when the same key won
        concurrently."""
        statement = create.INSERT_SESSION if claim is None else create.INSERT_SESSION_IDEMPOTENT
        record = await self.connection.fetchrow(
            *statement.bind(
                tenant=tenant,
                id=session_id,
                how=how,
                tenant_limit=limits.tenant,
                principal_limit=limits.principal,
                client_limit=limits.client,
                headroom=headroom,
                **_new_session_values(new),
                **(claim.values() if claim is not None else {}),
            )
        )
        assert record is not None  # the statement always returns exactly one row
        _check_recorded(record, claim)
        return InsertOutcome(
            session=_session(record) if record["id"] is not None else None,
            retired_reason=record["retired_reason"],
            tight_scopes=_tight_scopes(record),
            replaced_reason=record["replaced_reason"],
            replaced_lifetime=record["replaced_lifetime"],
            remembered=_remembered(record),
        )

    async def insert_many(
        self, items: list[tuple[str, str, NewSession, QuotaLimits]], *, headroom: int
    ) -> list[InsertOutcome]:
        """Insert several sessions with minted ids in one statement; outcomes in the order of `items`."""
        columns = {name: [getattr(new, name) for _, _, new, _ in items] for name in NEW_SESSION_FIELDS}
        columns["metadata"] = [jsonio.dumps(metadata).decode() for metadata in columns["metadata"]]
        records = await self.connection.fetch(
            *create.INSERT_MANY.bind(
                warning_seconds=items[0][2].warning_seconds,
                tenants=[tenant for tenant, _, _, _ in items],
                ids=[session_id for _, session_id, _, _ in items],
                tenant_limits=[limits.tenant for _, _, _, limits in items],
                principal_limits=[limits.principal for _, _, _, limits in items],
                client_limits=[limits.client for _, _, _, limits in items],
                headroom=headroom,
                **columns,
            )
        )
        return [
            InsertOutcome(
                session=_session(record) if record["id"] is not None else None,
                retired_reason=None,
                tight_scopes=_tight_scopes(record),
            )
            for record in records
        ]

    async def lock_quota_scope(self, key: str) -> None:
        """Serialise quota decisions for one scope until the current transaction ends."""
        await self.connection.execute(*create.LOCK_QUOTA_SCOPE.bind(key=key))

    async def evict_oldest_idle(
        self, tenant: str, scope: str, value: str | None, limit: int, tombstone_seconds: int
    ) -> float | None:
        """If the scope is full, end its least recently seen session; its lifetime, or None."""
        values: dict[str, Any] = {"tenant": tenant, "limit": limit, "tombstone_seconds": tombstone_seconds}
        if scope != "tenant":
            values["scope_value"] = value
        result = await self.connection.fetchval(*end.EVICT_OLDEST_IDLE[scope].bind(**values))
        return float(result) if result is not None else None

    async def touch(
        self,
        tenant: str,
        session_id: str,
        *,
        principal: str | None,
        granularity_seconds: float,
        async_commit: bool,
        wait: bool = False,
    ) -> TouchOutcome:
        """Touch one session. Unless `wait`, a row that another transaction holds is not waited for: the
        outcome is due and not written, as for a row that is gone."""
        statement = touch.TOUCH_SESSION_WAITING if wait else touch.TOUCH_SESSION
        record = await self.connection.fetchrow(
            *statement.bind(
                tenant=tenant,
                id=session_id,
                principal=principal,
                granularity=granularity_seconds,
                async_commit=async_commit,
            )
        )
        assert record is not None
        return _touch_outcome(record)

    async def touch_many(
        self, keys: list[tuple[str, str, str | None]], *, granularity_seconds: float, async_commit: bool
    ) -> list[TouchOutcome]:
        """Touch several distinct sessions in one statement; outcomes in the order of `keys`. Rows that
        another transaction holds are skipped, not waited for (due and not written)."""
        records = await self.connection.fetch(
            *touch.TOUCH_MANY.bind(
                tenants=[key[0] for key in keys],
                ids=[key[1] for key in keys],
                principals=[key[2] for key in keys],
                granularity=granularity_seconds,
                async_commit=async_commit,
            )
        )
        return [_touch_outcome(record) for record in records]

    async def get(
        self,
        tenant: str,
        session_id: str,
        *,
        principal: str | None,
        for_update: bool = False,
        with_leases: bool = False,
    ) -> Lookup:
        """The session if live (whoever it is bound to: the caller decides), else why it ended, as far as
        the caller acting for `principal` may know: to another principal an ended session is as missing
        as one that never existed. `for_update` locks the row (inside a transaction); `with_leases` adds
        its live stream leases and whether its owner holds one (`owner_alive`)."""
        statement = read.GET_SESSION_FOR_UPDATE if for_update else read.GET_SESSION
        record = await self.connection.fetchrow(*statement.bind(tenant=tenant, id=session_id))
        if record is not None and record["live"]:
            session = _session(record)
            if with_leases:
                leases = record["leases"] or []
                session["owner_alive"] = any(lease["holder"] == session["owner"] for lease in leases)
                session["leases"] = leases
            return Lookup(session=session, ended_reason=None)
        if record is not None:
            visible = not rules.bound_elsewhere(record["principal"], principal)
            return Lookup(session=None, ended_reason=record["expiry_reason"] if visible else None)
        reason = await self.connection.fetchval(
            *read.TOMBSTONE_REASON.bind(tenant=tenant, id=session_id, principal=principal)
        )
        return Lookup(session=None, ended_reason=reason)

    async def update(
        self,
        tenant: str,
        session_id: str,
        *,
        expected_version: int,
        changed: list[str],
        values: dict[str, Any],
    ) -> dict[str, Any] | None:
        """Compare-and-set on `version`, writing the patchable `values` (`rules.PATCHABLE`) and emitting
        `session.updated`; None when the session changed meanwhile."""
        statement = change.UPDATE_SESSION.bind(
            tenant=tenant, id=session_id, expected_version=expected_version, changed=changed, **values
        )
        record = await self.connection.fetchrow(*statement)
        return _session(record) if record is not None else None

    async def delete(
        self, tenant: str, session_id: str, *, principal: str | None, tombstone_seconds: int
    ) -> float | None:
        """End a live session (reason `deleted`); returns its lifetime in seconds, None if nothing ended."""
        value = await self.connection.fetchval(
            *end.DELETE_SESSION.bind(
                tenant=tenant, id=session_id, principal=principal, tombstone_seconds=tombstone_seconds
            )
        )
        return float(value) if value is not None else None

    async def revoke_batch(
        self, tenant: str, filters: dict[str, str], *, batch: int, tombstone_seconds: int
    ) -> list[float]:
        """End up to `batch` live sessions matching every filter (reason `revoked`); their lifetimes. No
        filters: any live session of the tenant."""
        names = tuple(name for name in end.REVOKE_FILTERS if name in filters)
        rows = await self.connection.fetch(
            *end.REVOKE[names].bind(
                tenant=tenant,
                batch=batch,
                tombstone_seconds=tombstone_seconds,
                **{name: filters[name] for name in names},
            )
        )
        return [float(row["lifetime_seconds"]) for row in rows]

    async def rotate(
        self,
        tenant: str,
        session_id: str,
        new_id: str,
        *,
        principal: str | None,
        tombstone_seconds: int,
        claim: IdempotencyClaim | None = None,
    ) -> tuple[dict[str, Any] | None, Remembered | None]:
        """Move a live session to `new_id` atomically; the old id ends with reason `rotated`. With a
        `claim`, as for `insert`: nothing happens when its key is remembered (the second value)."""
        statement = change.ROTATE_SESSION if claim is None else change.ROTATE_SESSION_IDEMPOTENT
        record = await self.connection.fetchrow(
            *statement.bind(
                tenant=tenant,
                id=session_id,
                principal=principal,
                new_id=new_id,
                tombstone_seconds=tombstone_seconds,
                **(claim.values() if claim is not None else {}),
            )
        )
        assert record is not None  # one row, with the new session's columns NULL when nothing moved
        _check_recorded(record, claim)
        return (_session(record) if record["id"] is not None else None), _remembered(record)

    async def list_live(
        self, tenant: str, *, filters: dict[str, str], after_id: str | None, limit: int, max_bytes: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Keyset page of live sessions ordered by id: up to `limit` rows after `after_id`, cut where their
        metadata passes `max_bytes`; and how many rows there were before the cut."""
        names = tuple(name for name in read.LIST_FILTERS if name in filters)
        values: dict[str, Any] = {
            "tenant": tenant,
            "limit": limit,
            "max_bytes": max_bytes,
            **{name: filters[name] for name in names},
        }
        if after_id is not None:
            values["after_id"] = after_id
        records = await self.connection.fetch(*read.LIST_PAGE[names, after_id is not None].bind(**values))
        page = [{**_session(record), "metadata": orjson.Fragment(record["metadata"])} for record in records]
        return page, (records[0]["available"] if records else 0)

    async def live_by_kind(self, tenant: str | None) -> list[asyncpg.Record]:
        """Live sessions by kind for one tenant, or by (tenant, kind) across all when `tenant` is None."""
        if tenant is None:
            return list(await self.connection.fetch(*read.ALL_LIVE_BY_KIND.bind()))
        return list(await self.connection.fetch(*read.LIVE_BY_KIND.bind(tenant=tenant)))

    async def counter_totals(self, tenant: str | None) -> list[asyncpg.Record]:
        """(name, total) rows for one tenant, or (tenant, name, total) across all when `tenant` is None."""
        if tenant is None:
            return list(await self.connection.fetch(*read.ALL_COUNTER_TOTALS.bind()))
        return list(await self.connection.fetch(*read.COUNTER_TOTALS.bind(tenant=tenant)))

    async def lifetime_totals(self, tenant: str | None) -> list[asyncpg.Record]:
        """(bucket, ended, seconds) rows for one tenant, or with `tenant` across all when None."""
        if tenant is None:
            return list(await self.connection.fetch(*read.ALL_LIFETIME_TOTALS.bind()))
        return list(await self.connection.fetch(*read.LIFETIME_TOTALS.bind(tenant=tenant)))

    async def window_base(self, tenant: str | None, window_seconds: int) -> list[asyncpg.Record]:
        """(tenant, taken_at, totals, peak_live): the stats snapshot each tenant's window starts from."""
        if tenant is None:
            return list(
                await self.connection.fetch(*read.ALL_WINDOW_BASE.bind(window_seconds=window_seconds))
            )
        return list(
            await self.connection.fetch(*read.WINDOW_BASE.bind(tenant=tenant, window_seconds=window_seconds))
        )

    async def schema_revision(self) -> str | None:
        revision: str | None = await self.connection.fetchval(*read.SCHEMA_REVISION.bind())
        return revision
