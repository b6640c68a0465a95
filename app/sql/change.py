"""Changing a live session: a merge-patch update (compare-and-set on `version`) and rotation to a new id."""

from __future__ import annotations

from app.sql.fragments import (
    ENDED_COLUMNS,
    LIVE_AND_BOUND,
    SESSION_COLUMNS,
    count_created,
    ending_effects,
    events_cte,
)
from app.sql.statement import Statement

# Emits `session.updated` with the names of the changed fields (`:changed`, a text array).
UPDATE_SESSION = Statement(
    "update_session",
    f"""
WITH written AS (
    UPDATE sessions
       SET metadata = :metadata::json, owner = :owner, client_id = :client_id,
           protocol_version = :protocol_version, version = version + 1
     WHERE tenant = :tenant AND id = :id AND version = :expected_version AND expires_at > now()
    RETURNING {SESSION_COLUMNS}
)
{
        events_cte('''
    SELECT 1 AS ord, :tenant::text AS tenant, 'session.updated' AS type, w.id AS session_id,
           now() AS occurred_at,
           json_build_object('id', w.id, 'version', w.version, 'changed', :changed::text[], 'owner', w.owner,
                             'client_id', w.client_id, 'protocol_version', w.protocol_version) AS data
      FROM written AS w''')
    }
SELECT * FROM written
""",
)

# Moves a live session (bound to `:principal`, or unbound) to `:new_id`, keeping everything else including
# its absolute deadline; the old id ends with reason `rotated` (tombstone for `:tombstone_seconds`).
ROTATE_SESSION = Statement(
    "rotate_session",
    f"""
WITH old AS (
    DELETE FROM sessions WHERE {LIVE_AND_BOUND}
    RETURNING *
), written AS (
    INSERT INTO sessions (tenant, id, kind, principal, client_id, owner, protocol_version, metadata, version,
                          idle_timeout_seconds, max_lifetime_seconds, created_at, last_seen_at, expires_at,
                          purge_after)
    SELECT tenant, :new_id, kind, principal, client_id, owner, protocol_version, metadata, version + 1,
           idle_timeout_seconds, max_lifetime_seconds, created_at, last_seen_at, expires_at, purge_after
      FROM old
    RETURNING {SESSION_COLUMNS}
), gone AS (
    SELECT {ENDED_COLUMNS}, 'rotated'::text AS reason, now() AS ended_at FROM old
){count_created("written", ":tenant::text")}
{ending_effects("gone", ":tombstone_seconds")}
{
        events_cte('''
    SELECT 1 AS ord, :tenant::text AS tenant, 'session.rotated' AS type, w.id AS session_id,
           now() AS occurred_at,
           json_build_object('old_id', :id::text, 'new_id', w.id, 'kind', w.kind, 'principal', w.principal,
                             'expires_at', w.expires_at) AS data
      FROM written AS w''')
    }
SELECT * FROM written
""",
)
