"""The stateful tier: two replicas of a stateful SDK server with `BrokerAwareSessionManager` and the
middleware in register mode, behind the strict round-robin proxy, driven by the SDK's own client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from session_broker_client import SessionBroker

from tests.kit.kit_helpers import (
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


@pytest.fixture(scope="module")
def fleet(kit_broker: KitBroker, kit_logs: Path) -> Iterator[Fleet]:
    started = start_fleet("sdk-register", SERVER, ["--mode", "register", *broker_args(kit_broker)], kit_logs)
    yield started
    started.stop()


def initialized_session(fleet: Fleet) -> str:
    ids = [entry["session_out"] for entry in fleet.log() if entry.get("rpc_method") == "initialize"]
    assert ids and ids[-1]
    return str(ids[-1])


async def test_the_other_replica_adopts_the_session_with_its_client_info(
    fleet: Fleet, broker: SessionBroker
) -> None:
    fleet.reset_log()
    adopted_before = sum(fleet.stats(index)["manager"]["adopted"] for index in (0, 1))
    async with mcp_client(fleet.url) as client:
        session_id = initialized_session(fleet)
        registered = await broker.get(session_id)
        results = [await client.call_tool("whoami", {}) for _ in range(20)]
    assert [result.is_error for result in results] == [False] * 20
    answers = [result.structured_content for result in results]
    assert {answer["replica"] for answer in answers if answer} == {"sdk-register-0", "sdk-register-1"}
    # Both replicas know the client: the adopting one rebuilt it from the broker session's metadata.
    assert all(answer and answer["client"] == "mcp" for answer in answers)
    calls = [entry for entry in fleet.log() if entry.get("rpc_method") == "tools/call"]
    assert {entry["session_in"] for entry in calls} == {session_id} and {e["upstream"] for e in calls} == {
        0,
        1,
    }
    assert registered.metadata["mcp"]["clientInfo"]["name"] == "mcp"
    assert registered.protocol_version == "2025-11-25"
    assert sum(fleet.stats(index)["manager"]["adopted"] for index in (0, 1)) == adopted_before + 1


async def test_delete_elsewhere_drops_the_local_session_and_answers_404(fleet: Fleet) -> None:
    fleet.reset_log()
    async with httpx.AsyncClient() as http:
        opened = await http.post(fleet.url, json=_initialize(), headers=mcp_headers())
        session_id = opened.headers["mcp-session-id"]
        for _ in range(2):  # one request on each replica: both hold a local transport now
            call = await http.post(fleet.url, json=tool_call("whoami"), headers=mcp_headers(session_id))
            assert call.status_code == 200
        for index in (0, 1):
            assert session_id in fleet.stats(index)["manager"]["local_session_ids"], index
        assert (await http.delete(fleet.url, headers=mcp_headers(session_id))).status_code == 200
        for _ in range(2):
            gone = await http.post(fleet.url, json=tool_call("whoami"), headers=mcp_headers(session_id))
            assert gone.status_code == 404 and gone.content == SDK_NOT_FOUND

    async def dropped() -> bool:
        # By id: other tests' sessions may come and go on the replicas meanwhile.
        return all(session_id not in fleet.stats(index)["manager"]["local_session_ids"] for index in (0, 1))

    # The session.ended event reached both managers: events wait for older transactions anywhere on the
    # cluster and for the WAL flush (app/events.py), so allow for a busy machine.
    assert await eventually(dropped, timeout=10)


async def test_if_the_broker_cannot_register_the_client_gets_503_and_no_local_session(
    fleet: Fleet, running_broker: KitBroker
) -> None:
    local_before = [fleet.stats(index)["manager"]["local_sessions"] for index in (0, 1)]
    running_broker.stop()
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(2):
                refused = await http.post(fleet.url, json=_initialize(3), headers=mcp_headers())
                assert refused.status_code == 503 and refused.headers["retry-after"] == "2"
                assert refused.json()["error"]["code"] == -32603 and refused.json()["id"] == 3
                assert "mcp-session-id" not in refused.headers
        assert [fleet.stats(index)["manager"]["local_sessions"] for index in (0, 1)] == local_before
    finally:
        running_broker.start()
    async with mcp_client(fleet.url) as client:  # and once the broker is back, sessions open again
        assert not (await client.call_tool("whoami", {})).is_error


async def test_an_unknown_id_is_404_on_every_replica(fleet: Fleet) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(2):
            unknown = await http.post(
                fleet.url, json=tool_call("whoami"), headers=mcp_headers("never-issued")
            )
            assert unknown.status_code == 404 and unknown.content == SDK_NOT_FOUND


def _initialize(request_id: int = 0) -> dict[str, object]:
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
