"""Stream leases (docs/design.md, "Leases"): acquire a free slot of a session, renew, release, list the live
ones, and the purge of leases whose holder stopped renewing.

A session has `max_leases` slots, the primary key `(tenant, session_id, slot)`. An acquire picks the first
slot without a live lease and writes it with `INSERT ... ON CONFLICT DO UPDATE ... WHERE the lease there
has expired`: the unique key arbitrates, so of two replicas racing for one slot exactly one writes it (the
other's conflict finds a live lease and writes nothing). Every time is the database clock.
"""

from __future__ import annotations

from app.sql.fragments import LIVE_AND_BOUND, bound_to, events_cte
from app.sql.statement import Statement

LEASE_COLUMNS = "lease_id, holder, fencing_token, ttl_seconds, acquired_at, renewed_at, expires_at"


def _lease_event(type_: str, source: str, reason: str, ord_: int) -> str:
    """Event rows `type_` for the leases in `source` (tenant, session_id and LEASE_COLUMNS)."""
    return f"""
    SELECT {ord_} AS ord, l.tenant, '{type_}' AS type, l.session_id, now() AS occurred_at,
           json_build_object('id', l.session_id, 'lease_id', l.lease_id, 'holder', l.holder,
                             'fencing_token', l.fencing_token, 'expires_at', l.expires_at,
                             'reason', {reason}) AS data
      FROM {source} AS l"""


# `found`: the session is live and bound to the caller (else nothing happened). With a lease written,
# `session.lease_acquired`, and `session.lease_lost` for the expired lease it replaced when the purge had
# not removed it yet. The session's `owner` becomes the holder (a change of a shown field: the version
# moves). `raced`: a free slot was seen but another acquirer wrote it first.
ACQUIRE_LEASE = Statement(
    "acquire_lease",
    f"""
WITH live AS (
    SELECT max_leases FROM sessions WHERE {LIVE_AND_BOUND}
), free AS (
    SELECT g.slot::smallint AS slot FROM live, generate_series(0, live.max_leases - 1) AS g(slot)
     WHERE NOT EXISTS (SELECT 1 FROM session_leases AS l
                        WHERE l.tenant = :tenant AND l.session_id = :id AND l.slot = g.slot
                          AND l.expires_at > now())
     ORDER BY g.slot LIMIT 1
), prior AS (
    SELECT l.tenant, l.session_id, {", ".join("l." + c for c in LEASE_COLUMNS.split(", "))}
      FROM session_leases AS l JOIN free ON l.slot = free.slot
     WHERE l.tenant = :tenant AND l.session_id = :id
), acquired AS (
    INSERT INTO session_leases AS l (tenant, session_id, slot, {LEASE_COLUMNS})
    SELECT :tenant, :id, free.slot, gen_random_uuid()::text, :holder, nextval('session_lease_fencing'),
           :ttl_seconds::int, now(), now(), now() + :ttl_seconds::int * interval '1 second'
      FROM free
    ON CONFLICT (tenant, session_id, slot) DO UPDATE
       SET lease_id = EXCLUDED.lease_id, holder = EXCLUDED.holder, fencing_token = EXCLUDED.fencing_token,
           ttl_seconds = EXCLUDED.ttl_seconds, acquired_at = EXCLUDED.acquired_at,
           renewed_at = EXCLUDED.renewed_at, expires_at = EXCLUDED.expires_at
     WHERE l.expires_at <= now()
    RETURNING l.tenant, l.session_id, {", ".join("l." + c for c in LEASE_COLUMNS.split(", "))}
), owned AS (
    UPDATE sessions AS s SET owner = :holder, version = s.version + 1
     WHERE s.tenant = :tenant AND s.id = :id AND s.expires_at > now() AND EXISTS (SELECT 1 FROM acquired)
       AND s.owner IS DISTINCT FROM :holder
)
{
        events_cte(
            _lease_event(
                "session.lease_lost",
                "(SELECT * FROM prior WHERE EXISTS (SELECT 1 FROM acquired))",
                "'expired'",
                1,
            ),
            _lease_event("session.lease_acquired", "acquired", "NULL::text", 2),
        )
    }
SELECT EXISTS (SELECT 1 FROM live) AS found, EXISTS (SELECT 1 FROM free) AND a.lease_id IS NULL AS raced,
       (SELECT min(x.expires_at) FROM session_leases AS x
         WHERE x.tenant = :tenant AND x.session_id = :id AND x.expires_at > now()) AS busy_until,
       (SELECT max_leases FROM live) AS max_leases, now() AS at,
       a.lease_id, a.holder, a.fencing_token, a.ttl_seconds, a.acquired_at, a.renewed_at, a.expires_at
  FROM (SELECT 1) AS one LEFT JOIN acquired AS a ON true
""",
)

_LEASE_OF_LIVE_SESSION = f"""l.tenant = :tenant AND l.session_id = :id AND l.lease_id = :lease_id
       AND s.tenant = :tenant AND s.id = :id AND s.expires_at > now()
       AND {bound_to("s.principal", ":principal::text")}"""

# Extends a live lease by its TTL (or a new `:ttl_seconds`); nothing when it expired or is not there.
RENEW_LEASE = Statement(
    "renew_lease",
    f"""
UPDATE session_leases AS l
   SET renewed_at = now(), ttl_seconds = COALESCE(:ttl_seconds::int, l.ttl_seconds),
       expires_at = now() + COALESCE(:ttl_seconds::int, l.ttl_seconds) * interval '1 second'
  FROM sessions AS s
 WHERE {_LEASE_OF_LIVE_SESSION} AND l.expires_at > now()
RETURNING {", ".join("l." + c for c in LEASE_COLUMNS.split(", "))}
""",
)

# Gives a lease back (also one that has just expired and was not taken over), with `session.lease_released`.
RELEASE_LEASE = Statement(
    "release_lease",
    f"""
WITH released AS (
    DELETE FROM session_leases AS l USING sessions AS s
     WHERE {_LEASE_OF_LIVE_SESSION}
    RETURNING l.tenant, l.session_id, {", ".join("l." + c for c in LEASE_COLUMNS.split(", "))}
)
{events_cte(_lease_event("session.lease_released", "released", "'released'", 1))}
SELECT lease_id, fencing_token FROM released
""",
)

# The session's live leases as a JSON array (NULL: none), for a GET of the session.
LIVE_LEASES_JSON = """(SELECT json_agg(json_build_object('lease_id', l.lease_id, 'holder', l.holder,
                               'fencing_token', l.fencing_token, 'acquired_at', l.acquired_at,
                               'renewed_at', l.renewed_at, 'expires_at', l.expires_at) ORDER BY l.slot)
           FROM session_leases AS l
          WHERE l.tenant = sessions.tenant AND l.session_id = sessions.id AND l.expires_at > now())"""

# Leases whose holder stopped renewing: removed, each with `session.lease_lost`. One row per tenant.
PURGE_LEASES = Statement(
    "purge_leases",
    f"""
WITH doomed AS (
    SELECT ctid FROM session_leases WHERE expires_at <= now()
     ORDER BY expires_at LIMIT :batch::int FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM session_leases AS l
     WHERE l.ctid = ANY(ARRAY(SELECT ctid FROM doomed)) AND l.expires_at <= now()
    RETURNING l.tenant, l.session_id, {", ".join("l." + c for c in LEASE_COLUMNS.split(", "))}
)
{events_cte(_lease_event("session.lease_lost", "gone", "'expired'", 1))}
SELECT tenant, count(*)::int AS n, clock_timestamp() AS at FROM gone GROUP BY tenant
""",
)
