"""Reading sessions: one by id (optionally locked for a patch), keyset pages, and the tenant figures."""

from __future__ import annotations

from itertools import combinations

from app.sql.fragments import EXPIRY_REASON, SESSION_COLUMNS, bound_to
from app.sql.leases import LIVE_LEASES_JSON
from app.sql.statement import Statement

# With the session's live stream leases (docs/design.md, "Leases"), which a GET shows.
_GET = f"""
SELECT {SESSION_COLUMNS}, expires_at > now() AS live, {EXPIRY_REASON} AS expiry_reason,
       {LIVE_LEASES_JSON} AS leases
  FROM sessions WHERE tenant = :tenant AND id = :id
"""
GET_SESSION = Statement("get_session", _GET)
GET_SESSION_FOR_UPDATE = Statement("get_session_for_update", _GET + " FOR UPDATE")

# Why an ended session ended, for a caller it was not bound away from (`fragments.bound_to`).
TOMBSTONE_REASON = Statement(
    "tombstone_reason",
    f"""SELECT reason FROM session_tombstones
         WHERE tenant = :tenant AND id = :id AND forget_after > now()
           AND {bound_to("principal", ":principal::text")}""",
)

LIST_FILTERS = ("kind", "principal", "client_id", "owner", "protocol_version")
# A page carries each session's metadata as the JSON text stored, not decoded: the service puts that text
# into the answer as it is (`orjson.Fragment`). Decoding and re-encoding megabytes of metadata per page
# was most of a page's CPU on the event loop, which the other requests of the process wait for.
_AS_TEXT = SESSION_COLUMNS.replace("metadata,", "metadata::text AS metadata,")


def _page(filters: tuple[str, ...], after: bool) -> Statement:
    """Up to `:limit` live sessions ordered by id, matching every filter (bound under its own name), after
    `:after_id` when `after`, cut where their metadata passes `:max_bytes` (the first always comes, so a
    page is never empty while sessions remain). `available` counts the rows before that cut.

    The cut is decided on `metadata_bytes` (rows older than migration 0008 are measured from their
    metadata), and only the rows that make the page are read in full: measuring every candidate's metadata
    decompressed up to `:limit` large values per page for rows it then dropped."""
    conditions = "".join(f" AND {name} = :{name}" for name in filters)
    if after:
        conditions += " AND id > :after_id"
    suffix = "_".join(filters) or "all"
    size = "COALESCE(metadata_bytes, octet_length(metadata::text))"
    return Statement(
        f"list_{suffix}{'_after' if after else ''}",
        f"""
SELECT {_AS_TEXT.replace("id,", "s.id,", 1)}, m.available FROM (
    SELECT id, count(*) OVER () AS available, sum(size) OVER (ORDER BY id) - size AS bytes_before
      FROM (SELECT id, {size} AS size FROM sessions
             WHERE tenant = :tenant AND expires_at > now(){conditions}
             ORDER BY id LIMIT :limit) AS page
) AS m JOIN sessions AS s ON s.tenant = :tenant AND s.id = m.id
 WHERE m.bytes_before < :max_bytes
 ORDER BY s.id
""",
    )


# One statement per combination of filters (in LIST_FILTERS order) and cursor, so each has its own plan.
LIST_PAGE = {
    (names, after): _page(names, after)
    for size in range(len(LIST_FILTERS) + 1)
    for names in combinations(LIST_FILTERS, size)
    for after in (False, True)
}

# `active`: created or touched in the last five minutes, as far as touches were written (a throttled
# touch writes nothing, so its session counts when its last written touch is that recent).
_ACTIVE = "count(*) FILTER (WHERE last_seen_at >= now() - interval '5 minutes') AS active"

LIVE_BY_KIND = Statement(
    "live_by_kind",
    f"""
SELECT kind, count(*) AS live, min(created_at) AS oldest, max(created_at) AS newest, {_ACTIVE}
  FROM sessions WHERE tenant = :tenant AND expires_at > now()
 GROUP BY kind ORDER BY kind
""",
)

COUNTER_TOTALS = Statement(
    "counter_totals",
    "SELECT name, sum(value)::bigint AS total FROM session_counters WHERE tenant = :tenant GROUP BY name",
)

# Admin figures: the only reads that span tenants.
ALL_LIVE_BY_KIND = Statement(
    "all_live_by_kind",
    f"""
SELECT tenant, kind, count(*) AS live, min(created_at) AS oldest, max(created_at) AS newest, {_ACTIVE}
  FROM sessions WHERE expires_at > now()
 GROUP BY tenant, kind ORDER BY tenant, kind
""",
)

ALL_COUNTER_TOTALS = Statement(
    "all_counter_totals",
    "SELECT tenant, name, sum(value)::bigint AS total FROM session_counters GROUP BY tenant, name",
)

# Lifetime buckets of ended sessions (see `fragments.LIFETIME_BUCKET`): ended count and summed seconds.
LIFETIME_TOTALS = Statement(
    "lifetime_totals",
    "SELECT bucket, sum(ended)::bigint AS ended, sum(seconds)::float8 AS seconds "
    "FROM session_lifetime_counters WHERE tenant = :tenant GROUP BY bucket",
)
ALL_LIFETIME_TOTALS = Statement(
    "all_lifetime_totals",
    "SELECT tenant, bucket, sum(ended)::bigint AS ended, sum(seconds)::float8 AS seconds "
    "FROM session_lifetime_counters GROUP BY tenant, bucket",
)


def _window_base(tenant_filter: str, name: str) -> Statement:
    """Per tenant, the snapshot a window of `:window_seconds` is measured from: the latest one taken at or
    before the window's start, else (history shorter than the window) the earliest; and the highest live
    count of the snapshots since then."""
    return Statement(
        name,
        f"""
WITH base AS (
    SELECT DISTINCT ON (tenant) tenant, taken_at, totals
      FROM stats_snapshots
     WHERE {tenant_filter}
     ORDER BY tenant, taken_at <= now() - :window_seconds::int * interval '1 second' DESC,
              CASE WHEN taken_at <= now() - :window_seconds::int * interval '1 second' THEN taken_at END DESC,
              taken_at
)
SELECT b.tenant, b.taken_at, b.totals,
       (SELECT max(s.live) FROM stats_snapshots AS s WHERE s.tenant = b.tenant AND s.taken_at >= b.taken_at)
           AS peak_live
  FROM base AS b
""",
    )


WINDOW_BASE = _window_base("tenant = :tenant", "window_base")
ALL_WINDOW_BASE = _window_base("true", "all_window_base")

SCHEMA_REVISION = Statement("schema_revision", "SELECT version_num FROM alembic_version LIMIT 1")

# How far behind the primary a standby's reads are, in seconds: 0 when it has replayed all it received
# and is streaming (or is no standby at all), else the age of its last replayed transaction; NULL when it
# cannot say (nothing replayed yet), which counts as too far behind.
STANDBY_LAG = Statement(
    "standby_lag",
    """
SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0.0
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
                 AND (SELECT status FROM pg_stat_wal_receiver) = 'streaming' THEN 0.0
            ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8 END AS lag_seconds
""",
)
