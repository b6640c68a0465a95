"""`SessionBroker` against the real broker process: every operation's success and its error mapping."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from session_broker_client import (
    BrokerUnavailable,
    Event,
    MetadataTooLarge,
    PreconditionFailed,
    QuotaExceeded,
    RequestOutcome,
    RetryPolicy,
    SessionBroker,
    SessionExists,
    SessionIdRetired,
    SessionNotFound,
    TenantKeyRequired,
    Unauthorized,
    ValidationFailed,
)

from app.embedded import EmbeddedPostgres
from app.migrate import upgrade
from examples.fleet.launch import free_port
from tests.helpers import ADMIN_KEY, start_server, stop_server
from tests.kit.kit_helpers import FULL_KEY, FULL_TENANT_LIMIT, KIT_KEY, KitBroker, eventually

# Every character MCP allows in an id that needs percent-encoding in a path.
AWKWARD_ID_PREFIX = "a/b?c#d%2F+e=f&g;h"


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


async def test_create_get_touch_and_typed_results(broker: SessionBroker) -> None:
    principal = unique("alice")
    created = await broker.create(
        principal=principal,
        client_id="claude",
        protocol_version="2025-11-25",
        metadata={"mcp": {"clientInfo": {"name": "x"}}},
        idle_timeout_seconds=600,
    )
    assert created.kind == "mcp" and created.principal == principal and created.version == 1
    assert created.metadata == {"mcp": {"clientInfo": {"name": "x"}}}
    assert isinstance(created.expires_at, datetime) and created.expires_at.tzinfo is not None
    assert created.etag == '"1"'
    got = await broker.get(created.id, principal=principal)
    assert got == created
    touched = await broker.touch(created.id, principal=principal)
    assert touched.id == created.id and touched.expires_at >= created.expires_at and not touched.local
    assert (await broker.get(created.id)).last_seen_at >= created.last_seen_at


async def test_awkward_ids_round_trip_through_every_call(broker: SessionBroker) -> None:
    session_id = AWKWARD_ID_PREFIX + uuid.uuid4().hex
    registered = await broker.register(session_id, metadata={"k": 1})
    assert registered.id == session_id
    assert (await broker.get(session_id)).id == session_id
    assert (await broker.touch(session_id)).id == session_id
    assert (await broker.patch(session_id, metadata={"k": 2})).metadata == {"k": 2}
    with pytest.raises(SessionExists):
        await broker.register(session_id)
    await broker.delete(session_id)
    with pytest.raises(SessionNotFound) as ended:
        await broker.get(session_id)
    assert ended.value.reason == "deleted" and ended.value.status == 404
    with pytest.raises(SessionIdRetired) as retired:
        await broker.register(session_id)
    assert retired.value.reason == "deleted"


async def test_register_validates_the_id_and_create_the_body(broker: SessionBroker) -> None:
    with pytest.raises(ValidationFailed) as invalid_id:
        await broker.register("has space")
    assert invalid_id.value.errors[0]["field"] == "session_id"
    with pytest.raises(ValidationFailed) as invalid_timeout:
        await broker.create(idle_timeout_seconds=-5)
    assert "idle_timeout_seconds" in {error["field"] for error in invalid_timeout.value.errors}
    with pytest.raises(MetadataTooLarge) as too_large:
        await broker.create(metadata={"blob": "x" * 70_000})
    assert too_large.value.limit == 65536


async def test_unknown_sessions_and_other_principals_are_not_found(broker: SessionBroker) -> None:
    with pytest.raises(SessionNotFound) as missing:
        await broker.touch("no-such-session")
    assert missing.value.reason is None
    session = await broker.create(principal=unique("alice"))
    for call in (broker.get, broker.touch, broker.delete, broker.rotate):
        with pytest.raises(SessionNotFound):
            await call(session.id, principal="mallory")
    with pytest.raises(SessionNotFound):
        await broker.patch(session.id, owner="gw", principal="mallory")
    assert (await broker.get(session.id, principal=session.principal)).version == 1  # unharmed


async def test_patch_merges_and_honours_if_match(broker: SessionBroker) -> None:
    session = await broker.create(metadata={"keep": 1, "drop": 2})
    patched = await broker.patch(
        session.id, metadata={"drop": None, "new": 3}, owner="gw-1", if_match=session.etag
    )
    assert patched.metadata == {"keep": 1, "new": 3} and patched.owner == "gw-1" and patched.version == 2
    with pytest.raises(PreconditionFailed):
        await broker.patch(session.id, owner="gw-2", if_match=session.etag)
    cleared = await broker.patch(session.id, owner=None)
    assert cleared.owner is None
    with pytest.raises(ValueError, match="at least one"):
        await broker.patch(session.id)


async def test_list_follows_cursors_and_filters(broker: SessionBroker) -> None:
    principal = unique("lister")
    ids = {(await broker.create(principal=principal, owner="gw-list")).id for _ in range(5)}
    await broker.create(principal=unique("someone-else"), owner="gw-list")
    listed = [session async for session in broker.list(principal=principal, page_size=2)]
    assert {session.id for session in listed} == ids
    assert [session.id for session in listed] == sorted(ids)  # keyset order, no repeats
    page = await broker.list_page(principal=principal, limit=2)
    assert len(page.items) == 2 and page.next_cursor is not None


async def test_revoke_rotate_and_delete(broker: SessionBroker) -> None:
    principal = unique("revoked")
    sessions = [await broker.create(principal=principal) for _ in range(3)]
    assert await broker.revoke(principal=principal) == 3
    assert await broker.revoke(principal=principal) == 0  # idempotent
    with pytest.raises(SessionNotFound) as revoked:
        await broker.touch(sessions[0].id)
    assert revoked.value.reason == "revoked"
    with pytest.raises(ValueError, match="at least one filter"):
        await broker.revoke()

    old = await broker.create(metadata={"m": 1})
    new = await broker.rotate(old.id)
    assert new.id != old.id and new.metadata == {"m": 1} and new.version == old.version + 1
    with pytest.raises(SessionNotFound) as rotated:
        await broker.get(old.id)
    assert rotated.value.reason == "rotated"
    await broker.delete(new.id)
    with pytest.raises(SessionNotFound):
        await broker.delete(new.id)


async def test_stats_and_request_reports(broker: SessionBroker) -> None:
    before = await broker.stats()
    await broker.create()
    outcomes = [
        RequestOutcome("tools/call", True, 12.5),
        RequestOutcome("tools/call", False, 3),
        RequestOutcome("ping"),
    ]
    assert await broker.report_requests(outcomes) == 3
    after = await broker.stats()
    assert after.tenant == "kit" and after.live == before.live + 1
    assert after.created_total == before.created_total + 1
    assert after.requests.requests_total == before.requests.requests_total + 3
    assert after.requests.errors_total == before.requests.errors_total + 1
    assert after.limits["max_metadata_bytes"] == 65536
    assert any(kind.kind == "mcp" for kind in after.by_kind)


async def test_quota_exceeded_carries_scope_limit_and_retry_after(running_broker: KitBroker) -> None:
    async with SessionBroker(running_broker.url, FULL_KEY) as full:
        await full.revoke(kind="mcp")  # the tenant may hold sessions from another test
        for _ in range(FULL_TENANT_LIMIT):
            await full.create()
        with pytest.raises(QuotaExceeded) as refused:
            await full.create()
        assert refused.value.scope == "tenant" and refused.value.limit == FULL_TENANT_LIMIT
        assert refused.value.retry_after == 30 and refused.value.status == 429
        assert await full.revoke(kind="mcp") == FULL_TENANT_LIMIT


async def test_wrong_keys_are_unauthorized_or_forbidden(running_broker: KitBroker) -> None:
    async with SessionBroker(running_broker.url, "not-a-key-0123456789") as stranger:
        with pytest.raises(Unauthorized) as refused:
            await stranger.stats()
        assert refused.value.status == 401
    async with SessionBroker(running_broker.url, ADMIN_KEY) as admin:
        with pytest.raises(TenantKeyRequired):
            await admin.create()


async def test_unreachable_broker_is_unavailable_and_only_idempotent_calls_retry() -> None:
    policy = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)
    async with SessionBroker(f"http://127.0.0.1:{free_port()}", KIT_KEY, retry=policy) as gone:
        with pytest.raises(BrokerUnavailable) as unreachable:
            await gone.get("any")
        assert unreachable.value.status is None and unreachable.value.retry_after is None
        assert gone.calls["get"] == 3
        with pytest.raises(BrokerUnavailable):
            await gone.create()
        assert gone.calls["create"] == 1  # never retried blindly
        with pytest.raises(BrokerUnavailable):
            await gone.create(idempotency_key="k-1")
        assert gone.calls["create"] == 1 + 3  # retried once it is idempotent
        with pytest.raises(BrokerUnavailable):
            await gone.register("some-id")
        assert gone.calls["register"] == 1
        with pytest.raises(BrokerUnavailable):
            await gone.touch("any")
        assert gone.calls["touch"] == 2  # touch's tighter policy


@pytest.fixture
def outage_broker(kit_logs: Path) -> Iterator[tuple[EmbeddedPostgres, str, Path]]:
    """A broker on a database of its own, so the database can be stopped under it."""
    directory = Path(tempfile.mkdtemp(prefix="kit-outage-"))
    directory.chmod(0o755)
    database = EmbeddedPostgres(directory)
    upgrade(database.url)
    server = start_server(
        {
            "SESSION_BROKER_DATABASE_URL": database.url,
            "SESSION_BROKER_API_KEYS": f"kit={KIT_KEY}",
            "SESSION_BROKER_PURGE_ENABLED": "false",
            "SESSION_BROKER_DB_CONNECT_TIMEOUT_SECONDS": "1",
            "SESSION_BROKER_DB_ACQUIRE_TIMEOUT_SECONDS": "1",
        },
        kit_logs / "outage-broker.log",
    )
    try:
        yield database, server.base_url, directory
    finally:
        stop_server(server)
        with contextlib.suppress(Exception):
            database.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def test_a_store_outage_is_unavailable_with_retry_after_and_recovers(
    outage_broker: tuple[EmbeddedPostgres, str, Path],
) -> None:
    database, url, directory = outage_broker
    async with SessionBroker(url, KIT_KEY) as client:
        session = await client.create()
        database.stop()
        for call in (client.get, client.touch):
            with pytest.raises(BrokerUnavailable) as unavailable:
                await call(session.id)
            assert unavailable.value.status == 503 and unavailable.value.retry_after == 2
        # Retry-After (2 s) is longer than the policy may wait (1 s): no retry was made before it.
        assert client.calls["get"] == 1 and client.calls["touch"] == 1
        restarted = EmbeddedPostgres(directory)
        try:
            touched = await eventually(lambda: _touch_or_none(client, session.id), timeout=20, interval=0.3)
            assert touched is not None and touched.id == session.id
        finally:
            restarted.stop()


async def _touch_or_none(client: SessionBroker, session_id: str) -> object:
    try:
        return await client.touch(session_id)
    except BrokerUnavailable:
        return None


async def test_events_follow_lifecycle_and_resume_after_a_drop(
    broker: SessionBroker, running_broker: KitBroker, kit_logs: Path
) -> None:
    stream = broker.events()
    received: list[Event] = []
    arrived = asyncio.Event()

    async def collect() -> None:
        async for event in stream:
            received.append(event)
            arrived.set()

    def seen_so_far() -> str:  # what a failure prints: which frames did arrive, and when
        return f"received {[(e.type, e.id) for e in received]}, at {time.monotonic() - began:.1f} s"

    began = time.monotonic()
    collector = asyncio.create_task(collect())
    try:
        assert await eventually(lambda: _seen(received, "stream.open"), timeout=10), seen_so_far()
        session = await broker.create()
        await broker.delete(session.id)
        assert await eventually(lambda: _seen(received, "session.ended", session.id), timeout=5), (
            seen_so_far()
        )
        created = next(e for e in received if e.type == "session.created" and e.session_id == session.id)
        ended = next(e for e in received if e.type == "session.ended" and e.session_id == session.id)
        assert created.data["how"] == "created" and ended.data["reason"] == "deleted"
        assert int(created.id or 0) < int(ended.id or 0)

        # The stream's broker goes away; meanwhile another broker replica (same database) records a
        # session. When the first comes back, the stream resumes after the last id it saw: nothing lost.
        running_broker.stop()
        assert await eventually(lambda: _seen(received, "stream.disconnected"), timeout=10), seen_so_far()
        other = start_server(running_broker.env, kit_logs / "kit-broker-2.log")
        try:
            async with SessionBroker(other.base_url, KIT_KEY) as second:
                during_outage = await second.create()
        finally:
            stop_server(other)
        running_broker.start()
        resumed = await eventually(lambda: _seen(received, "session.created", during_outage.id), timeout=15)
        assert resumed, f"{during_outage.id} not among {seen_so_far()}"
        opens = [event for event in received if event.type == "stream.open"]
        assert len(opens) >= 2  # it reconnected
    finally:
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        if running_broker.server is None:
            running_broker.start()


async def _seen(received: list[Event], event_type: str, session_id: str | None = None) -> bool:
    return any(e.type == event_type and (session_id is None or e.session_id == session_id) for e in received)


async def test_broker_work_leases_marks_and_pending_requests(broker: SessionBroker) -> None:
    """`BrokerWork` against the real broker: one lease per session unless raised, marks, a pending
    request answered through `reply` and seen by `wait_pending`, refusals as typed errors."""
    from session_broker_client.errors import LeaseLost, LeasesFull, PendingRequestNotFound
    from session_broker_client.work import BrokerWork

    work = BrokerWork(broker)
    session = await broker.create()
    lease = await work.acquire_lease(session.id, "replica-a", 5)
    with pytest.raises(LeasesFull):
        await work.acquire_lease(session.id, "replica-b", 5)
    await work.set_max_leases(session.id, 2)
    second = await work.acquire_lease(session.id, "replica-b", 5)
    assert second.fencing_token > lease.fencing_token
    await work.renew_lease(session.id, lease.lease_id)
    await work.release_lease(session.id, lease.lease_id)
    with pytest.raises(LeaseLost):
        await work.renew_lease(session.id, lease.lease_id)
    mark = await work.begin_in_flight(session.id, 5, method="tools/call", holder="replica-a")
    await work.renew_in_flight(session.id, mark, 5)
    await work.end_in_flight(session.id, mark)
    pending_id = await work.record_pending(session.id, 3, "elicitation/create", "replica-a", 5)
    reply = b'{"jsonrpc":"2.0","id":3,"result":{"action":"decline"}}'
    assert await work.reply(session.id, reply) == "replica-a"
    state = await work.wait_pending(session.id, pending_id, 1)
    assert state.state == "answered" and state.response == {
        "jsonrpc": "2.0",
        "id": 3,
        "result": {"action": "decline"},
    }
    with pytest.raises(PendingRequestNotFound):
        await work.reply(session.id, b'{"jsonrpc":"2.0","id":4,"result":{}}')
