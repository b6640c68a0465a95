"""Expiry warnings on a real server (EXPIRY_WARNING_SECONDS=3), seen by a client of the event stream, in
real time: one `session.expiring` about 3 s before a session expires; a touch that moves the expiry out of
the window re-arms it; an ended session gets none."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from tests.helpers import EventStream, LiveServer, start_server, stop_server, ts

KEY = "warn-key-0123456789abcdef"
HEADERS = {"Authorization": f"Bearer {KEY}"}
WARNING = 3
INTERVAL = 0.5
# A warning is written at the first purge run after `expires_at - WARNING` (at most 1.5 intervals later,
# plus the run) and streamed within the 0.5 s poll: early never, late by at most this much.
LATE = 1.5 * INTERVAL + 1.0


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "SESSION_BROKER_DATABASE_URL": database_url,
        "SESSION_BROKER_API_KEYS": f"warn={KEY}",
        "SESSION_BROKER_PURGE_INTERVAL_SECONDS": str(INTERVAL),
        "SESSION_BROKER_EXPIRY_WARNING_SECONDS": str(WARNING),
    }
    live = start_server(env, tmp_path_factory.mktemp("warnings") / "server.log")
    yield live
    stop_server(live)


def path(session_id: str) -> str:
    return "/v1/sessions/" + quote(session_id, safe="")


def assert_warned_on_time(arrived: float, payload: dict, expires_at: str) -> None:
    due = ts(expires_at).timestamp() - WARNING
    assert due - 0.05 <= arrived <= due + LATE, (arrived - due, payload)
    assert payload["data"]["id"] == payload["session_id"]
    assert ts(payload["data"]["expires_at"]) == ts(expires_at)
    assert 0 < payload["data"]["expires_in_seconds"] <= WARNING


async def test_one_warning_before_expiry_a_second_after_a_touch_and_none_for_an_ended_session(server) -> None:
    async with (
        EventStream(server, KEY, types={"session.expiring", "session.ended"}) as events,
        httpx.AsyncClient(base_url=server.base_url, headers=HEADERS) as api,
    ):
        left = (await api.post("/v1/sessions", json={"idle_timeout_seconds": 6})).json()
        touched = (await api.post("/v1/sessions", json={"idle_timeout_seconds": 6})).json()
        deleted = (await api.post("/v1/sessions", json={"idle_timeout_seconds": 6})).json()
        assert (await api.delete(path(deleted["id"]))).status_code == 204
        short = (await api.post("/v1/sessions", json={"idle_timeout_seconds": 2})).json()
        born = time.time()

        # The first warning of the one that will be touched, then the touch (out of the window again).
        assert await events.wait_for(lambda: events.of(touched["id"], "session.expiring"), timeout=8)
        ((arrived, payload),) = events.of(touched["id"], "session.expiring")
        assert_warned_on_time(arrived, payload, touched["expires_at"])
        moved = (await api.post(path(touched["id"]) + "/touch")).json()
        assert ts(moved["expires_at"]).timestamp() - time.time() > WARNING

        # The untouched one: one warning, then it expires.
        assert await events.wait_for(lambda: events.of(left["id"], "session.ended"), timeout=8)
        ((arrived, payload),) = events.of(left["id"], "session.expiring")
        assert_warned_on_time(arrived, payload, left["expires_at"])

        # The touched one comes close again: a second warning, and it has not ended.
        assert await events.wait_for(
            lambda: len(events.of(touched["id"], "session.expiring")) == 2, timeout=8
        )
        arrived, payload = events.of(touched["id"], "session.expiring")[1]
        assert_warned_on_time(arrived, payload, moved["expires_at"])
        await asyncio.sleep(max(0.0, ts(moved["expires_at"]).timestamp() - time.time() - 0.3))
        assert events.of(touched["id"], "session.ended") == []
        assert (await api.get(path(touched["id"]))).status_code == 200
        await asyncio.sleep(LATE)
    assert len(events.of(left["id"], "session.expiring")) == 1  # one per approach, never repeated
    # Shorter than the window: inside it from birth, warned by the next purge run, then it expires.
    ((arrived, payload),) = events.of(short["id"], "session.expiring")
    assert arrived - born <= LATE and ts(payload["data"]["expires_at"]) == ts(short["expires_at"])
    assert [p["data"]["reason"] for _, p in events.of(short["id"], "session.ended")] == ["expired_idle"]
    assert events.of(deleted["id"], "session.expiring") == []  # ended first: no warning
    assert [payload["data"]["reason"] for _, payload in events.of(deleted["id"], "session.ended")] == [
        "deleted"
    ]
