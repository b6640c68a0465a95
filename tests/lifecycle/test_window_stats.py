"""Window analytics: `?window_seconds=N` figures are the totals now minus the stats snapshot the fleet
recount took at the window's start; per tenant for admins too."""

from __future__ import annotations

import asyncio

from app import fleet_gauges
from tests.helpers import ADMIN_KEY, GLOBEX_KEY, assert_problem, auth, create, make_settings, path, ts

# Snapshots come from the recount; the app's own loop takes one at start and then waits an hour, so the
# test decides when the others are taken.
QUIET = {"stats_refresh_seconds": 3600}
SNAPSHOT = make_settings(stats_refresh_seconds=0.05)


async def ended_after(client, seconds: float, *sessions: dict) -> None:
    await asyncio.sleep(seconds)
    for session in sessions:
        assert (await client.delete(path(session["id"]), headers=auth())).status_code == 204


async def test_a_window_counts_what_happened_since_the_snapshot_at_its_start(client_with, raw_db, db) -> None:
    async with client_with(**QUIET) as client:
        before = [await create(client) for _ in range(2)]
        await ended_after(client, 0.1, before[0])
        await asyncio.sleep(0.1)
        assert await fleet_gauges.refresh(db, SNAPSHOT)
        snapshot_at = await raw_db.fetchval("SELECT max(taken_at) FROM stats_snapshots WHERE tenant = 'acme'")
        await asyncio.sleep(1.1)
        burst = [await create(client) for _ in range(4)]
        assert await fleet_gauges.refresh(db, SNAPSHOT)  # live 5 at this moment: the peak
        await ended_after(client, 0.5, *burst[:3])
        await client.delete("/v1/sessions", params={"all": "true"}, headers=auth())

        stats = (await client.get("/v1/stats", params={"window_seconds": 1}, headers=auth())).json()
        window = stats["window"]
        assert window["seconds"] == 1 and ts(window["since"]) == snapshot_at
        assert window["created"] == 4 and window["ended"]["deleted"] == 3 and window["ended"]["revoked"] == 2
        assert window["peak_live"] == 5  # from the second snapshot: nothing is live now
        # Five sessions ended in the window after 0.5 s or more; one had lived about 1.7 s.
        assert 0.5 <= window["mean_lifetime_seconds"] <= 1.5
        assert 1.0 <= window["p95_lifetime_seconds"] <= 2.5
        assert stats["ended_total"]["deleted"] == 4  # the lifetime totals are unchanged by the window

        # A window longer than the history: it starts at the oldest snapshot, and says so.
        long = (await client.get("/v1/stats", params={"window_seconds": 3600}, headers=auth())).json()
        assert ts(long["window"]["since"]) <= snapshot_at

        admin = (
            await client.get("/v1/admin/stats", params={"window_seconds": 1}, headers=auth(ADMIN_KEY))
        ).json()
        (acme,) = [entry for entry in admin["tenants"] if entry["tenant"] == "acme"]
        assert acme["window"] == window

        # A tenant younger than every snapshot counts from its beginning.
        await client.post("/v1/sessions", headers=auth(GLOBEX_KEY))
        globex = (
            await client.get("/v1/stats", params={"window_seconds": 60}, headers=auth(GLOBEX_KEY))
        ).json()
        assert globex["window"]["since"] is None and globex["window"]["created"] == 1
        assert globex["window"]["mean_lifetime_seconds"] is None


async def test_active_last_5m_and_stats_without_a_window(client) -> None:
    for _ in range(3):
        await create(client)
    stats = (await client.get("/v1/stats", headers=auth())).json()
    assert stats["active_last_5m"] == 3 and "window" not in stats


async def test_bad_windows_are_422_naming_the_parameter(client) -> None:
    for params, field in (
        ({"window_seconds": 0}, "window_seconds"),
        ({"window_seconds": 86401}, "window_seconds"),
        ({"window_seconds": "x"}, "window_seconds"),
        ({"window_secs": 5}, "window_secs"),
    ):
        body = assert_problem(
            await client.get("/v1/stats", params=params, headers=auth()), 422, "validation-error"
        )
        assert [error["field"] for error in body["errors"]] == [field]
