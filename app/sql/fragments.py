"""Pieces shared by several statements. Each takes the expressions it needs as arguments (a CTE name,
a placeholder such as `:tenant`, a column such as `r.tenant`), so none assumes a parameter number.

Conventions of every statement (see docs/design.md, "Statements"):
- time is the database's clock (`now()`), never a replica's;
- a session whose `expires_at` has passed is invisible, whether or not the purge removed its row;
- a change carries its consequences in the same statement, as CTEs: the tombstone of an ended session,
  the lifecycle event and the per-tenant counters, so there is no event for a change that rolled back and
  no change without its event;
- a transaction writes events from one statement only (see `EVENT_POSITION`).
"""

from __future__ import annotations

# How far ahead of `expires_at` a write pushes the indexed `purge_after` column. A touch rewrites
# `purge_after` (a non-HOT update, because it is indexed) only when `expires_at` overtakes it, i.e. at most
# once per step per session; all other touch writes change unindexed columns only and can be HOT.
PURGE_AFTER_STEP_SECONDS = 600

# Counter increments go to one of 16 rows per (tenant, counter), chosen at random, so that concurrent
# creates from many replicas do not queue on one row lock. A total is the sum of its shards.
SHARD = "floor(random() * 16)::smallint"

# Event positions: the writing transaction's xid in the high bits, the row's ordinal within its statement
# in the low 24. Readers deliver a position only once every transaction with a smaller xid has ended, so
# an event that commits late can never be skipped (see `app/events.py`). Unique as long as each
# transaction writes events from a single statement, which every statement here respects.
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


# The live session `:tenant`/`:id`, if the caller acting for `:principal` may change it: an unbound
# session, a caller that names no principal, or the session's own principal.
LIVE_AND_BOUND = """tenant = :tenant AND id = :id AND expires_at > now()
       AND (:principal::text IS NULL OR principal IS NULL OR principal = :principal::text)"""


def first_expiry(idle: str, lifetime: str) -> str:
    """`expires_at` and `purge_after` of a session created now with these timeouts (SQL expressions)."""
    return (
        f"now() + LEAST({idle}, {lifetime}) * interval '1 second', "
        f"now() + (LEAST({idle}, {lifetime}) + {PURGE_AFTER_STEP_SECONDS}) * interval '1 second'"
    )


def ended_reason(tenant: str, session_id: str) -> str:
    """Why the session (`tenant`, `session_id`: SQL expressions) is not live: the expiry that hit its
    unpurged row, else its tombstone's reason, else NULL."""
    return f"""COALESCE(
    (SELECT {EXPIRY_REASON} FROM sessions AS x
      WHERE x.tenant = {tenant} AND x.id = {session_id} AND x.expires_at <= now()),
    (SELECT tb.reason FROM session_tombstones AS tb
      WHERE tb.tenant = {tenant} AND tb.id = {session_id} AND tb.forget_after > now())
)"""


def asynchronous_commit(enabled: str) -> str:
    """A SELECT-list expression that, when `enabled` (a boolean SQL expression) is true, makes the
    statement's own transaction commit without waiting for its WAL flush (`set_config(..., true)` lasts
    until that transaction ends, and the commit reads it)."""
    return f"CASE WHEN {enabled}::boolean THEN set_config('synchronous_commit', 'off', true) END"


def count_created(source: str, tenant: str) -> str:
    """A CTE `counted` adding the rows of `source` to the tenant's `created` counter."""
    return f"""
, counted AS (
    INSERT INTO session_counters AS c (tenant, name, shard, value)
    SELECT {tenant}, 'created', {SHARD}, count(*) FROM {source} GROUP BY 1
    ON CONFLICT (tenant, name, shard) DO UPDATE SET value = c.value + EXCLUDED.value
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
    SELECT tenant, 'ended:' || reason, {SHARD}, count(*) FROM {source} GROUP BY tenant, reason
    ON CONFLICT (tenant, name, shard) DO UPDATE SET value = c.value + EXCLUDED.value
)"""


def ended_events(source: str, ord_: int = 1) -> str:
    """Event rows (ord, tenant, type, session_id, occurred_at, data) for the sessions in `source`."""
    return f"""
    SELECT {ord_} AS ord, tenant, 'session.ended' AS type, id AS session_id, ended_at AS occurred_at,
           json_build_object('id', id, 'reason', reason, 'kind', kind, 'principal', principal,
                             'client_id', client_id, 'created_at', created_at, 'ended_at', ended_at,
                             'lifetime_seconds', EXTRACT(EPOCH FROM ended_at - created_at)::float8) AS data
      FROM {source}"""


def created_event(how: str, tenant: str, source: str = "written", ord_: int = 2) -> str:
    """Event rows for the sessions in `source` (SESSION_COLUMNS) that came into existence."""
    return f"""
    SELECT {ord_} AS ord, {tenant} AS tenant, 'session.created' AS type, w.id AS session_id,
           w.created_at AS occurred_at,
           json_build_object('id', w.id, 'how', {how}, 'kind', w.kind, 'principal', w.principal,
                             'client_id', w.client_id, 'owner', w.owner,
                             'protocol_version', w.protocol_version, 'created_at', w.created_at,
                             'expires_at', w.expires_at) AS data
      FROM {source} AS w"""


def events_cte(*event_selects: str) -> str:
    """The one CTE of a statement that appends its lifecycle events."""
    union = "\n    UNION ALL".join(event_selects)
    return f"""
, evented AS (
    INSERT INTO session_events (position, tenant, type, session_id, occurred_at, data)
    SELECT {EVENT_POSITION}, e.tenant, e.type, e.session_id, e.occurred_at, e.data
      FROM ({union}) AS e
)"""


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
