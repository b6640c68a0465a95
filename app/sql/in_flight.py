"""In-flight marks (docs/design.md, "In-flight work"): begin, renew and end a mark, the purge of marks
whose replica stopped renewing, and the tenant's counts.

A live mark holds its session's `expires_at` at least at the mark's expiry (never past the absolute
lifetime), so no statement that decides liveness from `expires_at` (every read, touch and the purge) needs
to know about marks, and touches stay exactly what they were. The hold writes `expires_at` only, an
unindexed column. Ending the last mark sets the expiry to an idle timeout from now (the request's end is
the session's last activity), which can be earlier than the hold was; `check_at` is lowered with it when
needed, so it stays a lower bound of the expiry (docs/design.md, "Schema").
"""

from __future__ import annotations

from app.sql.fragments import LIFETIME_END, LIVE_AND_BOUND, next_check
from app.sql.statement import Statement

MARK_COLUMNS = "mark_id, method, holder, started_at, expires_at"
_LIFETIME_END_OF_S = LIFETIME_END.replace("created_at", "s.created_at").replace(
    "max_lifetime_seconds", "s.max_lifetime_seconds"
)


def _hold(mark_expiry: str) -> str:
    """The SET of a session `s` held by a mark that expires at `mark_expiry`: monotonic, lifetime-capped."""
    return f"expires_at = GREATEST(s.expires_at, LEAST({mark_expiry}, {_LIFETIME_END_OF_S}))"


BEGIN_IN_FLIGHT = Statement(
    "begin_in_flight",
    f"""
WITH live AS (
    SELECT 1 FROM sessions WHERE {LIVE_AND_BOUND}
), marked AS (
    INSERT INTO session_in_flight (tenant, session_id, {MARK_COLUMNS})
    SELECT :tenant, :id, gen_random_uuid()::text, :method, :holder, now(),
           now() + :ttl_seconds::int * interval '1 second'
      FROM live
    RETURNING {MARK_COLUMNS}
), held AS (
    UPDATE sessions AS s SET {_hold("m.expires_at")}
      FROM marked AS m
     WHERE s.tenant = :tenant AND s.id = :id AND s.expires_at > now()
    RETURNING s.expires_at
)
SELECT m.*, (SELECT expires_at FROM held) AS session_expires_at FROM marked AS m
""",
)

RENEW_IN_FLIGHT = Statement(
    "renew_in_flight",
    f"""
WITH live AS (
    SELECT 1 FROM sessions WHERE {LIVE_AND_BOUND}
), renewed AS (
    UPDATE session_in_flight AS f SET expires_at = now() + :ttl_seconds::int * interval '1 second'
      FROM live
     WHERE f.tenant = :tenant AND f.session_id = :id AND f.mark_id = :mark_id AND f.expires_at > now()
    RETURNING {", ".join("f." + c for c in MARK_COLUMNS.split(", "))}
), held AS (
    UPDATE sessions AS s SET {_hold("r.expires_at")}
      FROM renewed AS r
     WHERE s.tenant = :tenant AND s.id = :id AND s.expires_at > now()
    RETURNING s.expires_at
)
SELECT r.*, (SELECT expires_at FROM held) AS session_expires_at FROM renewed AS r
""",
)

# Run after LOCK_SESSION in the same transaction: the row lock orders this end after every begin or renew
# that wrote the session before it, so this statement's snapshot sees their marks (a mark begun meanwhile
# keeps its hold). The mark goes (also when it lapsed already: `live` says whether it still held); the
# session's expiry becomes an idle timeout from now, or the latest other live mark's, within its lifetime.
END_IN_FLIGHT = Statement(
    "end_in_flight",
    f"""
WITH live AS (
    SELECT 1 FROM sessions WHERE {LIVE_AND_BOUND}
), ended AS (
    DELETE FROM session_in_flight AS f USING live
     WHERE f.tenant = :tenant AND f.session_id = :id AND f.mark_id = :mark_id
    RETURNING f.method, f.expires_at > now() AS live
), others AS (
    SELECT max(expires_at) AS until FROM session_in_flight
     WHERE tenant = :tenant AND session_id = :id AND mark_id <> :mark_id AND expires_at > now()
), target AS (
    SELECT LEAST({_LIFETIME_END_OF_S},
                 GREATEST(now() + s.idle_timeout_seconds * interval '1 second',
                          COALESCE((SELECT until FROM others), '-infinity'))) AS expires_at
      FROM sessions AS s WHERE s.tenant = :tenant AND s.id = :id
), released AS (
    UPDATE sessions AS s
       SET last_seen_at = GREATEST(s.last_seen_at, now()), expires_at = t.expires_at,
           check_at = LEAST(s.check_at, {next_check("t.expires_at", ":warning_seconds")})
      FROM target AS t
     WHERE s.tenant = :tenant AND s.id = :id AND s.expires_at > now() AND EXISTS (SELECT 1 FROM ended)
    RETURNING s.expires_at
)
SELECT e.method, e.live, (SELECT expires_at FROM released) AS session_expires_at FROM ended AS e
""",
)

LOCK_SESSION = Statement(
    "lock_session_for_in_flight",
    "SELECT 1 FROM sessions WHERE tenant = :tenant AND id = :id FOR NO KEY UPDATE",
)

# Marks whose replica stopped renewing. Their hold on the session's expiry lapses by itself (the session
# expires an idle timeout after the hold, as if last seen then); the rows go here. One row per tenant.
PURGE_IN_FLIGHT = Statement(
    "purge_in_flight",
    """
WITH doomed AS (
    SELECT ctid FROM session_in_flight WHERE expires_at <= now()
     ORDER BY expires_at LIMIT :batch::int FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM session_in_flight AS f
     WHERE f.ctid = ANY(ARRAY(SELECT ctid FROM doomed)) AND f.expires_at <= now()
    RETURNING f.tenant
)
SELECT tenant, count(*)::int AS n, clock_timestamp() AS at FROM gone GROUP BY tenant
""",
)

IN_FLIGHT_BY_METHOD = Statement(
    "in_flight_by_method",
    """SELECT COALESCE(method, 'other') AS method, count(*)::int AS n FROM session_in_flight
        WHERE tenant = :tenant AND expires_at > now() GROUP BY 1 ORDER BY 1""",
)

# Fleet gauges: live marks per tenant (the table holds one row per request in flight: small).
ALL_IN_FLIGHT_COUNTS = Statement(
    "all_in_flight_counts",
    "SELECT tenant, count(*)::int AS n FROM session_in_flight WHERE expires_at > now() GROUP BY tenant",
)
