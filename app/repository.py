"""Every SQL statement of the service, in one concrete class.

Conventions:
- Time is the database's clock (`now()`), never a replica's (lesson 4).
- A session whose `expires_at` has passed is invisible to every statement here, whether or not the
  purge has removed its row (lesson 7); nothing on a read path deletes (lesson 8).
- Hot statements (touch, create) are one round trip each: the extra bookkeeping (counters, tombstone
  checks) rides along as CTEs of the same statement.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

# How far ahead of `expires_at` a write pushes the indexed `purge_after` column. A touch rewrites
# `purge_after` (a non-HOT update, because it is indexed) only when `expires_at` overtakes it, i.e. at most
# once per step per session; all other touch writes change unindexed columns only and can be HOT. The
# cost is that the purge may remove a row up to this much after it expired, which is harmless because
# reads check `expires_at` themselves.
PURGE_AFTER_STEP_SECONDS = 600

# Creates spread their counter increments over this many rows per (tenant, counter) so that concurrent
# creates from many replicas do not serialise on one row lock.
COUNTER_SHARDS = 16

SESSION_COLUMNS = (
    "id, kind, principal, client_id, owner, protocol_version, metadata, version, "
    "idle_timeout_seconds, max_lifetime_seconds, created_at, last_seen_at, expires_at"
)

_LIFETIME_END = "created_at + max_lifetime_seconds * interval '1 second'"

# Why a session that is not live ended: its unpurged row says which expiry hit it, else its tombstone.
# $1 = tenant, $2 = id.
_ENDED_REASON = f"""
COALESCE(
    (SELECT CASE WHEN x.expires_at >= x.{_LIFETIME_END} THEN 'expired_lifetime' ELSE 'expired_idle' END
       FROM sessions AS x WHERE x.tenant = $1 AND x.id = $2 AND x.expires_at <= now()),
    (SELECT t.reason FROM session_tombstones AS t
      WHERE t.tenant = $1 AND t.id = $2 AND t.forget_after > now())
)"""

_INSERT_SESSION = f"""
WITH retired AS (
    SELECT reason FROM session_tombstones WHERE tenant = $1 AND id = $2 AND forget_after > now()
), replaced AS (
    SELECT CASE WHEN expires_at >= {_LIFETIME_END} THEN 'expired_lifetime' ELSE 'expired_idle' END AS reason
      FROM sessions WHERE tenant = $1 AND id = $2 AND expires_at <= now()
), written AS (
    INSERT INTO sessions AS s (tenant, id, kind, principal, client_id, owner, protocol_version, metadata,
                               version, idle_timeout_seconds, max_lifetime_seconds,
                               created_at, last_seen_at, expires_at, purge_after)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8::json, 1, $9::int, $10::int, now(), now(),
           now() + LEAST($9::int, $10::int) * interval '1 second',
           now() + (LEAST($9::int, $10::int) + {PURGE_AFTER_STEP_SECONDS}) * interval '1 second'
     WHERE NOT EXISTS (SELECT 1 FROM retired)
    -- An expired-but-unpurged row must not block a new session with its id (lesson 7); a live one must.
    ON CONFLICT (tenant, id) DO UPDATE SET
        kind = EXCLUDED.kind, principal = EXCLUDED.principal, client_id = EXCLUDED.client_id,
        owner = EXCLUDED.owner, protocol_version = EXCLUDED.protocol_version, metadata = EXCLUDED.metadata,
        version = s.version + 1, idle_timeout_seconds = EXCLUDED.idle_timeout_seconds,
        max_lifetime_seconds = EXCLUDED.max_lifetime_seconds, created_at = EXCLUDED.created_at,
        last_seen_at = EXCLUDED.last_seen_at, expires_at = EXCLUDED.expires_at,
        purge_after = EXCLUDED.purge_after
    WHERE s.expires_at <= now()
    RETURNING {SESSION_COLUMNS}
), counted AS (
    INSERT INTO session_counters AS c (tenant, name, shard, value)
    SELECT $1, 'created', $11::smallint, 1 FROM written
    UNION ALL
    SELECT $1, 'ended:' || replaced.reason, $11::smallint, 1 FROM written, replaced
    ON CONFLICT (tenant, name, shard) DO UPDATE SET value = c.value + EXCLUDED.value
)
SELECT (SELECT reason FROM retired) AS retired_reason, w.*
  FROM (SELECT 1) AS one LEFT JOIN written AS w ON true
"""

_TOUCH_SESSION = f"""
WITH current AS (
    SELECT principal, expires_at,
           LEAST(now() + idle_timeout_seconds * interval '1 second', {_LIFETIME_END}) AS target,
           LEAST($4::float8, idle_timeout_seconds * 0.1) * interval '1 second' AS threshold
      FROM sessions
     WHERE tenant = $1 AND id = $2 AND expires_at > now()
), touched AS (
    UPDATE sessions AS s
       SET last_seen_at = GREATEST(s.last_seen_at, now()),
           expires_at = GREATEST(s.expires_at, c.target),
           purge_after = CASE WHEN c.target > s.purge_after
                              THEN c.target + {PURGE_AFTER_STEP_SECONDS} * interval '1 second'
                              ELSE s.purge_after END
      FROM current AS c
     WHERE s.tenant = $1 AND s.id = $2
       AND ($3::text IS NULL OR c.principal IS NULL OR c.principal = $3::text)
       AND c.target - s.expires_at >= c.threshold
    RETURNING s.expires_at
)
SELECT c.principal, COALESCE(t.expires_at, c.expires_at) AS expires_at, t.expires_at IS NOT NULL AS written,
       CASE WHEN c.expires_at IS NULL THEN {_ENDED_REASON} END AS ended_reason
  FROM (SELECT 1) AS one LEFT JOIN current AS c ON true LEFT JOIN touched AS t ON true
"""

_GET_SESSION = f"""
SELECT {SESSION_COLUMNS}, expires_at > now() AS live,
       CASE WHEN expires_at >= {_LIFETIME_END} THEN 'expired_lifetime' ELSE 'expired_idle' END
           AS expiry_reason
  FROM sessions WHERE tenant = $1 AND id = $2
"""
_GET_SESSION_FOR_UPDATE = _GET_SESSION + " FOR UPDATE"

_TOMBSTONE_REASON = """
SELECT reason FROM session_tombstones WHERE tenant = $1 AND id = $2 AND forget_after > now()
"""

_UPDATE_SESSION = f"""
UPDATE sessions
   SET metadata = $3::json, owner = $4, client_id = $5, protocol_version = $6, version = version + 1
 WHERE tenant = $1 AND id = $2 AND version = $7 AND expires_at > now()
RETURNING {SESSION_COLUMNS}
"""

_DELETE_SESSION = """
WITH ended AS (
    DELETE FROM sessions
     WHERE tenant = $1 AND id = $2 AND expires_at > now()
       AND ($3::text IS NULL OR principal IS NULL OR principal = $3::text)
    RETURNING id, created_at
), remembered AS (
    INSERT INTO session_tombstones AS t (tenant, id, reason, ended_at, forget_after)
    SELECT $1, id, 'deleted', now(), now() + $4::int * interval '1 second' FROM ended WHERE $4::int > 0
    ON CONFLICT (tenant, id) DO UPDATE
       SET reason = EXCLUDED.reason, ended_at = EXCLUDED.ended_at, forget_after = EXCLUDED.forget_after
), counted AS (
    INSERT INTO session_counters AS c (tenant, name, shard, value)
    SELECT $1, 'ended:deleted', $5::smallint, 1 FROM ended
    ON CONFLICT (tenant, name, shard) DO UPDATE SET value = c.value + EXCLUDED.value
)
SELECT EXTRACT(EPOCH FROM now() - created_at)::float8 AS lifetime_seconds FROM ended
"""

_LIVE_BY_KIND = """
SELECT kind, count(*) AS live, min(created_at) AS oldest, max(created_at) AS newest
  FROM sessions WHERE tenant = $1 AND expires_at > now()
 GROUP BY kind ORDER BY kind
"""

_COUNTER_TOTALS = """
SELECT name, sum(value)::bigint AS total FROM session_counters WHERE tenant = $1 GROUP BY name
"""

LIST_FILTERS = ("kind", "principal", "client_id", "owner", "protocol_version")


@dataclass(frozen=True, slots=True)
class InsertOutcome:
    session: dict[str, Any] | None
    retired_reason: str | None  # set when a tombstone blocked the id


@dataclass(frozen=True, slots=True)
class TouchOutcome:
    found: bool
    principal: str | None
    expires_at: datetime | None
    written: bool
    ended_reason: str | None


@dataclass(frozen=True, slots=True)
class Lookup:
    """A GET: the session if its row is live, else why it ended (None when nothing is known)."""

    session: dict[str, Any] | None
    ended_reason: str | None


def _session(record: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": record["id"],
        "kind": record["kind"],
        "principal": record["principal"],
        "client_id": record["client_id"],
        "owner": record["owner"],
        "protocol_version": record["protocol_version"],
        "metadata": record["metadata"],
        "version": record["version"],
        "created_at": record["created_at"],
        "last_seen_at": record["last_seen_at"],
        "expires_at": record["expires_at"],
        "idle_timeout_seconds": record["idle_timeout_seconds"],
        "max_lifetime_seconds": record["max_lifetime_seconds"],
    }


class SessionRepository:
    """All reads and writes of sessions for one connection. Never commits on its own: each call is one
    autocommit statement unless the caller holds a transaction."""

    def __init__(self, db: asyncpg.Connection) -> None:
        self.db = db

    async def insert(
        self,
        tenant: str,
        session_id: str,
        *,
        kind: str,
        principal: str | None,
        client_id: str | None,
        owner: str | None,
        protocol_version: str | None,
        metadata: dict[str, Any],
        idle_timeout_seconds: int,
        max_lifetime_seconds: int,
    ) -> InsertOutcome:
        """Insert a new session; `session` is None when a live session or a tombstone holds the id."""
        record = await self.db.fetchrow(
            _INSERT_SESSION,
            tenant,
            session_id,
            kind,
            principal,
            client_id,
            owner,
            protocol_version,
            metadata,
            idle_timeout_seconds,
            max_lifetime_seconds,
            random.randrange(COUNTER_SHARDS),
        )
        assert record is not None  # the statement always returns exactly one row
        session = _session(record) if record["id"] is not None else None
        return InsertOutcome(session=session, retired_reason=record["retired_reason"])

    async def touch(
        self, tenant: str, session_id: str, *, principal: str | None, granularity_seconds: float
    ) -> TouchOutcome:
        record = await self.db.fetchrow(_TOUCH_SESSION, tenant, session_id, principal, granularity_seconds)
        assert record is not None
        return TouchOutcome(
            found=record["expires_at"] is not None,
            principal=record["principal"],
            expires_at=record["expires_at"],
            written=record["written"],
            ended_reason=record["ended_reason"],
        )

    async def get(self, tenant: str, session_id: str, *, for_update: bool = False) -> Lookup:
        """The session if live, else why it ended. `for_update` locks the row (inside a transaction)."""
        record = await self.db.fetchrow(
            _GET_SESSION_FOR_UPDATE if for_update else _GET_SESSION, tenant, session_id
        )
        if record is not None and record["live"]:
            return Lookup(session=_session(record), ended_reason=None)
        if record is not None:
            return Lookup(session=None, ended_reason=record["expiry_reason"])
        return Lookup(
            session=None, ended_reason=await self.db.fetchval(_TOMBSTONE_REASON, tenant, session_id)
        )

    async def update(
        self,
        tenant: str,
        session_id: str,
        *,
        expected_version: int,
        metadata: dict[str, Any],
        owner: str | None,
        client_id: str | None,
        protocol_version: str | None,
    ) -> dict[str, Any] | None:
        """Compare-and-set on `version`; None when the session changed or ended meanwhile."""
        record = await self.db.fetchrow(
            _UPDATE_SESSION,
            tenant,
            session_id,
            metadata,
            owner,
            client_id,
            protocol_version,
            expected_version,
        )
        return _session(record) if record is not None else None

    async def delete(
        self, tenant: str, session_id: str, *, principal: str | None, tombstone_seconds: int
    ) -> float | None:
        """End a live session (reason `deleted`); returns its lifetime in seconds, None if nothing ended."""
        value = await self.db.fetchval(
            _DELETE_SESSION,
            tenant,
            session_id,
            principal,
            tombstone_seconds,
            random.randrange(COUNTER_SHARDS),
        )
        return float(value) if value is not None else None

    async def list_live(
        self, tenant: str, *, filters: dict[str, str], after_id: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Keyset page of live sessions ordered by id: `limit` rows after `after_id`."""
        conditions = ["tenant = $1", "expires_at > now()"]
        arguments: list[Any] = [tenant]
        for name in LIST_FILTERS:  # fixed column names only; values are always bound parameters
            if name in filters:
                arguments.append(filters[name])
                conditions.append(f"{name} = ${len(arguments)}")
        if after_id is not None:
            arguments.append(after_id)
            conditions.append(f"id > ${len(arguments)}")
        arguments.append(limit)
        query = (
            f"SELECT {SESSION_COLUMNS} FROM sessions WHERE {' AND '.join(conditions)} "
            f"ORDER BY id LIMIT ${len(arguments)}"
        )
        return [_session(record) for record in await self.db.fetch(query, *arguments)]

    async def live_by_kind(self, tenant: str) -> list[asyncpg.Record]:
        return list(await self.db.fetch(_LIVE_BY_KIND, tenant))

    async def counter_totals(self, tenant: str) -> dict[str, int]:
        return {record["name"]: record["total"] for record in await self.db.fetch(_COUNTER_TOTALS, tenant)}

    async def schema_revision(self) -> str | None:
        return await self.db.fetchval("SELECT version_num FROM alembic_version LIMIT 1")  # type: ignore[no-any-return]
