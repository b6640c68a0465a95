"""Touch: slide a session's idle expiry. One statement for one session, one for a group of them.

A touch writes only when it would move the expiry by at least its threshold
(`min(:granularity, idle timeout / 10)`), so most touches are reads; the write changes unindexed columns
only (never the purge's `check_at`: docs/design.md, "Schema"), so it can be a HOT update. With
`:async_commit` the statement's transaction commits without waiting for the WAL flush: a database crash
can undo the touch writes of its last moments, which leaves those sessions with the expiry they had, as
if the touch had been throttled (docs/design.md, "Touch").

Request limits (docs/design.md, "Request limits"): both statements also return the session's limits and
the counts replicas have synced (`request_limit_columns`); the service admits or refuses the touch with
its own unsynced count. A touch whose synced counts already reach a limit does not write: it will be
refused, and a refused touch must not keep the session alive.
"""

from __future__ import annotations

from app.sql.fragments import (
    LIFETIME_END,
    asynchronous_commit,
    bound_to,
    ended_reason,
    request_limit_columns,
    request_limit_reached,
)
from app.sql.statement import Statement


def _slide(target: str) -> str:
    """The SET list of a touch of row `s` towards expiry `target`: monotonic, and unindexed columns only
    (the purge's `check_at` stays where it is, a lower bound of the expiry)."""
    return f"""last_seen_at = GREATEST(s.last_seen_at, now()),
           expires_at = GREATEST(s.expires_at, {target})"""


def _touch_one(name: str, *, skip_locked: bool) -> Statement:
    """The live row's target expiry, a write only if it moves expiry by the threshold (and the principal
    matches), and, when there is no live row, why it ended. With `skip_locked` a row that another
    transaction holds is not waited for: the statement answers "due, not written" at once."""
    locked, lock_condition = "", ""
    if skip_locked:
        locked = f"""
), locked AS (
    SELECT 1 FROM sessions AS s, current AS c
     WHERE s.tenant = :tenant AND s.id = :id AND {_WRITES}
       FOR UPDATE OF s SKIP LOCKED"""
        lock_condition = "\n       AND EXISTS (SELECT 1 FROM locked)"
    return Statement(
        name,
        f"""
WITH current AS (
    SELECT principal, expires_at,
           LEAST(now() + idle_timeout_seconds * interval '1 second', {LIFETIME_END}) AS target,
           LEAST(:granularity::float8, idle_timeout_seconds * 0.1) * interval '1 second' AS threshold,
           {request_limit_columns("sessions")}
      FROM sessions
     WHERE tenant = :tenant AND id = :id AND expires_at > now(){locked}
), touched AS (
    UPDATE sessions AS s
       SET {_slide("c.target")}
      FROM current AS c
     WHERE s.tenant = :tenant AND s.id = :id AND {_WRITES}{lock_condition}
    RETURNING s.expires_at
)
SELECT c.principal, COALESCE(t.expires_at, c.expires_at) AS expires_at, t.expires_at IS NOT NULL AS written,
       c.target - c.expires_at >= c.threshold AND NOT {request_limit_reached("c")} AS due,
       CASE WHEN c.expires_at IS NULL THEN {ended_reason(":tenant", ":id", ":principal::text")}
       END AS ended_reason,
       c.max_requests, c.max_requests_per_minute, c.request_count, c.created_at, c.rate_window,
       c.rate_count, c.window_left
  FROM (SELECT {asynchronous_commit(":async_commit")}) AS commit_mode
  LEFT JOIN current AS c ON true LEFT JOIN touched AS t ON true
""",
    )


# Whether the touch writes: the principal matches, the expiry moves by the threshold, and no request limit
# is reached. Decided on the snapshot row, not re-checked against a concurrent touch's newer version: then
# a due touch that writes nothing means the row is gone or (skip_locked) held by another transaction,
# never "someone was faster". GREATEST in `_slide` keeps racing writes monotonic.
_WRITES = f"""{bound_to("c.principal", ":principal::text")}
       AND c.target - c.expires_at >= c.threshold AND NOT {request_limit_reached("c")}"""

# The group statement's one-row form: it never waits for a row lock, so a locked session cannot hold a
# statement slot that other sessions' touches need (docs/design.md, "Row locks").
TOUCH_SESSION = _touch_one("touch_session", skip_locked=True)
# A touch that the group statement could not write, alone and waiting for the row (behind `RowGate`).
TOUCH_SESSION_WAITING = _touch_one("touch_session_waiting", skip_locked=False)

# Many touches in one statement (see `app/batching.py`): parallel arrays of tenant, id and principal;
# one answer row per request row, in request order, with the columns of TOUCH_SESSION.
TOUCH_MANY = Statement(
    "touch_many",
    f"""
WITH req AS (
    SELECT * FROM unnest(:tenants::text[], :ids::text[], :principals::text[])
           WITH ORDINALITY AS r(tenant, id, principal, n)
), current AS (
    SELECT r.n, s.tenant, s.id, s.principal, s.expires_at,
           LEAST(now() + s.idle_timeout_seconds * interval '1 second',
                 s.created_at + s.max_lifetime_seconds * interval '1 second') AS target,
           LEAST(:granularity::float8, s.idle_timeout_seconds * 0.1) * interval '1 second' AS threshold,
           {bound_to("s.principal", "r.principal")} AS allowed,
           {request_limit_columns("s")}
      FROM req AS r JOIN sessions AS s ON s.tenant = r.tenant AND s.id = r.id AND s.expires_at > now()
), due AS (
    -- Lock what will be written, skipping rows another transaction holds (they come back due and not
    -- written, and are retried alone); in (tenant, id) order, as every multi-row writer locks.
    SELECT c.n, c.target, s.tenant, s.id
      FROM current AS c JOIN sessions AS s ON s.tenant = c.tenant AND s.id = c.id
     WHERE c.allowed AND c.target - c.expires_at >= c.threshold AND NOT {request_limit_reached("c")}
     ORDER BY s.tenant, s.id
       FOR UPDATE OF s SKIP LOCKED
), touched AS (
    UPDATE sessions AS s
       SET {_slide("d.target")}
      FROM due AS d
     WHERE s.tenant = d.tenant AND s.id = d.id
    RETURNING d.n, s.expires_at
)
SELECT c.principal, COALESCE(t.expires_at, c.expires_at) AS expires_at, t.expires_at IS NOT NULL AS written,
       c.target - c.expires_at >= c.threshold AND NOT {request_limit_reached("c")} AS due,
       CASE WHEN c.n IS NULL THEN {ended_reason("r.tenant", "r.id", "r.principal")} END AS ended_reason,
       c.max_requests, c.max_requests_per_minute, c.request_count, c.created_at, c.rate_window,
       c.rate_count, c.window_left
  FROM (SELECT {asynchronous_commit(":async_commit")}) AS commit_mode CROSS JOIN req AS r
  LEFT JOIN current AS c ON c.n = r.n LEFT JOIN touched AS t ON t.n = r.n
 ORDER BY r.n
""",
)
