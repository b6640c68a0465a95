"""Two replicas of a real python-SDK MCP server (stateless, `BrokerSessionMiddleware`, the SDK's bearer
auth) behind the strict round-robin proxy, driven by the SDK's own client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import MCPError
from session_broker_client import SessionBroker

from examples.fleet.launch import Process, free_port, launch, stop, wait_until_listening
from tests.kit.kit_helpers import (
    FULL_KEY,
    FULL_TENANT_LIMIT,
    SDK_NOT_FOUND,
    Fleet,
    KitBroker,
    broker_args,
    eventually,
    mcp_client,
    mcp_headers,
    start_fleet,
    tool_call,
)

SERVER = "examples.fleet.sdk_server"
ALICE, MALLORY = "token-alice", "token-mallory"
ALICE_PRINCIPAL = "https://issuer.example|alice|fleet-client"


@pytest.fixture(scope="module")
def fleet(kit_broker: KitBroker, kit_logs: Path) -> Iterator[Fleet]:
    started = start_fleet("sdk-own", SERVER, ["--mode", "own", "--auth", *broker_args(kit_broker)], kit_logs)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def cached_fleet(kit_broker: KitBroker, kit_logs: Path) -> Iterator[Fleet]:
    args = ["--mode", "own", "--auth", "--near-cache", "5", *broker_args(kit_broker)]
    started = start_fleet("sdk-cached", SERVER, args, kit_logs)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def stock_fleet(kit_logs: Path) -> Iterator[Fleet]:
    started = start_fleet("sdk-stock", SERVER, ["--mode", "stock"], kit_logs)
    yield started
    started.stop()


def initialized_session(fleet: Fleet) -> str:
    """The id the last `initialize` through the proxy was given."""
    ids = [entry["session_out"] for entry in fleet.log() if entry.get("rpc_method") == "initialize"]
    assert ids and ids[-1], "no session id came back from initialize"
    return str(ids[-1])


async def gets_done(fleet: Fleet, session_id: str) -> None:
    """The SDK client opens its GET stream (405 here) and retries it once, 1 s later: wait for both, so
    that from then on the client's requests alternate strictly between the replicas."""

    async def both() -> bool:
        return sum(1 for e in fleet.log() if e["method"] == "GET" and e.get("session_in") == session_id) >= 2

    assert await eventually(both, timeout=6)


async def test_twenty_tool_calls_succeed_on_alternating_replicas_with_one_session(
    fleet: Fleet, broker: SessionBroker
) -> None:
    fleet.reset_log()
    async with mcp_client(fleet.url, ALICE) as client:
        session_id = initialized_session(fleet)
        before = await broker.get(session_id)
        results = [await client.call_tool("add", {"a": n, "b": 1}) for n in range(20)]
        after = await broker.get(session_id)
    assert [r.is_error for r in results] == [False] * 20
    assert [r.content[0].text for r in results] == [str(n + 1) for n in range(20)]  # type: ignore[union-attr]
    calls = [entry for entry in fleet.log() if entry.get("rpc_method") == "tools/call"]
    assert len(calls) == 20 and {entry["session_in"] for entry in calls} == {session_id}
    assert {entry["upstream"] for entry in calls} == {0, 1} and {entry["status"] for entry in calls} == {200}
    assert after.last_seen_at > before.last_seen_at
    assert after.principal == ALICE_PRINCIPAL and after.client_id == "fleet-client"
    assert after.metadata["mcp"]["clientInfo"]["name"] == "mcp" and after.protocol_version == "2025-11-25"


async def test_delete_through_one_replica_is_the_canonical_404_through_the_other(fleet: Fleet) -> None:
    fleet.reset_log()
    async with mcp_client(fleet.url, ALICE) as client:
        await client.call_tool("add", {"a": 1, "b": 1})
        session_id = initialized_session(fleet)
        await gets_done(fleet, session_id)
        async with httpx.AsyncClient() as http:
            deleted = await http.delete(fleet.url, headers=mcp_headers(session_id, ALICE))
            assert deleted.status_code == 200
            after = await http.post(
                fleet.url, json=tool_call("add", {"a": 1, "b": 2}), headers=mcp_headers(session_id, ALICE)
            )
        assert after.status_code == 404 and after.content == SDK_NOT_FOUND
        assert after.headers["content-type"] == "application/json"
        with pytest.raises(MCPError) as gone:
            await client.call_tool("add", {"a": 1, "b": 1})
        assert gone.value.error.message == "Session not found"
    log = fleet.log()
    delete_entry = next(
        entry for entry in log if entry["method"] == "DELETE" and entry["session_in"] == session_id
    )
    first_after = log[log.index(delete_entry) + 1]
    assert first_after["status"] == 404 and first_after["upstream"] != delete_entry["upstream"]
    async with mcp_client(fleet.url, ALICE) as again:  # the client can initialize again
        assert not (await again.call_tool("add", {"a": 2, "b": 2})).is_error
        assert initialized_session(fleet) != session_id


async def test_broker_outage_is_503_with_retry_after_never_404_and_the_session_survives(
    fleet: Fleet, running_broker: KitBroker
) -> None:
    fleet.reset_log()
    async with mcp_client(fleet.url, ALICE) as client:
        session_id = initialized_session(fleet)
        assert not (await client.call_tool("add", {"a": 1, "b": 1})).is_error
        running_broker.stop()
        try:
            for _ in range(4):
                with pytest.raises(MCPError) as unavailable:
                    await client.call_tool("add", {"a": 1, "b": 1})
                assert unavailable.value.error.code == -32603
        finally:
            running_broker.start()
        results = [await client.call_tool("add", {"a": n, "b": 0}) for n in range(4)]
        assert not any(result.is_error for result in results)
    calls = [entry for entry in fleet.log() if entry.get("rpc_method") == "tools/call"]
    during = calls[1:5]
    assert [entry["status"] for entry in during] == [503] * 4
    assert all(entry["retry_after"] == "2" for entry in during)
    assert {entry["upstream"] for entry in during} == {0, 1}  # both replicas, never a 404
    assert all(entry["status"] != 404 for entry in fleet.log())
    assert {entry["session_in"] for entry in calls} == {session_id}  # the same session carried on


async def test_another_principals_session_id_is_404_and_the_session_is_unharmed(
    fleet: Fleet, broker: SessionBroker
) -> None:
    async with mcp_client(fleet.url, ALICE) as client:
        session_id = initialized_session(fleet)
        async with httpx.AsyncClient() as http:
            for _ in range(2):  # through both replicas
                hijack = await http.post(
                    fleet.url,
                    json=tool_call("add", {"a": 1, "b": 1}),
                    headers=mcp_headers(session_id, MALLORY),
                )
                assert hijack.status_code == 404 and hijack.content == SDK_NOT_FOUND
            end_it = await http.delete(fleet.url, headers=mcp_headers(session_id, MALLORY))
            assert end_it.status_code == 404
        assert (await broker.get(session_id)).principal == ALICE_PRINCIPAL
        assert not (await client.call_tool("add", {"a": 3, "b": 4})).is_error


async def test_sessionless_protocol_clients_pass_through_untouched(
    fleet: Fleet, broker: SessionBroker
) -> None:
    created_before = (await broker.stats()).created_total
    fleet.reset_log()
    async with mcp_client(fleet.url, ALICE, mode="auto") as client:
        assert client.protocol_version == "2026-07-28"
        results = [await client.call_tool("add", {"a": n, "b": n}) for n in range(4)]
    assert not any(result.is_error for result in results)
    log = fleet.log()
    assert log and not any(entry.get("session_in") or entry.get("session_out") for entry in log)
    assert (await broker.stats()).created_total == created_before


async def test_request_outcomes_reach_the_broker_analytics(fleet: Fleet, broker: SessionBroker) -> None:
    def tool_calls(stats: Any) -> int:
        return next((m.requests for m in stats.requests.busiest_methods if m.method == "tools/call"), 0)

    before = tool_calls(await broker.stats())
    async with mcp_client(fleet.url, ALICE) as client:
        for n in range(5):
            await client.call_tool("add", {"a": n, "b": 1})

    async def reported() -> bool:
        return tool_calls(await broker.stats()) >= before + 5

    assert await eventually(reported, timeout=10, interval=0.25)


async def test_revoking_a_principal_is_a_404_on_both_replicas_within_a_second_with_the_near_cache(
    cached_fleet: Fleet, broker: SessionBroker
) -> None:
    async with mcp_client(cached_fleet.url, "token-carol") as client:
        session_id = initialized_session(cached_fleet)
        for n in range(6):
            assert not (await client.call_tool("add", {"a": n, "b": 1})).is_error
    # The client's DELETE on close ended that session; open one by hand and keep it.
    async with httpx.AsyncClient() as http:
        opened = await http.post(
            cached_fleet.url, json=_initialize(), headers=mcp_headers(None, "token-carol")
        )
        session_id = opened.headers["mcp-session-id"]
        for n in range(4):  # warm both replicas' near-caches
            call = await http.post(
                cached_fleet.url,
                json=tool_call("add", {"a": n, "b": 1}),
                headers=mcp_headers(session_id, "token-carol"),
            )
            assert call.status_code == 200
        hits = [cached_fleet.stats(index)["near_cache"]["hits"] for index in (0, 1)]
        assert all(count > 0 for count in hits), hits
        cached_fleet.reset_log()
        assert await broker.revoke(principal="https://issuer.example|carol|fleet-client") >= 1
        revoked_at = time.monotonic()
        timeline: list[tuple[float, int]] = []
        while time.monotonic() - revoked_at < 1.5:
            response = await http.post(
                cached_fleet.url,
                json=tool_call("add", {"a": 1, "b": 1}),
                headers=mcp_headers(session_id, "token-carol"),
            )
            timeline.append((time.monotonic() - revoked_at, response.status_code))
            await asyncio.sleep(0.02)
    upstreams = [entry["upstream"] for entry in cached_fleet.log()]
    assert len(upstreams) == len(timeline)
    for replica in (0, 1):
        seen = [
            (at, status)
            for (at, status), upstream in zip(timeline, upstreams, strict=True)
            if upstream == replica
        ]
        last_answered = max((at for at, status in seen if status == 200), default=0.0)
        assert last_answered < 1.0, (replica, seen)
        assert all(status == 404 for at, status in seen if at > last_answered), (replica, seen)
        assert any(status == 404 for _, status in seen)


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def _initialize(request_id: int = 0) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"},
        },
    }


@pytest.fixture
def quota_replica(running_broker: KitBroker, kit_logs: Path) -> Iterator[Process]:
    """One replica of tenant `kitfull` (at most 2 live sessions), answering 404s with -32001."""
    port = free_port()
    args = [
        "--port",
        str(port),
        "--mode",
        "own",
        "--not-found-code",
        "-32001",
        *broker_args(running_broker, FULL_KEY),
    ]
    process = launch("sdk-quota", SERVER, args, port, kit_logs)
    try:
        wait_until_listening(process)
        yield process
    finally:
        stop(process)


async def test_at_the_tenant_quota_initialize_fails_naming_it_and_leaves_no_session(
    quota_replica: Process, running_broker: KitBroker
) -> None:
    url = quota_replica.url + "/mcp"
    async with SessionBroker(running_broker.url, FULL_KEY) as full:
        await full.revoke(kind="mcp")
        async with httpx.AsyncClient() as http:
            for _ in range(FULL_TENANT_LIMIT):
                opened = await http.post(url, json=_initialize(), headers=mcp_headers())
                assert opened.status_code == 200 and opened.headers["mcp-session-id"]
            refused = await http.post(url, json=_initialize(7), headers=mcp_headers())
            assert refused.status_code == 429 and refused.headers["retry-after"] == "30"
            error = refused.json()
            assert error["id"] == 7 and "quota" in error["error"]["message"]
            assert error["error"]["data"] == {"quota": {"scope": "tenant", "limit": FULL_TENANT_LIMIT}}
            unknown = await http.post(url, json=tool_call("add"), headers=mcp_headers("no-such-session"))
            assert unknown.status_code == 404
            assert (
                unknown.content
                == b'{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"Session not found"}}'
            )
        refusals: list[str] = []
        try:
            async with mcp_client(url) as client:  # the SDK's client: its initialize fails
                await client.call_tool("add", {"a": 1, "b": 1})
        except* MCPError as group:
            refusals = [error.error.message for error in leaves(group) if isinstance(error, MCPError)]
        assert refusals and "quota" in refusals[0]
        assert len([session async for session in full.list()]) == FULL_TENANT_LIMIT  # nothing left behind
        assert await full.revoke(kind="mcp") == FULL_TENANT_LIMIT


async def test_without_the_kit_the_same_fleet_fails_and_our_404_is_the_sdks(
    stock_fleet: Fleet, fleet: Fleet
) -> None:
    """The control: stock stateful replicas behind the same proxy lose calls, and the canonical 404 of
    the kit is byte for byte what a stock replica answers."""
    outcomes = []
    async with mcp_client(stock_fleet.url) as client:
        for n in range(6):
            try:
                outcomes.append(not (await client.call_tool("add", {"a": n, "b": 1})).is_error)
            except MCPError:
                outcomes.append(False)
    assert outcomes.count(True) < 6
    async with httpx.AsyncClient() as http:
        stock = await http.post(
            stock_fleet.replicas[0].url + "/mcp", json=tool_call("add"), headers=mcp_headers("nope")
        )
        ours = await http.post(fleet.url, json=tool_call("add"), headers=mcp_headers("nope", ALICE))
    assert stock.status_code == ours.status_code == 404
    assert stock.content == ours.content == SDK_NOT_FOUND
    assert stock.headers["content-type"] == ours.headers["content-type"]
