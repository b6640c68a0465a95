"""`SessionBroker` and the broker's lifecycle features against the real broker process: Idempotency-Key
on create (replays), per-session request limits, revoke of everything, the stats window; and the error
classes against the problem types `openapi.yaml` documents."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from session_broker_client import (
    IdempotencyKeyReused,
    SessionBroker,
    SessionNotFound,
    SessionRateLimited,
    SessionRequestLimit,
    ValidationFailed,
)
from session_broker_client.errors import PROBLEM_CLASSES, PROBLEM_TYPE_PREFIX, error_from_problem

from tests.kit.kit_helpers import FULL_KEY, KitBroker

OPENAPI = Path(__file__).resolve().parents[2] / "openapi.yaml"


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


def test_every_documented_problem_type_has_its_own_class_and_no_other() -> None:
    document = yaml.safe_load(OPENAPI.read_text())
    documented = {
        entry["type"].removeprefix(PROBLEM_TYPE_PREFIX) for entry in document["info"]["x-problem-types"]
    }
    assert set(PROBLEM_CLASSES) == documented
    assert len(set(PROBLEM_CLASSES.values())) == len(PROBLEM_CLASSES), "one class per type"
    for slug, cls in PROBLEM_CLASSES.items():
        error = error_from_problem(400, {"type": PROBLEM_TYPE_PREFIX + slug, "detail": "x"}, "7")
        assert type(error) is cls
        if hasattr(error, "retry_after"):
            assert error.retry_after == 7


async def test_create_with_an_idempotency_key_replays_and_refuses_another_body(
    broker: SessionBroker,
) -> None:
    key = unique("create")
    principal = unique("principal")
    first = await broker.create(principal=principal, metadata={"n": 1}, idempotency_key=key)
    assert first.replayed is False
    again = await broker.create(principal=principal, metadata={"n": 1}, idempotency_key=key)
    assert again.replayed is True
    assert again.id == first.id and again.version == first.version
    assert [session.id async for session in broker.list(principal=principal)] == [first.id]
    with pytest.raises(IdempotencyKeyReused) as reused:
        await broker.create(principal=principal, metadata={"n": 2}, idempotency_key=key)
    assert reused.value.status == 422
    unkeyed = await broker.create(principal=principal)
    assert unkeyed.replayed is False and unkeyed.id != first.id


async def test_max_requests_refuses_touches_past_the_limit(broker: SessionBroker) -> None:
    session = await broker.create(max_requests=2)
    assert session.max_requests == 2 and session.max_requests_per_minute == 0
    await broker.touch(session.id)
    await broker.touch(session.id)
    with pytest.raises(SessionRequestLimit) as refused:
        await broker.touch(session.id)
    assert refused.value.status == 429 and refused.value.limit == 2
    assert (await broker.get(session.id)).id == session.id  # still readable
    raised = await broker.patch(session.id, max_requests=4)
    assert raised.max_requests == 4
    await broker.touch(session.id)  # the third touch, now within the limit
    unlimited = await broker.create()
    assert unlimited.max_requests == 0  # the kit tenant's default: unlimited
    for _ in range(3):
        await broker.touch(unlimited.id)


async def test_max_requests_per_minute_is_rate_limited_with_retry_after(broker: SessionBroker) -> None:
    session = await broker.create(max_requests_per_minute=1)
    assert session.max_requests_per_minute == 1
    await broker.touch(session.id)
    with pytest.raises(SessionRateLimited) as refused:
        await broker.touch(session.id)
    assert refused.value.status == 429 and refused.value.limit == 1
    assert refused.value.retry_after is not None and 1 <= refused.value.retry_after <= 60


async def test_revoke_all_ends_every_session_of_the_tenant_only(
    broker: SessionBroker, running_broker: KitBroker
) -> None:
    mine = await broker.create()
    async with SessionBroker(running_broker.url, FULL_KEY) as full:
        await full.revoke(all=True)  # the tenant may hold sessions from another test
        first = await full.create()
        second = await full.create(kind="another-kind")
        assert await full.revoke(all=True) == 2
        assert await full.revoke(all=True) == 0
        for session in (first, second):
            with pytest.raises(SessionNotFound) as gone:
                await full.get(session.id)
            assert gone.value.reason == "revoked"
        with pytest.raises(ValueError):
            await full.revoke(kind="mcp", all=True)
        with pytest.raises(ValueError):
            await full.revoke()
    assert (await broker.get(mine.id)).id == mine.id  # another tenant's session is untouched


async def test_stats_window_counts_what_was_created_and_ended_in_it(broker: SessionBroker) -> None:
    assert (await broker.stats()).window is None
    for _ in range(3):  # a stats snapshot taken in between moves `since`: measure again
        before = await broker.stats(window_seconds=3600)
        first = await broker.create()
        await broker.create()
        await broker.delete(first.id)
        after = await broker.stats(window_seconds=3600)
        assert before.window is not None and after.window is not None
        if after.window.since == before.window.since:
            break
    assert before.window is not None and after.window is not None
    assert after.window.since == before.window.since
    assert after.window.seconds == 3600
    assert after.window.created == before.window.created + 2
    assert after.window.ended.get("deleted", 0) == before.window.ended.get("deleted", 0) + 1
    assert after.window.peak_live >= after.live
    with pytest.raises(ValidationFailed):
        await broker.stats(window_seconds=0)
