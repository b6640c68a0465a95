"""Every SQL statement of the session API, in one concrete class (the purge's live in `purge.py`, the
event stream's reads in `events.py`; both reuse the fragments below).

Conventions:
- Time is the database's clock (`now()`), never a replica's (lesson 4).
- A session whose `expires_at` has passed is invisible to every statement here, whether or not the
  purge has removed its row (lesson 7); nothing on a read path deletes (lesson 8).
- Each change carries its consequences in the same statement, as CTEs: tombstones for ended sessions,
  lifecycle events, and the per-tenant counters behind `/v1/stats`. So there is no event for a change
  that rolled back and no change without its event, and hot operations stay one round trip.
- A transaction writes events from one statement only (see `EVENT_POSITION`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

# How far ahead of `expires_at` a write pushes the indexed `purge_after` column. A touch rewrites
# `purge_after` (a non-HOT update, because it is indexed) only when `expires_at` overtakes it, i.e. at most
# once per step per session; all other touch writes change unindexed columns only and can be HOT. The
# cost is that the purge may remove a row up to this much after it expired, which is harmless because
# reads check `expires_at` themselves.
PURGE_AFTER_STEP_SECONDS = 600

# Counter increments go to one of 16 rows per (tenant, counter), chosen at random, so that concurrent
# creates from many replicas do not queue on one row lock. A total is the sum of its shards.
_SHARD = "floor(random() * 16)::smallint"

# Event positions: the writing transaction's xid in the high bits, the row's ordinal within its statement
# in the low 24. Readers deliver a position only once every transaction with a smaller xid has ended, so
# an event that commits late can never be skipped (see events.py). Unique as long as each transaction
# writes events from a single statement, which every caller here respects.
EVENT_POSITION = (
    "(pg_current_xact_id()::text::bigint << 24) + row_number() OVER (ORDER BY e.ord, e.session_id)"
)

SESSION_COLUMNS = (
    "id, kind, principal, client_id, owner, protocol_version, metadata, version, "
    "idle_timeout_seconds, max_lifetime_seconds, created_at, last_seen_at, expires_at"
)
LIFETIME_END = "created_at + max_lifetime_seconds * interval '1 second'"
EXPIRY_REASON = f"CASE WHEN expires_at >= {LIFETIME_END} THEN 'expired_lifetime' ELSE 'expired_idle' END"
# Columns a CTE of ended sessions must expose for `ending_effects` and `ended_events`.
ENDED_COLUMNS = "tenant, id, kind, principal, client_id, created_at"

# Why a session that is not live ended: its unpurged row says which expiry hit it, else its tombstone.
# $1 = tenant, $2 = id.
_ENDED_REASON = f"""
COALESCE(
    (SELECT {EXPIRY_REASON} FROM sessions AS x WHERE x.tenant = $1 AND x.id = $2 AND x.expires_at <= now()),
    (SELECT t.reason FROM session_tombstones AS t
      WHERE t.tenant = $1 AND t.id = $2 AND t.forget_after > now())
)"""


def ending_effects(source: str, retention: str | None) -> str:
    """CTEs recording that the sessions in `source` (ENDED_COLUMNS + reason, ended_at) ended: a tombstone
    kept for `retention` seconds (an SQL expression; None: no tombstone) and the ended-by-reason counters."""
    tombstone = (
        f"""
, remembered AS (
    INSERT INTO session_tombstones AS t (tenant, id, reason, ended_at, forget_after)
    SELECT tenant, id, reason, ended_at, now() + {retention}::int * interval '1 second'
      FROM {source} WHERE {retention}::int > 0
    ON CONFLICT (tenant, id) DO UPDATE
       SET reason = EXCLUDED.reason, ended_at = EXCLUDED.ended_at, forget_after = EXCLUDED.forget_after
)"""
        if retention is not None
        else ""
    )
    return f"""{tombstone}
, ended_counted AS (
    INSERT INTO session_counters AS c (tenant, name, shard, value)
    SELECT tenant, 'ended:' || reason, {_SHARD}, count(*) FROM {source} GROUP BY tenant, reason
    ON CONFLICT (tenant, name, shard) DO UPDATE SET value = c.value + EXCLUDED.value
)"""


def ended_events(source: str, ord_: int = 1) -> str:
    """Event rows (ord, tenant, type, session_id, occurred_at, data) for sessions that ended."""
    return f"""
    SELECT {ord_} AS ord, tenant, 'session.ended' AS type, id AS session_id, ended_at AS occurred_at,
           json_build_object('id', id, 'reason', reason, 'kind', kind, 'principal', principal,
                             'client_id', client_id, 'created_at', created_at, 'ended_at', ended_at,
                             'lifetime_seconds', EXTRACT(EPOCH FROM ended_at - created_at)::float8) AS data
      FROM {source}"""


def end_chosen(chosen: str, reason: str, retention: str) -> str:
    """The tail of a statement that ends the live sessions in CTE `chosen` (tenant, id) deliberately:
    delete them, remember them, emit `session.ended`, and return each one's lifetime.

    Joined on the key, not by ctid as the purge does: when `chosen` waited for a concurrent touch and
    locked the version it wrote, that version is newer than this statement's snapshot, so a TID scan
    would not see it and the session would survive its revocation. The key join finds the old version
    and follows the update chain to the locked one."""
    return f"""
, gone AS (
    DELETE FROM sessions AS s USING {chosen} AS d
     WHERE s.tenant = d.tenant AND s.id = d.id AND s.expires_at > now()
    RETURNING s.tenant, s.id, s.kind, s.principal, s.client_id, s.created_at,
              '{reason}'::text AS reason, now() AS ended_at
)
{ending_effects("gone", retention)}
{events_cte(ended_events("gone"))}
SELECT EXTRACT(EPOCH FROM ended_at - created_at)::float8 AS lifetime_seconds FROM gone
"""


def events_cte(*event_selects: str) -> str:
    """The one CTE of a statement that appends its lifecycle events."""
    union = "\n    UNION ALL".join(event_selects)
    return f"""
, evented AS (
    INSERT INTO session_events (position, tenant, type, session_id, occurred_at, data)
    SELECT {EVENT_POSITION}, e.tenant, e.type, e.session_id, e.occurred_at, e.data
      FROM ({union}) AS e
)"""


def _created_event(how: str, ord_: int = 2, source: str = "written", tenant: str = "$1::text") -> str:
    return f"""
    SELECT {ord_} AS ord, {tenant} AS tenant, 'session.created' AS type, w.id AS session_id,
           w.created_at AS occurred_at,
           json_build_object('id', w.id, 'how', {how}, 'kind', w.kind, 'principal', w.principal,
                             'client_id', w.client_id, 'owner', w.owner,
                             'protocol_version', w.protocol_version, 'created_at', w.created_at,
                             'expires_at', w.expires_at) AS data
      FROM {source} AS w"""


# --- create / register --------------------------------------------------------------------------------
# $1 tenant, $2 id, $3 kind, $4 principal, $5 client_id, $6 owner, $7 protocol_version, $8 metadata,
# $9 idle, $10 lifetime, $11/$12/$13 tenant/principal/client limits, $15 how (created|registered),
# $14 headroom: the insert happens only if every scope has at least this much room left (see service).
_INSERT_SESSION = f"""
WITH retired AS (
    -- Deliberately ended ids stay retired while remembered, so a late retry cannot resurrect them. Expiry
    -- is passive: an expired id may be registered again, whether or not the purge has run (lesson 7).
    SELECT reason FROM session_tombstones
     WHERE tenant = $1 AND id = $2 AND forget_after > now() AND reason NOT LIKE 'expired%'
), replaced AS (
    SELECT {ENDED_COLUMNS}, {EXPIRY_REASON} AS reason, expires_at AS ended_at
      FROM sessions WHERE tenant = $1 AND id = $2 AND expires_at <= now()
), usage AS (
    SELECT
        -- created minus ended over-counts live sessions (expired rows count until purged), so when it is
        -- comfortably below the limit the exact count is skipped; near the limit it is counted exactly.
        CASE WHEN (SELECT COALESCE(sum(CASE WHEN name = 'created' THEN value ELSE -value END), 0)
                     FROM session_counters WHERE tenant = $1) + $14::int < $11::int
             THEN 0
             ELSE (SELECT count(*) FROM (SELECT 1 FROM sessions
                    WHERE tenant = $1 AND expires_at > now() LIMIT $11::int) AS x) END AS tenant_used,
        CASE WHEN $4::text IS NULL THEN 0
             ELSE (SELECT count(*) FROM (SELECT 1 FROM sessions
                    WHERE tenant = $1 AND principal = $4::text AND expires_at > now() LIMIT $12::int) AS x)
        END AS principal_used,
        CASE WHEN $5::text IS NULL THEN 0
             ELSE (SELECT count(*) FROM (SELECT 1 FROM sessions
                    WHERE tenant = $1 AND client_id = $5::text AND expires_at > now() LIMIT $13::int) AS x)
        END AS client_used
), verdict AS (
    SELECT tenant_used + $14::int >= $11::int AS tenant_tight,
           principal_used + $14::int >= $12::int AS principal_tight,
           client_used + $14::int >= $13::int AS client_tight
      FROM usage
), written AS (
    INSERT INTO sessions AS s (tenant, id, kind, principal, client_id, owner, protocol_version, metadata,
                               version, idle_timeout_seconds, max_lifetime_seconds,
                               created_at, last_seen_at, expires_at, purge_after)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8::json, 1, $9::int, $10::int, now(), now(),
           now() + LEAST($9::int, $10::int) * interval '1 second',
           now() + (LEAST($9::int, $10::int) + {PURGE_AFTER_STEP_SECONDS}) * interval '1 second'
      FROM verdict
     WHERE NOT EXISTS (SELECT 1 FROM retired)
       AND NOT (verdict.tenant_tight OR verdict.principal_tight OR verdict.client_tight)
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
), taken_over AS (
    SELECT replaced.* FROM replaced, written
), counted AS (
    INSERT INTO session_counters AS c (tenant, name, shard, value)
    SELECT $1, 'created', {_SHARD}, 1 FROM written
    ON CONFLICT (tenant, name, shard) DO UPDATE SET value = c.value + EXCLUDED.value
)
{ending_effects("taken_over", None)}
{events_cte(ended_events("taken_over"), _created_event("$15::text"))}
SELECT (SELECT reason FROM retired) AS retired_reason, v.tenant_tight, v.principal_tight, v.client_tight,
       (SELECT reason FROM taken_over) AS replaced_reason,
       (SELECT EXTRACT(EPOCH FROM ended_at - created_at)::float8 FROM taken_over) AS replaced_lifetime, w.*
  FROM verdict AS v LEFT JOIN written AS w ON true
"""

# Many creates with minted ids in one statement (see batching.py). Minted ids are fresh (256 random bits),
# so there is no tombstone or expired row to consider; a row whose quota scope lacks the headroom (this
# batch's own rows included) is not written and comes back `*_tight` for the careful single path.
# $1..$8 text[]: tenant, id, kind, principal, client_id, owner, protocol_version, metadata (JSON text);
# $9/$10 int[]: idle, lifetime; $11..$13 int[]: tenant/principal/client limits; $14 headroom.
_INSERT_MANY = f"""
WITH req AS (
    SELECT r.*,
           count(*) OVER (PARTITION BY r.tenant) AS tenant_n,
           count(*) OVER (PARTITION BY r.tenant, r.principal) AS principal_n,
           count(*) OVER (PARTITION BY r.tenant, r.client_id) AS client_n
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                  $8::text[], $9::int[], $10::int[], $11::int[], $12::int[], $13::int[])
           WITH ORDINALITY AS r(tenant, id, kind, principal, client_id, owner, protocol_version, metadata,
                                idle, lifetime, tenant_limit, principal_limit, client_limit, n)
), verdict AS (
    SELECT r.*,
           (SELECT COALESCE(sum(CASE WHEN c.name = 'created' THEN c.value ELSE -c.value END), 0)
              FROM session_counters AS c WHERE c.tenant = r.tenant) + $14::int + r.tenant_n
               >= r.tenant_limit AS tenant_tight,
           r.principal IS NOT NULL AND (SELECT count(*) FROM (SELECT 1 FROM sessions AS s
               WHERE s.tenant = r.tenant AND s.principal = r.principal AND s.expires_at > now()
               LIMIT r.principal_limit) AS x) + $14::int + r.principal_n >= r.principal_limit
               AS principal_tight,
           r.client_id IS NOT NULL AND (SELECT count(*) FROM (SELECT 1 FROM sessions AS s
               WHERE s.tenant = r.tenant AND s.client_id = r.client_id AND s.expires_at > now()
               LIMIT r.client_limit) AS x) + $14::int + r.client_n >= r.client_limit AS client_tight
      FROM req AS r
), written AS (
    INSERT INTO sessions (tenant, id, kind, principal, client_id, owner, protocol_version, metadata, version,
                          idle_timeout_seconds, max_lifetime_seconds, created_at, last_seen_at, expires_at,
                          purge_after)
    SELECT v.tenant, v.id, v.kind, v.principal, v.client_id, v.owner, v.protocol_version, v.metadata::json, 1,
           v.idle, v.lifetime, now(), now(), now() + LEAST(v.idle, v.lifetime) * interval '1 second',
           now() + (LEAST(v.idle, v.lifetime) + {PURGE_AFTER_STEP_SECONDS}) * interval '1 second'
      FROM verdict AS v
     WHERE NOT (v.tenant_tight OR v.principal_tight OR v.client_tight)
    ON CONFLICT (tenant, id) DO NOTHING
    RETURNING tenant, {SESSION_COLUMNS}
), counted AS (
    INSERT INTO session_counters AS c (tenant, name, shard, value)
    SELECT tenant, 'created', {_SHARD}, count(*) FROM written GROUP BY tenant
    ON CONFLICT (tenant, name, shard) DO UPDATE SET value = c.value + EXCLUDED.value
)
{events_cte(_created_event("'created'", tenant="w.tenant"))}
SELECT v.tenant_tight, v.principal_tight, v.client_tight, w.*
  FROM verdict AS v LEFT JOIN written AS w ON w.tenant = v.tenant AND w.id = v.id
 ORDER BY v.n
"""

# Serialises creates in one quota scope when it is near its limit (held until the transaction ends).
_LOCK_SCOPE = "SELECT pg_advisory_xact_lock(hashtextextended($1, 7347))"

_SCOPE_FILTERS = {
    "tenant": " AND tenant = $2::text",  # $2 is the tenant itself: the scope is the whole tenant
    "principal": " AND principal = $2::text",
    "client": " AND client_id = $2::text",
}


def _evict_statement(scope: str) -> str:
    """End the least recently seen live session of a full scope (reason `evicted`).
    $1 tenant, $2 scope value, $3 limit, $4 tombstone retention."""
    where = f"tenant = $1 AND expires_at > now(){_SCOPE_FILTERS[scope]}"
    return f"""
WITH victim AS (
    SELECT tenant, id FROM sessions
     WHERE {where}
       AND (SELECT count(*) FROM (SELECT 1 FROM sessions WHERE {where} LIMIT $3::int) AS x) >= $3::int
     ORDER BY last_seen_at, id LIMIT 1
       FOR UPDATE SKIP LOCKED
){end_chosen("victim", "evicted", "$4")}"""


_EVICT = {scope: _evict_statement(scope) for scope in _SCOPE_FILTERS}

# --- touch --------------------------------------------------------------------------------------------
# When $5 is true a touch commits asynchronously: `set_config(..., true)` lasts until the end of the
# statement's own transaction, and the commit reads it. A touch then never waits for the WAL flush, which
# under load is mostly other transactions' WAL (a purge writes ~1.3 kB per row). A database crash can undo
# the touch writes of its last moments (at most 3 x wal_writer_delay); those sessions keep the expiry
# they had before, as if that touch had been throttled or lost on the network. Nothing else is async.
ASYNC_COMMIT = "CASE WHEN $5::boolean THEN set_config('synchronous_commit', 'off', true) END"

# One statement: the live row's target expiry, a write only if it moves expiry by the threshold (and
# the principal matches), and, when there is no live row, why it ended. $4 = granularity seconds.
_TOUCH_SESSION = f"""
WITH current AS (
    SELECT principal, expires_at,
           LEAST(now() + idle_timeout_seconds * interval '1 second', {LIFETIME_END}) AS target,
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
       -- Decided on the snapshot row, not re-checked against a concurrent touch's newer version: then a
       -- due touch that writes nothing means the row is gone (ended meanwhile), never "someone was
       -- faster". GREATEST above keeps the racing writes monotonic.
       AND c.target - c.expires_at >= c.threshold
    RETURNING s.expires_at
)
SELECT c.principal, COALESCE(t.expires_at, c.expires_at) AS expires_at, t.expires_at IS NOT NULL AS written,
       c.target - c.expires_at >= c.threshold AS due,
       CASE WHEN c.expires_at IS NULL THEN {_ENDED_REASON} END AS ended_reason
  FROM (SELECT {ASYNC_COMMIT}) AS commit_mode LEFT JOIN current AS c ON true LEFT JOIN touched AS t ON true
"""

# Many touches in one statement (see touch_batch.py). $1/$2/$3 parallel arrays of tenant, id, principal;
# $4 granularity. One answer row per request row, in request order, with the same columns as above.
_TOUCH_MANY = f"""
WITH req AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS r(tenant, id, principal, n)
), current AS (
    SELECT r.n, s.tenant, s.id, s.principal, s.expires_at,
           LEAST(now() + s.idle_timeout_seconds * interval '1 second',
                 s.created_at + s.max_lifetime_seconds * interval '1 second') AS target,
           LEAST($4::float8, s.idle_timeout_seconds * 0.1) * interval '1 second' AS threshold,
           (r.principal IS NULL OR s.principal IS NULL OR s.principal = r.principal) AS allowed
      FROM req AS r JOIN sessions AS s ON s.tenant = r.tenant AND s.id = r.id AND s.expires_at > now()
), due AS (
    -- Lock what will be written in (tenant, id) order, as every multi-row writer does: no deadlocks.
    SELECT c.n, c.target, s.tenant, s.id
      FROM current AS c JOIN sessions AS s ON s.tenant = c.tenant AND s.id = c.id
     WHERE c.allowed AND c.target - c.expires_at >= c.threshold
     ORDER BY s.tenant, s.id
       FOR UPDATE OF s
), touched AS (
    UPDATE sessions AS s
       SET last_seen_at = GREATEST(s.last_seen_at, now()),
           expires_at = GREATEST(s.expires_at, d.target),
           purge_after = CASE WHEN d.target > s.purge_after
                              THEN d.target + {PURGE_AFTER_STEP_SECONDS} * interval '1 second'
                              ELSE s.purge_after END
      FROM due AS d
     WHERE s.tenant = d.tenant AND s.id = d.id
    RETURNING d.n, s.expires_at
)
SELECT c.principal, COALESCE(t.expires_at, c.expires_at) AS expires_at, t.expires_at IS NOT NULL AS written,
       c.target - c.expires_at >= c.threshold AS due,
       CASE WHEN c.n IS NULL THEN COALESCE(
           (SELECT {EXPIRY_REASON} FROM sessions AS x
             WHERE x.tenant = r.tenant AND x.id = r.id AND x.expires_at <= now()),
           (SELECT tb.reason FROM session_tombstones AS tb
             WHERE tb.tenant = r.tenant AND tb.id = r.id AND tb.forget_after > now()))
       END AS ended_reason
  FROM (SELECT {ASYNC_COMMIT}) AS commit_mode CROSS JOIN req AS r
  LEFT JOIN current AS c ON c.n = r.n LEFT JOIN touched AS t ON t.n = r.n
 ORDER BY r.n
"""

# --- read ---------------------------------------------------------------------------------------------
_GET_SESSION = f"""
SELECT {SESSION_COLUMNS}, expires_at > now() AS live, {EXPIRY_REASON} AS expiry_reason
  FROM sessions WHERE tenant = $1 AND id = $2
"""
_GET_SESSION_FOR_UPDATE = _GET_SESSION + " FOR UPDATE"

_TOMBSTONE_REASON = """
SELECT reason FROM session_tombstones WHERE tenant = $1 AND id = $2 AND forget_after > now()
"""

# --- patch --------------------------------------------------------------------------------------------
_UPDATE_SESSION = f"""
WITH written AS (
    UPDATE sessions
       SET metadata = $3::json, owner = $4, client_id = $5, protocol_version = $6, version = version + 1
     WHERE tenant = $1 AND id = $2 AND version = $7 AND expires_at > now()
    RETURNING {SESSION_COLUMNS}
)
{
    events_cte('''
    SELECT 1 AS ord, $1::text AS tenant, 'session.updated' AS type, w.id AS session_id, now() AS occurred_at,
           json_build_object('id', w.id, 'version', w.version, 'changed', $8::text[], 'owner', w.owner,
                             'client_id', w.client_id, 'protocol_version', w.protocol_version) AS data
      FROM written AS w''')
}
SELECT * FROM written
"""

# --- end: delete, revoke ------------------------------------------------------------------------------
_DELETE_SESSION = f"""
WITH gone AS (
    DELETE FROM sessions
     WHERE tenant = $1 AND id = $2 AND expires_at > now()
       AND ($3::text IS NULL OR principal IS NULL OR principal = $3::text)
    RETURNING {ENDED_COLUMNS}, 'deleted'::text AS reason, now() AS ended_at
)
{ending_effects("gone", "$4")}
{events_cte(ended_events("gone"))}
SELECT EXTRACT(EPOCH FROM ended_at - created_at)::float8 AS lifetime_seconds FROM gone
"""

REVOKE_FILTERS = ("principal", "client_id", "owner", "kind")


def _revoke_statement(filters: tuple[str, ...]) -> str:
    """End up to $2 matching live sessions (reason `revoked`).
    $1 tenant, $2 batch, $3 tombstone retention, $4... filter values."""
    conditions = "".join(f" AND {name} = ${index}" for index, name in enumerate(filters, start=4))
    return f"""
WITH doomed AS (
    -- FOR UPDATE (not SKIP LOCKED): a session being touched right now must be revoked too, not skipped.
    SELECT tenant, id FROM sessions WHERE tenant = $1 AND expires_at > now(){conditions}
     ORDER BY id LIMIT $2::int FOR UPDATE
){end_chosen("doomed", "revoked", "$3")}"""


# --- rotate -------------------------------------------------------------------------------------------
# $1 tenant, $2 old id, $3 principal binding, $4 new id, $5 tombstone retention.
_ROTATE_SESSION = f"""
WITH old AS (
    DELETE FROM sessions
     WHERE tenant = $1 AND id = $2 AND expires_at > now()
       AND ($3::text IS NULL OR principal IS NULL OR principal = $3::text)
    RETURNING *
), written AS (
    INSERT INTO sessions (tenant, id, kind, principal, client_id, owner, protocol_version, metadata, version,
                          idle_timeout_seconds, max_lifetime_seconds, created_at, last_seen_at, expires_at,
                          purge_after)
    SELECT tenant, $4, kind, principal, client_id, owner, protocol_version, metadata, version + 1,
           idle_timeout_seconds, max_lifetime_seconds, created_at, last_seen_at, expires_at, purge_after
      FROM old
    RETURNING {SESSION_COLUMNS}
), gone AS (
    SELECT {ENDED_COLUMNS}, 'rotated'::text AS reason, now() AS ended_at FROM old
), counted AS (
    INSERT INTO session_counters AS c (tenant, name, shard, value)
    SELECT $1, 'created', {_SHARD}, 1 FROM written
    ON CONFLICT (tenant, name, shard) DO UPDATE SET value = c.value + EXCLUDED.value
)
{ending_effects("gone", "$5")}
{
    events_cte('''
    SELECT 1 AS ord, $1::text AS tenant, 'session.rotated' AS type, w.id AS session_id, now() AS occurred_at,
           json_build_object('old_id', $2::text, 'new_id', w.id, 'kind', w.kind, 'principal', w.principal,
                             'expires_at', w.expires_at) AS data
      FROM written AS w''')
}
SELECT * FROM written
"""

# --- stats --------------------------------------------------------------------------------------------
_LIVE_BY_KIND = """
SELECT kind, count(*) AS live, min(created_at) AS oldest, max(created_at) AS newest
  FROM sessions WHERE tenant = $1 AND expires_at > now()
 GROUP BY kind ORDER BY kind
"""

_COUNTER_TOTALS = """
SELECT name, sum(value)::bigint AS total FROM session_counters WHERE tenant = $1 GROUP BY name
"""

_ALL_LIVE_BY_KIND = """
SELECT tenant, kind, count(*) AS live, min(created_at) AS oldest, max(created_at) AS newest
  FROM sessions WHERE expires_at > now()
 GROUP BY tenant, kind ORDER BY tenant, kind
"""

_ALL_COUNTER_TOTALS = """
SELECT tenant, name, sum(value)::bigint AS total FROM session_counters GROUP BY tenant, name
"""

LIST_FILTERS = ("kind", "principal", "client_id", "owner", "protocol_version")


@dataclass(frozen=True, slots=True)
class InsertOutcome:
    session: dict[str, Any] | None
    retired_reason: str | None  # set when a tombstone blocked the id
    tight_scopes: tuple[str, ...]  # quota scopes without the requested headroom (nothing was written)
    replaced_reason: str | None = None  # an expired row of the same id was taken over
    replaced_lifetime: float | None = None


@dataclass(frozen=True, slots=True)
class TouchOutcome:
    found: bool
    principal: str | None
    expires_at: datetime | None
    written: bool
    due: bool  # the touch should have written (it moved expiry by the threshold)
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


def _touch_outcome(record: asyncpg.Record) -> TouchOutcome:
    return TouchOutcome(
        found=record["expires_at"] is not None,
        principal=record["principal"],
        expires_at=record["expires_at"],
        written=record["written"],
        due=bool(record["due"]),
        ended_reason=record["ended_reason"],
    )


@dataclass(frozen=True, slots=True)
class NewSession:
    kind: str
    principal: str | None
    client_id: str | None
    owner: str | None
    protocol_version: str | None
    metadata: dict[str, Any]
    idle_timeout_seconds: int
    max_lifetime_seconds: int


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    tenant: int
    principal: int
    client: int


class SessionRepository:
    """All reads and writes of sessions for one connection. Never commits on its own: each call is one
    autocommit statement unless the caller holds a transaction."""

    def __init__(self, db: asyncpg.Connection) -> None:
        self.db = db

    async def insert(
        self,
        tenant: str,
        session_id: str,
        new: NewSession,
        *,
        how: str,
        limits: QuotaLimits,
        headroom: int,
    ) -> InsertOutcome:
        """Insert a new session unless a live session or tombstone holds the id, or a quota scope has less
        than `headroom` room left (then `tight_scopes` says which, and nothing is written)."""
        record = await self.db.fetchrow(
            _INSERT_SESSION,
            tenant,
            session_id,
            new.kind,
            new.principal,
            new.client_id,
            new.owner,
            new.protocol_version,
            new.metadata,
            new.idle_timeout_seconds,
            new.max_lifetime_seconds,
            limits.tenant,
            limits.principal,
            limits.client,
            headroom,
            how,
        )
        assert record is not None  # the statement always returns exactly one row
        tight = tuple(scope for scope in ("tenant", "principal", "client") if record[f"{scope}_tight"])
        return InsertOutcome(
            session=_session(record) if record["id"] is not None else None,
            retired_reason=record["retired_reason"],
            tight_scopes=tight,
            replaced_reason=record["replaced_reason"],
            replaced_lifetime=record["replaced_lifetime"],
        )

    async def insert_many(
        self, items: list[tuple[str, str, NewSession, QuotaLimits]], *, headroom: int
    ) -> list[InsertOutcome]:
        """Insert several sessions with minted ids in one statement; outcomes in the order of `items`."""
        records = await self.db.fetch(
            _INSERT_MANY,
            [tenant for tenant, _, _, _ in items],
            [session_id for _, session_id, _, _ in items],
            [new.kind for _, _, new, _ in items],
            [new.principal for _, _, new, _ in items],
            [new.client_id for _, _, new, _ in items],
            [new.owner for _, _, new, _ in items],
            [new.protocol_version for _, _, new, _ in items],
            [orjson.dumps(new.metadata).decode() for _, _, new, _ in items],
            [new.idle_timeout_seconds for _, _, new, _ in items],
            [new.max_lifetime_seconds for _, _, new, _ in items],
            [limits.tenant for _, _, _, limits in items],
            [limits.principal for _, _, _, limits in items],
            [limits.client for _, _, _, limits in items],
            headroom,
        )
        return [
            InsertOutcome(
                session=_session(record) if record["id"] is not None else None,
                retired_reason=None,
                tight_scopes=tuple(s for s in ("tenant", "principal", "client") if record[f"{s}_tight"]),
            )
            for record in records
        ]

    async def lock_quota_scope(self, key: str) -> None:
        """Serialise quota decisions for one scope until the current transaction ends."""
        await self.db.execute(_LOCK_SCOPE, key)

    async def evict_oldest_idle(
        self, tenant: str, scope: str, value: str | None, limit: int, tombstone_seconds: int
    ) -> float | None:
        """If the scope is full, end its least recently seen session; its lifetime, or None."""
        value_or_tenant = tenant if value is None else value
        result = await self.db.fetchval(_EVICT[scope], tenant, value_or_tenant, limit, tombstone_seconds)
        return float(result) if result is not None else None

    async def touch(
        self,
        tenant: str,
        session_id: str,
        *,
        principal: str | None,
        granularity_seconds: float,
        async_commit: bool,
    ) -> TouchOutcome:
        record = await self.db.fetchrow(
            _TOUCH_SESSION, tenant, session_id, principal, granularity_seconds, async_commit
        )
        assert record is not None
        return _touch_outcome(record)

    async def touch_many(
        self, keys: list[tuple[str, str, str | None]], *, granularity_seconds: float, async_commit: bool
    ) -> list[TouchOutcome]:
        """Touch several distinct sessions in one statement; outcomes in the order of `keys`."""
        records = await self.db.fetch(
            _TOUCH_MANY,
            [key[0] for key in keys],
            [key[1] for key in keys],
            [key[2] for key in keys],
            granularity_seconds,
            async_commit,
        )
        return [_touch_outcome(record) for record in records]

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
        changed: list[str],
        metadata: dict[str, Any],
        owner: str | None,
        client_id: str | None,
        protocol_version: str | None,
    ) -> dict[str, Any] | None:
        """Compare-and-set on `version` (emits `session.updated`); None when the session changed meanwhile."""
        record = await self.db.fetchrow(
            _UPDATE_SESSION,
            tenant,
            session_id,
            metadata,
            owner,
            client_id,
            protocol_version,
            expected_version,
            changed,
        )
        return _session(record) if record is not None else None

    async def delete(
        self, tenant: str, session_id: str, *, principal: str | None, tombstone_seconds: int
    ) -> float | None:
        """End a live session (reason `deleted`); returns its lifetime in seconds, None if nothing ended."""
        value = await self.db.fetchval(_DELETE_SESSION, tenant, session_id, principal, tombstone_seconds)
        return float(value) if value is not None else None

    async def revoke_batch(
        self, tenant: str, filters: dict[str, str], *, batch: int, tombstone_seconds: int
    ) -> list[float]:
        """End up to `batch` live sessions matching every filter (reason `revoked`); their lifetimes."""
        names = tuple(name for name in REVOKE_FILTERS if name in filters)
        rows = await self.db.fetch(
            _revoke_statement(names), tenant, batch, tombstone_seconds, *(filters[name] for name in names)
        )
        return [float(row["lifetime_seconds"]) for row in rows]

    async def rotate(
        self, tenant: str, session_id: str, new_id: str, *, principal: str | None, tombstone_seconds: int
    ) -> dict[str, Any] | None:
        """Move a live session to `new_id` atomically; the old id ends with reason `rotated`."""
        record = await self.db.fetchrow(
            _ROTATE_SESSION, tenant, session_id, principal, new_id, tombstone_seconds
        )
        return _session(record) if record is not None else None

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

    async def live_by_kind(self, tenant: str | None) -> list[asyncpg.Record]:
        """Live sessions by kind for one tenant, or by (tenant, kind) across all when `tenant` is None."""
        if tenant is None:
            return list(await self.db.fetch(_ALL_LIVE_BY_KIND))
        return list(await self.db.fetch(_LIVE_BY_KIND, tenant))

    async def counter_totals(self, tenant: str | None) -> list[asyncpg.Record]:
        """(name, total) rows for one tenant, or (tenant, name, total) across all when `tenant` is None."""
        if tenant is None:
            return list(await self.db.fetch(_ALL_COUNTER_TOTALS))
        return list(await self.db.fetch(_COUNTER_TOTALS, tenant))

    async def schema_revision(self) -> str | None:
        return await self.db.fetchval("SELECT version_num FROM alembic_version LIMIT 1")  # type: ignore[no-any-return]
