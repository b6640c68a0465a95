"""The touch near-cache against the real broker and its real event stream: it saves round trips, and
stops vouching for a session within a second of its end, or at once when it cannot hear the broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from session_broker_client import BrokerUnavailable, SessionBroker, SessionNotFound

from tests.kit.kit_helpers import KIT_KEY, KitBroker, eventually

WINDOW = 5.0  # longer than any bound asserted below, so only invalidation can explain a prompt 404


@pytest.fixture
async def cached(running_broker: KitBroker) -> AsyncIterator[SessionBroker]:
    async with SessionBroker(running_broker.url, KIT_KEY, near_cache_seconds=WINDOW) as client:
        await client.start()
        assert client.near_cache is not None
        assert await eventually(_connected(client), timeout=10)
        yield client


def _connected(client: SessionBroker) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return client.near_cache is not None and client.near_cache.connected

    return check


async def _ended_within(client: SessionBroker, session_id: str, principal: str | None, bound: float) -> float:
    """Touch every 20 ms until the session is reported gone; returns how long that took."""
    started = time.monotonic()
    while time.monotonic() - started < bound + 1.0:
        try:
            await client.touch(session_id, principal=principal)
        except SessionNotFound:
            return time.monotonic() - started
        await _sleep(0.02)
    raise AssertionError(f"still answered after {bound + 1.0} s")


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def test_recent_touches_are_answered_locally(cached: SessionBroker, broker: SessionBroker) -> None:
    session = await broker.create(principal="alice-nc")
    first = await cached.touch(session.id, principal="alice-nc")
    assert not first.local
    answers = [await cached.touch(session.id, principal="alice-nc") for _ in range(10)]
    assert all(answer.local for answer in answers)
    assert cached.calls["touch"] == 1
    assert cached.near_cache is not None and cached.near_cache.stats.hits == 10


async def test_a_cached_session_is_never_answered_for_another_principal(
    cached: SessionBroker, broker: SessionBroker
) -> None:
    session = await broker.create(principal="alice-nc")
    await cached.touch(session.id, principal="alice-nc")
    with pytest.raises(SessionNotFound):
        await cached.touch(session.id, principal="mallory")
    assert (await cached.touch(session.id, principal="alice-nc")).local


@pytest.mark.parametrize("how", ["delete", "revoke", "rotate"])
async def test_an_ended_session_stops_being_answered_within_a_second(
    cached: SessionBroker, broker: SessionBroker, how: str
) -> None:
    principal = f"p-{uuid.uuid4().hex[:8]}"
    session = await broker.create(principal=principal)
    await cached.touch(session.id, principal=principal)
    assert (await cached.touch(session.id, principal=principal)).local
    if how == "delete":
        await broker.delete(session.id)
    elif how == "revoke":
        assert await broker.revoke(principal=principal) == 1
    else:
        await broker.rotate(session.id)
    assert await _ended_within(cached, session.id, principal, 1.0) < 1.0
    assert cached.near_cache is not None and cached.near_cache.stats.invalidations >= 1


async def test_entries_never_outlive_the_sessions_own_expiry(
    cached: SessionBroker, broker: SessionBroker
) -> None:
    """Idle timeout 2 s: a real touch moves expiry to now + 2 s, so (less the 1 s skew margin) a local
    answer may follow it by at most 1 s, although the window is 5 s."""
    session = await broker.create(idle_timeout_seconds=2)
    last_real = time.monotonic()
    deadline = last_real + 3.0
    while time.monotonic() < deadline:
        touched = await cached.touch(session.id)
        now = time.monotonic()
        if touched.local:
            assert now - last_real <= 1.05
        else:
            last_real = now
        await _sleep(0.05)
    assert cached.calls["touch"] >= 3  # it kept going back to the broker


async def test_without_the_event_stream_every_touch_goes_to_the_broker(
    cached: SessionBroker, broker: SessionBroker, running_broker: KitBroker
) -> None:
    session = await broker.create()
    await cached.touch(session.id)
    assert (await cached.touch(session.id)).local
    running_broker.stop()
    try:
        assert await eventually(lambda: _not_connected(cached), timeout=10)
        # The window has not run out, but a cache that cannot hear about ends must not answer.
        with pytest.raises(BrokerUnavailable):
            await cached.touch(session.id)
    finally:
        running_broker.start()
    assert await eventually(_connected(cached), timeout=15)
    assert not (await cached.touch(session.id)).local
    assert (await cached.touch(session.id)).local


async def _not_connected(client: SessionBroker) -> bool:
    return client.near_cache is not None and not client.near_cache.connected
