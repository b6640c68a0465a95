"""Work across replicas with the real SDK (mcp 2.3.x): two replicas of a stateful SDK server
(`BrokerAwareSessionManager`, the middleware in register mode) behind the strict round-robin proxy, the
SDK's own client. A tool that elicits or samples on one replica completes when the client's reply lands on
the other; a tool call longer than the session's idle timeout completes and the session lives on;
progress notifications keep flowing; a holder that is SIGKILLed leaves its request to time out, its late
reply is refused cleanly, and the other replica takes the stream lease at once."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CreateMessageResult, ElicitResult, ListRootsResult, Root, TextContent
from session_broker_client import SessionBroker
from session_broker_client.errors import PendingRequestEnded
from session_broker_client.work import BrokerWork

from tests.kit.kit_helpers import (
    Fleet,
    KitBroker,
    broker_args,
    eventually,
    mcp_headers,
    start_fleet,
    tool_call,
)

SERVER = "examples.fleet.sdk_server"
PENDING_TIMEOUT = 3
LEASE_TTL = 2


@pytest.fixture(scope="module")
def fleet(kit_broker: KitBroker, kit_logs: Path) -> Iterator[Fleet]:
    args = [
        "--mode",
        "register",
        "--idle-timeout",
        "1",
        "--pending-timeout",
        str(PENDING_TIMEOUT),
        "--lease-ttl",
        str(LEASE_TTL),
        *broker_args(kit_broker),
    ]
    started = start_fleet("sdk-cross", SERVER, args, kit_logs)
    yield started
    started.stop()


async def elicited(context: Any, params: Any) -> ElicitResult:
    return ElicitResult(action="accept", content={"n": 7})


async def sampled(context: Any, params: Any) -> CreateMessageResult:
    return CreateMessageResult(role="assistant", content=TextContent(type="text", text="hello"), model="test")


@asynccontextmanager
async def client_of(url: str, **callbacks: Any) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(timeout=httpx2.Timeout(30.0)) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy", **callbacks) as client,
    ):
        yield client


def crossed(fleet: Fleet, method: str) -> int:
    """How many of the tool calls named `method`'s replies (the client's next POST without an RPC method,
    i.e. a JSON-RPC response) went to the other upstream."""
    log = fleet.log()
    count = 0
    for index, entry in enumerate(log):
        if entry.get("rpc_method") != method:
            continue
        reply = next(
            (e for e in log[index + 1 :] if e["method"] == "POST" and e.get("rpc_method") is None), None
        )
        if reply is not None and reply["upstream"] != entry["upstream"]:
            count += 1
    return count


async def test_elicitation_completes_when_the_reply_lands_on_the_other_replica(fleet: Fleet) -> None:
    fleet.reset_log()
    async with client_of(fleet.url, elicitation_callback=elicited) as client:
        results = [await client.call_tool("ask", {}) for _ in range(10)]
    assert [result.is_error for result in results] == [False] * 10, [r.content for r in results]
    assert [result.structured_content["n"] for result in results] == [7] * 10
    assert {result.structured_content["replica"] for result in results} == {"sdk-cross-0", "sdk-cross-1"}
    assert crossed(fleet, "tools/call") >= 5  # strict round-robin: the reply is the next request


async def test_sampling_completes_when_the_reply_lands_on_the_other_replica(fleet: Fleet) -> None:
    fleet.reset_log()
    async with client_of(fleet.url, sampling_callback=sampled) as client:
        results = [await client.call_tool("summarize", {}) for _ in range(10)]
    assert [result.is_error for result in results] == [False] * 10, [r.content for r in results]
    assert [result.structured_content["text"] for result in results] == ["hello"] * 10
    assert crossed(fleet, "tools/call") >= 5


async def test_roots_complete_when_the_tool_runs_on_the_stream_holder(
    fleet: Fleet, broker: SessionBroker
) -> None:
    """`list_roots()` goes out on the standalone GET stream of the replica that asks; on the replica that
    holds the session's stream it completes wherever the client's reply lands."""

    async def listed(context: Any) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri="file:///work", name="work")])

    fleet.reset_log()
    async with client_of(fleet.url, list_roots_callback=listed) as client:
        session_id = next(e["session_out"] for e in fleet.log() if e.get("rpc_method") == "initialize")
        lease = await _stream_lease(broker, session_id)
        holder_index = next(
            i for i, r in enumerate(fleet.replicas) if lease["holder"].endswith(f"-{r.popen.pid}")
        )
        for _ in range(3):
            await _steer(fleet, holder_index)
            result = await asyncio.wait_for(client.call_tool("roots", {}), 10)
            assert not result.is_error, result.content
            assert result.structured_content == {
                "replica": f"sdk-cross-{holder_index}",
                "roots": ["file:///work"],
            }
    replies = [e for e in fleet.log() if e["method"] == "POST" and e.get("rpc_method") is None]
    assert {e["upstream"] for e in replies} == {1 - holder_index}  # every reply landed on the other replica


async def test_roots_asked_with_list_roots_complete_on_every_replica(fleet: Fleet) -> None:
    """The kit's `list_roots(ctx)` asks on the tool call's own stream, so the replica that does not hold
    the session's GET stream gets the roots too; the replies land on the other replica."""

    async def listed(context: Any) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri="file:///work", name="work")])

    fleet.reset_log()
    async with client_of(fleet.url, list_roots_callback=listed) as client:
        results = [await asyncio.wait_for(client.call_tool("roots_here", {}), 10) for _ in range(10)]
    assert [result.is_error for result in results] == [False] * 10, [r.content for r in results]
    assert {tuple(result.structured_content["roots"]) for result in results} == {("file:///work",)}
    assert {result.structured_content["replica"] for result in results} == {"sdk-cross-0", "sdk-cross-1"}
    assert crossed(fleet, "tools/call") >= 5


async def test_a_3_second_call_outlives_a_1_second_idle_timeout_with_progress(
    fleet: Fleet, broker: SessionBroker
) -> None:
    fleet.reset_log()
    marks_before = sum(fleet.stats(i)["broker_calls"].get("begin_in_flight", 0) for i in (0, 1))
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with client_of(fleet.url) as client:
        session_id = next(e["session_out"] for e in fleet.log() if e.get("rpc_method") == "initialize")
        started = time.monotonic()
        result = await client.call_tool("slow", {"seconds": 3}, progress_callback=on_progress)
        took = time.monotonic() - started
        assert not result.is_error, result.content
        assert took >= 3
        assert seen == [1, 2, 3, 4, 5, 6]  # every progress notification reached the client, in order
        # Live after the call, which its replica marked in flight (once: halfway to the touch's expiry) ...
        assert (await broker.get(session_id)).id == session_id
        marks = sum(fleet.stats(i)["broker_calls"].get("begin_in_flight", 0) for i in (0, 1))
        assert marks == marks_before + 1
        again = await client.call_tool("slow", {"seconds": 0.5})
        assert not again.is_error
        # ... and then idle expiry applies again.
        await asyncio.sleep(1.5)
        with pytest.raises(Exception):  # noqa: B017 (SessionNotFound)
            await broker.get(session_id)


async def test_a_reply_nobody_waits_for_is_refused_and_counted(fleet: Fleet, kit_broker: KitBroker) -> None:
    fleet.reset_log()
    async with httpx.AsyncClient() as http:
        opened = await http.post(fleet.url, json=_initialize(), headers=mcp_headers())
        session_id = opened.headers["mcp-session-id"]
        before = await _refused(kit_broker)
        for request_id in (999, "nope"):
            reply = {"jsonrpc": "2.0", "id": request_id, "result": {"action": "accept", "content": {"n": 1}}}
            refused = await http.post(fleet.url, json=reply, headers=mcp_headers(session_id))
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"]["code"] == -32600
        assert await _refused(kit_broker) == before + 2
        # The session is untouched by it: a tool call still works.
        call = await http.post(
            fleet.url, json=tool_call("add", {"a": 1, "b": 2}), headers=mcp_headers(session_id)
        )
        assert call.status_code == 200 and '"text":"3"' in call.text, call.text


def _initialize() -> dict[str, Any]:
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


# Last: it kills a replica of the module's fleet.
async def test_a_holder_killed_mid_elicitation(
    fleet: Fleet, broker: SessionBroker, kit_broker: KitBroker
) -> None:
    """The replica that holds a pending elicitation (and the session's stream lease) is SIGKILLed: the
    request ends within its deadline, the client's later reply is refused cleanly and changes nothing, and
    the other replica takes the session's lease at once."""
    work = BrokerWork(broker)
    release, arrived = asyncio.Event(), asyncio.Event()
    asked: list[Any] = []

    async def slow_answer(context: Any, params: Any) -> ElicitResult:
        asked.append(context.request_id)
        arrived.set()
        await release.wait()
        return ElicitResult(action="accept", content={"n": 1})

    fleet.reset_log()
    async with client_of(fleet.url, elicitation_callback=slow_answer) as client:
        session_id = next(e["session_out"] for e in fleet.log() if e.get("rpc_method") == "initialize")
        lease = await _stream_lease(broker, session_id)
        holder_index = next(
            i for i, r in enumerate(fleet.replicas) if lease["holder"].endswith(f"-{r.popen.pid}")
        )
        await _steer(fleet, holder_index)  # the tool call goes to the replica that holds the stream
        call = asyncio.create_task(client.call_tool("ask", {}))
        await asyncio.wait_for(arrived.wait(), 10)
        recorded_at = time.monotonic()
        assert fleet.log()[-1]["upstream"] == holder_index
        # The fleet's sessions idle out after 1 s: stand in for the client's other traffic meanwhile.
        keep_alive = asyncio.create_task(_keep_touching(broker, session_id))
        fleet.replicas[holder_index].popen.send_signal(signal.SIGKILL)
        # Within its deadline the request has ended: a reply to it now is refused and changes nothing.
        request_id = asked[0]
        reply = (
            b'{"jsonrpc":"2.0","id":%s,"result":{"action":"accept","content":{"n":1}}}'
            % str(request_id).encode()
        )
        # The request was recorded before the client saw it, so its deadline has passed by now.
        await asyncio.sleep(PENDING_TIMEOUT + 0.1 - (time.monotonic() - recorded_at))
        with pytest.raises(PendingRequestEnded) as refused:
            await work.reply(session_id, reply)
        assert refused.value.problem["state"] == "timed_out"
        # The dead holder's stream lease has lapsed by now (TTL < deadline): the survivor takes it at once.
        survivor = fleet.replicas[1 - holder_index]
        shown = await _session(broker, session_id)
        if shown["owner_alive"]:  # the client's GET retry reached the survivor first and took it over
            taken = shown["leases"][0]
            assert taken["holder"].endswith(f"-{survivor.popen.pid}")
        else:
            taken = vars(await work.acquire_lease(session_id, survivor.url, LEASE_TTL))
        assert taken["fencing_token"] > lease["fencing_token"]
        # The client's own late reply, sent through the proxy to the survivor, is refused cleanly too.
        refused_before = await _refused(kit_broker)
        await _steer(fleet, 1 - holder_index)
        release.set()
        with pytest.raises(Exception):  # noqa: B017 (its replica died: the call cannot complete)
            await asyncio.wait_for(call, 10)

        async def counted() -> bool:
            return await _refused(kit_broker) == refused_before + 1

        assert await eventually(counted)
        keep_alive.cancel()
        replies = [e for e in fleet.log() if e["method"] == "POST" and e.get("rpc_method") is None]
        assert replies[-1]["upstream"] == 1 - holder_index and replies[-1]["status"] == 400


async def _keep_touching(broker: SessionBroker, session_id: str) -> None:
    while True:
        await broker.touch(session_id)
        await asyncio.sleep(0.3)


async def _stream_lease(broker: SessionBroker, session_id: str) -> dict[str, Any]:
    """The session's stream lease, once the client's GET stream has taken it."""
    for _ in range(100):
        shown = await _session(broker, session_id)
        if shown["leases"]:
            lease: dict[str, Any] = shown["leases"][0]
            return lease
        await asyncio.sleep(0.05)
    raise AssertionError("the client opened no stream")


async def _session(broker: SessionBroker, session_id: str) -> dict[str, Any]:
    response = await broker._http.get(f"/v1/sessions/{session_id}")
    assert response.status_code == 200, response.text
    shown: dict[str, Any] = response.json()
    return shown


async def _steer(fleet: Fleet, index: int) -> None:
    """Make the proxy's next request go to upstream `index` (a request to a path outside MCP)."""
    async with httpx.AsyncClient() as http:
        if fleet.log()[-1]["upstream"] == index:
            await http.get(fleet.proxy.url + "/elsewhere")


async def _refused(kit_broker: KitBroker) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(kit_broker.url + "/metrics")).text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("session_broker_pending_replies_refused_total{")
    )
