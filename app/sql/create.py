"""Creating sessions: create/register (one row), grouped creates with minted ids, the quota scope lock.

A create with an `Idempotency-Key` uses the `_idempotent` variant of the single-row insert: it writes
nothing when the key is remembered (and returns what the key answered), and records the key with the
answer in the same statement as the session, so a create that committed is never lost to its retry
(docs/design.md, "Idempotent create").
"""

from __future__ import annotations

from app.sql.fragments import (
    ENDED_COLUMNS,
    EXPIRY_REASON,
    IDEMPOTENCY_GUARD,
    IDEMPOTENCY_OUTCOME,
    IDEMPOTENCY_REMEMBERED,
    NO_IDEMPOTENCY_OUTCOME,
    SESSION_COLUMNS,
    count_created,
    created_event,
    ended_events,
    ending_effects,
    events_cte,
    first_expiry,
    idempotency_record,
)
from app.sql.statement import Statement


def _insert_session(idempotent: bool) -> Statement:
    """The insert happens only if no deliberate ending retired the id and every quota scope has at least
    `:headroom` room left (see `app/quotas.py`); otherwise the row says why nothing was written.
    `idempotent`: also only if `:idempotency_key` is not remembered, and the key is recorded with it."""
    guard = IDEMPOTENCY_GUARD if idempotent else ""
    return Statement(
        "insert_session_idempotent" if idempotent else "insert_session",
        f"""
WITH {IDEMPOTENCY_REMEMBERED + ", " if idempotent else ""}retired AS (
    -- Deliberately ended ids stay retired while remembered, so a late retry cannot resurrect them. Expiry
    -- is passive: an expired id may be registered again, whether or not the purge has run.
    SELECT reason FROM session_tombstones
     WHERE tenant = :tenant AND id = :id AND forget_after > now() AND reason NOT LIKE 'expired%'
), replaced AS (
    SELECT {ENDED_COLUMNS}, {EXPIRY_REASON} AS reason, expires_at AS ended_at
      FROM sessions WHERE tenant = :tenant AND id = :id AND expires_at <= now()
), usage AS (
    SELECT
        -- created minus ended over-counts live sessions (expired rows count until purged), so when it is
        -- comfortably below the limit the exact count is skipped; near the limit it is counted exactly.
        CASE WHEN (SELECT COALESCE(sum(CASE WHEN name = 'created' THEN value ELSE -value END), 0)
                     FROM session_counters WHERE tenant = :tenant) + :headroom::int < :tenant_limit::int
             THEN 0
             ELSE (SELECT count(*) FROM (SELECT 1 FROM sessions
                    WHERE tenant = :tenant AND expires_at > now() LIMIT :tenant_limit::int) AS x) END
            AS tenant_used,
        CASE WHEN :principal::text IS NULL THEN 0
             ELSE (SELECT count(*) FROM (SELECT 1 FROM sessions
                    WHERE tenant = :tenant AND principal = :principal::text AND expires_at > now()
                    LIMIT :principal_limit::int) AS x)
        END AS principal_used,
        CASE WHEN :client_id::text IS NULL THEN 0
             ELSE (SELECT count(*) FROM (SELECT 1 FROM sessions
                    WHERE tenant = :tenant AND client_id = :client_id::text AND expires_at > now()
                    LIMIT :client_limit::int) AS x)
        END AS client_used
), verdict AS (
    SELECT tenant_used + :headroom::int >= :tenant_limit::int AS tenant_tight,
           principal_used + :headroom::int >= :principal_limit::int AS principal_tight,
           client_used + :headroom::int >= :client_limit::int AS client_tight
      FROM usage
), written AS (
    INSERT INTO sessions AS s (tenant, id, kind, principal, client_id, owner, protocol_version, metadata,
                               metadata_bytes, version, idle_timeout_seconds, max_lifetime_seconds,
                               max_requests, max_requests_per_minute, created_at, last_seen_at, expires_at,
                               check_at)
    SELECT :tenant, :id, :kind, :principal, :client_id, :owner, :protocol_version, :metadata::json,
           octet_length(:metadata::json::text), 1,
           :idle_timeout_seconds::int, :max_lifetime_seconds::int, :max_requests::int,
           :max_requests_per_minute::int, now(), now(),
           {first_expiry(":idle_timeout_seconds::int", ":max_lifetime_seconds::int", ":warning_seconds")}
      FROM verdict
     WHERE NOT EXISTS (SELECT 1 FROM retired){guard}
       AND NOT (verdict.tenant_tight OR verdict.principal_tight OR verdict.client_tight)
    -- An expired-but-unpurged row must not block a new session with its id; a live one must. The new
    -- session starts afresh: no warning sent, nothing counted.
    ON CONFLICT (tenant, id) DO UPDATE SET
        kind = EXCLUDED.kind, principal = EXCLUDED.principal, client_id = EXCLUDED.client_id,
        owner = EXCLUDED.owner, protocol_version = EXCLUDED.protocol_version, metadata = EXCLUDED.metadata,
        metadata_bytes = EXCLUDED.metadata_bytes, version = s.version + 1,
        idle_timeout_seconds = EXCLUDED.idle_timeout_seconds,
        max_lifetime_seconds = EXCLUDED.max_lifetime_seconds, created_at = EXCLUDED.created_at,
        last_seen_at = EXCLUDED.last_seen_at, expires_at = EXCLUDED.expires_at,
        check_at = EXCLUDED.check_at, warned_at = NULL, max_requests = EXCLUDED.max_requests,
        max_requests_per_minute = EXCLUDED.max_requests_per_minute, request_count = 0, rate_window = 0,
        rate_count = 0
    WHERE s.expires_at <= now()
    RETURNING {SESSION_COLUMNS}
), taken_over AS (
    SELECT replaced.* FROM replaced, written
){count_created("written", ":tenant::text")}{idempotency_record("written") if idempotent else ""}
{ending_effects("taken_over", None)}
{events_cte(ended_events("taken_over"), created_event(":how::text", tenant=":tenant::text"))}
SELECT (SELECT reason FROM retired) AS retired_reason, v.tenant_tight, v.principal_tight, v.client_tight,
       (SELECT reason FROM taken_over) AS replaced_reason,
       (SELECT EXTRACT(EPOCH FROM ended_at - created_at)::float8 FROM taken_over) AS replaced_lifetime,
       {IDEMPOTENCY_OUTCOME if idempotent else NO_IDEMPOTENCY_OUTCOME}, w.*
  FROM verdict AS v LEFT JOIN written AS w ON true
""",
    )


INSERT_SESSION = _insert_session(idempotent=False)
INSERT_SESSION_IDEMPOTENT = _insert_session(idempotent=True)

# Many creates with minted ids in one statement (see `app/batching.py`). Minted ids are fresh (256 random
# bits), so there is no tombstone or expired row to consider; a row whose quota scope lacks the headroom
# (this batch's own rows included) is not written and comes back `*_tight` for the careful single path.
# Parallel arrays, one element per create, named like the single-row parameters; `metadata` as JSON text.
INSERT_MANY = Statement(
    "insert_many",
    f"""
WITH req AS (
    SELECT r.*,
           count(*) OVER (PARTITION BY r.tenant) AS tenant_n,
           count(*) OVER (PARTITION BY r.tenant, r.principal) AS principal_n,
           count(*) OVER (PARTITION BY r.tenant, r.client_id) AS client_n
      FROM unnest(:tenants::text[], :ids::text[], :kind::text[], :principal::text[], :client_id::text[],
                  :owner::text[], :protocol_version::text[], :metadata::text[], :idle_timeout_seconds::int[],
                  :max_lifetime_seconds::int[], :tenant_limits::int[], :principal_limits::int[],
                  :client_limits::int[], :max_requests::int[], :max_requests_per_minute::int[])
           WITH ORDINALITY AS r(tenant, id, kind, principal, client_id, owner, protocol_version, metadata,
                                idle, lifetime, tenant_limit, principal_limit, client_limit, max_requests,
                                max_per_minute, n)
), verdict AS (
    SELECT r.*,
           (SELECT COALESCE(sum(CASE WHEN c.name = 'created' THEN c.value ELSE -c.value END), 0)
              FROM session_counters AS c WHERE c.tenant = r.tenant) + :headroom::int + r.tenant_n
               >= r.tenant_limit AS tenant_tight,
           r.principal IS NOT NULL AND (SELECT count(*) FROM (SELECT 1 FROM sessions AS s
               WHERE s.tenant = r.tenant AND s.principal = r.principal AND s.expires_at > now()
               LIMIT r.principal_limit) AS x) + :headroom::int + r.principal_n >= r.principal_limit
               AS principal_tight,
           r.client_id IS NOT NULL AND (SELECT count(*) FROM (SELECT 1 FROM sessions AS s
               WHERE s.tenant = r.tenant AND s.client_id = r.client_id AND s.expires_at > now()
               LIMIT r.client_limit) AS x) + :headroom::int + r.client_n >= r.client_limit AS client_tight
      FROM req AS r
), written AS (
    INSERT INTO sessions (tenant, id, kind, principal, client_id, owner, protocol_version, metadata,
                          metadata_bytes, version, idle_timeout_seconds, max_lifetime_seconds, max_requests,
                          max_requests_per_minute, created_at, last_seen_at, expires_at, check_at)
    SELECT v.tenant, v.id, v.kind, v.principal, v.client_id, v.owner, v.protocol_version, v.metadata::json,
           octet_length(v.metadata), 1,
           v.idle, v.lifetime, v.max_requests, v.max_per_minute, now(), now(),
           {first_expiry("v.idle", "v.lifetime", ":warning_seconds")}
      FROM verdict AS v
     WHERE NOT (v.tenant_tight OR v.principal_tight OR v.client_tight)
    ON CONFLICT (tenant, id) DO NOTHING
    RETURNING tenant, {SESSION_COLUMNS}
){count_created("written", "tenant")}
{events_cte(created_event("'created'", tenant="w.tenant"))}
SELECT v.tenant_tight, v.principal_tight, v.client_tight, w.*
  FROM verdict AS v LEFT JOIN written AS w ON w.tenant = v.tenant AND w.id = v.id
 ORDER BY v.n
""",
)

# Serialises creates in one quota scope when it is near its limit (held until the transaction ends).
LOCK_QUOTA_SCOPE = Statement("lock_quota_scope", "SELECT pg_advisory_xact_lock(hashtextextended(:key, 7347))")
