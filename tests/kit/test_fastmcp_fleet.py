"""Two replicas of a real FastMCP server (stateless, `BrokerSessionMiddleware`, one shared session state
store) behind the strict round-robin proxy, driven by the SDK's own client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from session_broker_client import SessionBroker, SessionNotFound

from tests.kit.kit_helpers import (
    SDK_NOT_FOUND,
    Fleet,
    KitBroker,
    broker_args,
    mcp_client,
    mcp_headers,
    start_fleet,
    tool_call,
)

SERVER = "examples.fleet.fastmcp_server"


@pytest.fixture(scope="module")
def fleet(kit_broker: KitBroker, kit_logs: Path) -> Iterator[Fleet]:
    state = kit_logs / "fastmcp-state"
    started = start_fleet(
        "fastmcp-own",
        SERVER,
        ["--mode", "own", "--state-dir", str(state), *broker_args(kit_broker)],
        kit_logs,
    )
    yield started
    started.stop()


def initialized_session(fleet: Fleet) -> str:
    ids = [entry["session_out"] for entry in fleet.log() if entry.get("rpc_method") == "initialize"]
    assert ids and ids[-1]
    return str(ids[-1])


async def test_twenty_tool_calls_succeed_with_one_session(fleet: Fleet, broker: SessionBroker) -> None:
    fleet.reset_log()
    async with mcp_client(fleet.url) as client:
        session_id = initialized_session(fleet)
        before = await broker.get(session_id)
        results = [await client.call_tool("add", {"a": n, "b": 2}) for n in range(20)]
        after = await broker.get(session_id)
    assert [result.is_error for result in results] == [False] * 20
    assert [result.structured_content for result in results] == [{"result": n + 2} for n in range(20)]
    calls = [entry for entry in fleet.log() if entry.get("rpc_method") == "tools/call"]
    assert {entry["session_in"] for entry in calls} == {session_id} and {e["upstream"] for e in calls} == {
        0,
        1,
    }
    assert after.last_seen_at > before.last_seen_at


async def test_per_session_state_written_on_one_replica_is_read_on_the_other(fleet: Fleet) -> None:
    fleet.reset_log()
    async with mcp_client(fleet.url) as client:
        session_id = initialized_session(fleet)
        written_on = (
            await client.call_tool("remember", {"key": "colour", "value": "teal"})
        ).structured_content
        reads = [(await client.call_tool("recall", {"key": "colour"})).structured_content for _ in range(4)]
    assert written_on is not None
    assert all(
        read is not None and read["value"] == "teal" and read["session"] == session_id for read in reads
    )
    readers = {read["replica"] for read in reads if read is not None}
    assert readers == {
        "fastmcp-own-0",
        "fastmcp-own-1",
    }  # read on the replica that wrote it, and on the other
    async with mcp_client(fleet.url) as stranger:  # another session does not see it
        assert (await stranger.call_tool("recall", {"key": "colour"})).structured_content["value"] is None


async def test_delete_through_one_replica_then_404_through_the_other_then_initialize_again(
    fleet: Fleet,
) -> None:
    async with httpx.AsyncClient() as http:
        opened = await http.post(fleet.url, json=_initialize(), headers=mcp_headers())
        session_id = opened.headers["mcp-session-id"]
        fleet.reset_log()
        assert (await http.delete(fleet.url, headers=mcp_headers(session_id))).status_code == 200
        gone = await http.post(
            fleet.url, json=tool_call("add", {"a": 1, "b": 1}), headers=mcp_headers(session_id)
        )
        assert gone.status_code == 404 and gone.content == SDK_NOT_FOUND
    first, second = fleet.log()[:2]
    assert first["method"] == "DELETE" and second["status"] == 404 and first["upstream"] != second["upstream"]
    async with mcp_client(fleet.url) as client:
        assert not (await client.call_tool("add", {"a": 1, "b": 1})).is_error


async def test_a_failed_initialize_leaves_no_session(fleet: Fleet, broker: SessionBroker) -> None:
    async with httpx.AsyncClient() as http:
        broken = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 5}}
        refused = await http.post(fleet.url, json=broken, headers=mcp_headers())
    assert "error" in refused.text  # the app refused the malformed handshake
    session_id = refused.headers.get("mcp-session-id")
    assert session_id is not None  # the broker session was created before the app ran...
    with pytest.raises(SessionNotFound) as ended:  # ...and ended once the app had failed the initialize
        await broker.get(session_id)
    assert ended.value.reason == "deleted"


def _initialize() -> dict[str, object]:
    return {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"},
        },
    }
