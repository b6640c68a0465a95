"""Changing a live session: a merge-patch update (compare-and-set on `version`) and rotation to a new id."""

from __future__ import annotations

from app.sql.fragments import (
    ENDED_COLUMNS,
    IDEMPOTENCY_GUARD,
    IDEMPOTENCY_OUTCOME,
    IDEMPOTENCY_REMEMBERED,
    LIVE_AND_BOUND,
    NO_IDEMPOTENCY_OUTCOME,
    SESSION_COLUMNS,
    count_created,
    ending_effects,
    events_cte,
    idempotency_record,
)
from app.sql.statement import Statement

# Emits `session.updated` with the names of the changed fields (`:changed`, a text array).
UPDATE_SESSION = Statement(
    "update_session",
    f"""
WITH written AS (
    UPDATE sessions
       SET metadata = :metadata::json, metadata_bytes = octet_length(:metadata::json::text),
           owner = :owner, client_id = :client_id,
           protocol_version = :protocol_version, max_requests = :max_requests::int,
           max_requests_per_minute = :max_requests_per_minute::int,
           max_leases = :max_leases::int, version = version + 1
     WHERE tenant = :tenant AND id = :id AND version = :expected_version AND expires_at > now()
    RETURNING {SESSION_COLUMNS}
)
{
        events_cte('''
    SELECT 1 AS ord, :tenant::text AS tenant, 'session.updated' AS type, w.id AS session_id,
           now() AS occurred_at,
           json_build_object('id', w.id, 'version', w.version, 'changed', :changed::text[], 'owner', w.owner,
                             'client_id', w.client_id, 'protocol_version', w.protocol_version,
                             'max_requests', w.max_requests,
                             'max_requests_per_minute', w.max_requests_per_minute,
                             'max_leases', w.max_leases) AS data
      FROM written AS w''')
    }
SELECT * FROM written
""",
)

_ROTATED_EVENT = """
    SELECT 1 AS ord, :tenant::text AS tenant, 'session.rotated' AS type, w.id AS session_id,
           now() AS occurred_at,
           json_build_object('old_id', :id::text, 'new_id', w.id, 'kind', w.kind, 'principal', w.principal,
                             'expires_at', w.expires_at) AS data
      FROM written AS w"""


def _rotate(idempotent: bool) -> Statement:
    """Moves a live session (bound to `:principal`, or unbound) to `:new_id`, keeping everything else
    including its absolute deadline, its expiry warning state and its request counts; the old id ends with
    reason `rotated` (tombstone for `:tombstone_seconds`). `idempotent`: only if `:idempotency_key` is not
    remembered, and the key is recorded with the new session (see `app/sql/create.py`)."""
    remembered = IDEMPOTENCY_REMEMBERED + ", " if idempotent else ""
    guard = IDEMPOTENCY_GUARD if idempotent else ""
    record = idempotency_record("written") if idempotent else ""
    outcome = IDEMPOTENCY_OUTCOME if idempotent else NO_IDEMPOTENCY_OUTCOME
    return Statement(
        "rotate_session_idempotent" if idempotent else "rotate_session",
        f"""
WITH {remembered}old AS (
    DELETE FROM sessions WHERE {LIVE_AND_BOUND}{guard}
    RETURNING *
), written AS (
    INSERT INTO sessions (tenant, id, kind, principal, client_id, owner, protocol_version, metadata,
                          metadata_bytes, version, idle_timeout_seconds, max_lifetime_seconds, created_at,
                          last_seen_at, expires_at, check_at, warned_at, max_requests,
                          max_requests_per_minute, request_count, rate_window, rate_count, max_leases)
    SELECT tenant, :new_id, kind, principal, client_id, owner, protocol_version, metadata, metadata_bytes,
           version + 1,
           idle_timeout_seconds, max_lifetime_seconds, created_at, last_seen_at, expires_at, check_at,
           warned_at, max_requests, max_requests_per_minute, request_count, rate_window, rate_count,
           max_leases
      FROM old
    RETURNING {SESSION_COLUMNS}
), gone AS (
    SELECT {ENDED_COLUMNS}, 'rotated'::text AS reason, now() AS ended_at FROM old
){count_created("written", ":tenant::text")}{record}
{ending_effects("gone", ":tombstone_seconds")}
{events_cte(_ROTATED_EVENT)}
SELECT {outcome}, w.*
  FROM (SELECT 1) AS one LEFT JOIN written AS w ON true
""",
    )


ROTATE_SESSION = _rotate(idempotent=False)
ROTATE_SESSION_IDEMPOTENT = _rotate(idempotent=True)
