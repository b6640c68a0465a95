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
    "idle_timeout_seconds, max_lifetime_seconds, created_at, last_seen_at, expires_at, "
    "max_requests, max_requests_per_minute, max_leases"
)
LIFETIME_END = "created_at + max_lifetime_seconds * interval '1 second'"
EXPIRY_REASON = f"CASE WHEN expires_at >= {LIFETIME_END} THEN 'expired_lifetime' ELSE 'expired_idle' END"
# Lifetime bucket b holds lifetimes in [2^(b/4), 2^((b+1)/4)) seconds (bucket 0 also everything shorter
# than a second), so a percentile read from the buckets is exact to within 19 %. 80 reaches past 7 days.
LIFETIME_BUCKETS = 81
LIFETIME_BUCKET = "LEAST(80, floor(4 * ln(GREATEST(({lifetime})::float8, 1)) / ln(2)))::smallint"
# Columns a CTE of ended sessions must expose for `ending_effects` and `ended_events`.
ENDED_COLUMNS = "tenant, id, kind, principal, client_id, created_at"


def bound_to(bound: str, caller: str) -> str:
    """The binding rule (`rules.bound_elsewhere`, negated) in SQL: the row bound to principal `bound` may be
    shown to a caller acting for `caller` (SQL expressions; NULL: unbound, or acting for no principal)."""
    return f"({caller} IS NULL OR {bound} IS NULL OR {bound} = {caller})"


# The live session `:tenant`/`:id`, if the caller acting for `:principal` may change it: an unbound
# session, a caller that names no principal, or the session's own principal.
LIVE_AND_BOUND = f"""tenant = :tenant AND id = :id AND expires_at > now()
       AND {bound_to("principal", ":principal::text")}"""


def next_check(expires_at: str, warning: str) -> str:
    """When the purge must look at a live session next (`check_at`): its expiry warning time while that
    is still ahead (`warning` seconds before `expires_at`; 0: warnings off), else its expiry. Never later
    than anything that can happen to the session, since a touch only moves `expires_at` forward
    (docs/design.md, "Purge")."""
    warn_at = f"{expires_at} - {warning}::int * interval '1 second'"
    return f"CASE WHEN {warn_at} > now() THEN {warn_at} ELSE {expires_at} END"


def first_expiry(idle: str, lifetime: str, warning: str) -> str:
    """`expires_at` and `check_at` of a session created now with these timeouts (SQL expressions). The
    first check is the warning time even when that has passed already (a session shorter than the
    warning window is inside it from birth, and is warned by the next purge run)."""
    expires_at = f"now() + LEAST({idle}, {lifetime}) * interval '1 second'"
    return f"{expires_at}, {expires_at} - {warning}::int * interval '1 second'"


# Per-session request limits (docs/design.md, "Request limits"): what a touch returns about row `s` so the
# service can admit or refuse it. Counts are what replicas have synced so far; the minute windows are
# numbered from the session's creation, on the database clock.
def request_limit_columns(row: str) -> str:
    window = f"floor(EXTRACT(EPOCH FROM now() - {row}.created_at) / 60)::int"
    return f"""{row}.max_requests, {row}.max_requests_per_minute, {row}.request_count, {row}.created_at,
           {window} AS rate_window,
           CASE WHEN {row}.rate_window = {window} THEN {row}.rate_count ELSE 0 END AS rate_count,
           60 - mod(EXTRACT(EPOCH FROM now() - {row}.created_at)::numeric, 60)::float8 AS window_left"""


def request_limit_reached(row: str) -> str:
    """True when the synced counts of `row` (with `request_limit_columns`) already reach a limit: such a
    touch is refused, so it must not slide the expiry either."""
    return f"""(({row}.max_requests > 0 AND {row}.request_count >= {row}.max_requests)
            OR ({row}.max_requests_per_minute > 0 AND {row}.rate_count >= {row}.max_requests_per_minute))"""


# Idempotent creates and rotations (docs/design.md, "Idempotent create"): the remembered answer to
# `:idempotency_key`, the guard that writes nothing when there is one, and the record of a new answer
# (the session as created) in the statement that creates it. `key_recorded` false with a session written
# means a concurrent request with the same key committed first: the caller rolls back and asks again.
IDEMPOTENCY_REMEMBERED = """remembered_key AS (
    SELECT fingerprint, response FROM idempotency_keys
     WHERE tenant = :tenant AND key = :idempotency_key AND forget_after > now()
)"""
IDEMPOTENCY_GUARD = "\n       AND NOT EXISTS (SELECT 1 FROM remembered_key)"
IDEMPOTENCY_OUTCOME = """(SELECT fingerprint FROM remembered_key) AS key_fingerprint,
       (SELECT response FROM remembered_key) AS key_response,
       EXISTS (SELECT 1 FROM key_recorded) AS key_recorded"""
NO_IDEMPOTENCY_OUTCOME = (
    "NULL::text AS key_fingerprint, NULL::json AS key_response, NULL::boolean AS key_recorded"
)


def idempotency_record(source: str) -> str:
    """A CTE `key_recorded` remembering `:idempotency_key` with the session in `source` as its answer; an
    expired record of the key (not yet purged) is replaced, a live one is left alone."""
    return f"""
, key_recorded AS (
    INSERT INTO idempotency_keys AS k (tenant, key, fingerprint, response, created_at, forget_after)
    SELECT :tenant, :idempotency_key, :fingerprint, to_json(w), now(),
           now() + :key_retention_seconds::int * interval '1 second'
      FROM {source} AS w
    ON CONFLICT (tenant, key) DO UPDATE
       SET fingerprint = EXCLUDED.fingerprint, response = EXCLUDED.response, created_at = EXCLUDED.created_at,
           forget_after = EXCLUDED.forget_after
     WHERE k.forget_after <= now()
    RETURNING 1
)"""


def ended_reason(tenant: str, session_id: str, principal: str) -> str:
    """Why the session (`tenant`, `session_id`: SQL expressions) is not live: the expiry that hit its
    unpurged row, else its tombstone's reason, else NULL. Told only to a caller the session was not bound
    away from (`principal`): to anyone else an ended session is as missing as one that never existed."""
    return f"""COALESCE(
    (SELECT {EXPIRY_REASON} FROM sessions AS x
      WHERE x.tenant = {tenant} AND x.id = {session_id} AND x.expires_at <= now()
        AND {bound_to("x.principal", principal)}),
    (SELECT tb.reason FROM session_tombstones AS tb
      WHERE tb.tenant = {tenant} AND tb.id = {session_id} AND tb.forget_after > now()
        AND {bound_to("tb.principal", principal)})
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
    INSERT INTO session_tombstones AS t (tenant, id, reason, principal, ended_at, forget_after)
    SELECT tenant, id, reason, principal, ended_at, now() + {retention}::int * interval '1 second'
      FROM {source} WHERE {retention}::int > 0
    ON CONFLICT (tenant, id) DO UPDATE
       SET reason = EXCLUDED.reason, principal = EXCLUDED.principal, ended_at = EXCLUDED.ended_at,
           forget_after = EXCLUDED.forget_after
)"""
        if retention is not None
        else ""
    )
    return f"""{tombstone}
, ended_counted AS (
    INSERT INTO session_counters AS c (tenant, name, shard, value)
    SELECT tenant, 'ended:' || reason, {SHARD}, count(*) FROM {source} GROUP BY tenant, reason
    ON CONFLICT (tenant, name, shard) DO UPDATE SET value = c.value + EXCLUDED.value
), lifetimes_counted AS (
    -- For window analytics (mean and 95th percentile of lifetimes). A rotation moves the session to a
    -- new id; it does not end its life, so it is left out.
    INSERT INTO session_lifetime_counters AS c (tenant, bucket, shard, ended, seconds)
    SELECT tenant, {LIFETIME_BUCKET.format(lifetime="EXTRACT(EPOCH FROM ended_at - created_at)")}, {SHARD},
           count(*), sum(GREATEST(EXTRACT(EPOCH FROM ended_at - created_at)::float8, 0))
      FROM {source} WHERE reason <> 'rotated' GROUP BY 1, 2
    ON CONFLICT (tenant, bucket, shard) DO UPDATE
       SET ended = c.ended + EXCLUDED.ended, seconds = c.seconds + EXCLUDED.seconds
)"""


def ended_events(source: str, ord_: int = 1) -> str:
    """Event rows (ord, tenant, type, session_id, occurred_at, data) for the sessions in `source`."""
    return f"""
    SELECT {ord_} AS ord, tenant, 'session.ended' AS type, id AS session_id, ended_at AS occurred_at,
           json_build_object('id', id, 'reason', reason, 'kind', kind, 'principal', principal,
                             'client_id', client_id, 'created_at', created_at, 'ended_at', ended_at,
                             'lifetime_seconds', EXTRACT(EPOCH FROM ended_at - created_at)::float8) AS data
      FROM {source}"""


def expiring_events(source: str, ord_: int = 3) -> str:
    """`session.expiring` rows for the live sessions in `source` (ENDED_COLUMNS + expires_at) that came
    within the warning window of their expiry."""
    return f"""
    SELECT {ord_} AS ord, tenant, 'session.expiring' AS type, id AS session_id, now() AS occurred_at,
           json_build_object('id', id, 'expires_at', expires_at,
                             'expires_in_seconds', EXTRACT(EPOCH FROM expires_at - now())::float8,
                             'kind', kind, 'principal', principal, 'client_id', client_id) AS data
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
