"""JSON Merge Patch with ETag / If-Match, and keyset pagination of the list."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.helpers import assert_problem, auth, create, path

MERGE = {"content-type": "application/merge-patch+json"}


async def patch(
    client: httpx.AsyncClient, session_id: str, document: object, **headers: str
) -> httpx.Response:
    import orjson

    return await client.patch(
        path(session_id), content=orjson.dumps(document), headers={**auth(), **MERGE, **headers}
    )


async def test_merge_patch_follows_rfc_7396(client: httpx.AsyncClient) -> None:
    session = await create(client, metadata={"a": 1, "nested": {"keep": 1, "drop": 2}, "list": [1, 2]})
    response = await patch(
        client,
        session["id"],
        {"metadata": {"b": 2, "nested": {"drop": None, "new": 3}, "list": [3]}, "owner": "gw-2"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["metadata"] == {"a": 1, "b": 2, "nested": {"keep": 1, "new": 3}, "list": [3]}
    assert body["owner"] == "gw-2" and body["version"] == 2
    assert response.headers["etag"] == '"2"'
    cleared = await patch(client, session["id"], {"owner": None, "protocol_version": "2025-06-18"})
    assert cleared.json()["owner"] is None and cleared.json()["protocol_version"] == "2025-06-18"
    emptied = await patch(client, session["id"], {"metadata": None})
    assert emptied.json()["metadata"] == {}
    got = await client.get(path(session["id"]), headers=auth())
    assert got.headers["etag"] == emptied.headers["etag"] == '"4"'


async def test_plain_json_content_type_is_accepted_for_patch(client: httpx.AsyncClient) -> None:
    session = await create(client)
    response = await client.patch(path(session["id"]), json={"client_id": "c1"}, headers=auth())
    assert response.status_code == 200 and response.json()["client_id"] == "c1"


async def test_a_no_op_patch_keeps_the_version(client: httpx.AsyncClient) -> None:
    session = await create(client, owner="gw-1")
    response = await patch(client, session["id"], {"owner": "gw-1"})
    assert response.json()["version"] == 1
    assert (await patch(client, session["id"], {})).json()["version"] == 1


async def test_if_match(client: httpx.AsyncClient) -> None:
    session = await create(client)
    stale = await patch(client, session["id"], {"owner": "a"}, **{"If-Match": '"7"'})
    assert assert_problem(stale, 412, "precondition-failed")["etag"] == '"1"'
    weak = await patch(client, session["id"], {"owner": "a"}, **{"If-Match": 'W/"1"'})
    assert weak.status_code == 412  # If-Match uses the strong comparison
    ok = await patch(client, session["id"], {"owner": "a"}, **{"If-Match": '"5", "1"'})
    assert ok.status_code == 200 and ok.headers["etag"] == '"2"'
    assert (await patch(client, session["id"], {"owner": "b"}, **{"If-Match": "*"})).status_code == 200
    lost = await patch(client, session["id"], {"owner": "c"}, **{"If-Match": '"2"'})
    assert lost.status_code == 412
    assert (await client.get(path(session["id"]), headers=auth())).json()["owner"] == "b"


async def test_concurrent_patches_lose_no_update(client: httpx.AsyncClient) -> None:
    session = await create(client)
    await asyncio.gather(*(patch(client, session["id"], {"metadata": {f"k{i}": i}}) for i in range(20)))
    final = (await client.get(path(session["id"]), headers=auth())).json()
    assert final["metadata"] == {f"k{i}": i for i in range(20)}
    assert final["version"] == 21


@pytest.mark.parametrize(
    ("document", "field", "status"),
    [
        ({"kind": "sse"}, "kind", 422),
        ({"principal": "x"}, "principal", 422),
        ({"idle_timeout_seconds": 5}, "idle_timeout_seconds", 422),
        ({"metadata": [1]}, "metadata", 422),
        ({"owner": 5}, "owner", 422),
        ([{"op": "replace"}], "body", 422),
        ("string", "body", 422),
    ],
)
async def test_patch_rejects_bad_documents_and_changes_nothing(
    client: httpx.AsyncClient, document: object, field: str, status: int
) -> None:
    session = await create(client, owner="gw-1")
    response = await patch(client, session["id"], document)
    problem = assert_problem(response, status, "validation-error")
    assert field in {error["field"] for error in problem["errors"]}
    after = (await client.get(path(session["id"]), headers=auth())).json()
    # A GET of one session also shows its stream leases.
    assert {key: value for key, value in after.items() if key not in ("leases", "owner_alive")} == session


async def test_patch_needs_a_body_and_a_json_media_type(client: httpx.AsyncClient) -> None:
    session = await create(client)
    assert_problem(await client.patch(path(session["id"]), headers=auth()), 422, "validation-error")
    wrong = await client.patch(
        path(session["id"]), content=b'{"owner":"x"}', headers={**auth(), "content-type": "text/plain"}
    )
    assert_problem(wrong, 415, "unsupported-media-type")


async def test_patch_over_the_metadata_limit_is_413_and_writes_nothing(client_with) -> None:
    async with client_with(max_metadata_bytes=64) as client:
        session = await create(client)
        response = await patch(client, session["id"], {"metadata": {"blob": "x" * 100}})
        assert_problem(response, 413, "metadata-too-large")
        assert (await client.get(path(session["id"]), headers=auth())).json()["version"] == 1


async def test_pagination_visits_every_session_once_even_while_sessions_come_and_go(
    client: httpx.AsyncClient,
) -> None:
    ids = {(await create(client, kind="page"))["id"] for _ in range(57)}
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"kind": "page", "limit": 10}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/sessions", params=params, headers=auth())).json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        if pages == 2:  # churn mid-way: a new session and a deleted one must not cause gaps or repeats
            await create(client, kind="other")
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 57
    assert set(seen) == ids
    assert seen == sorted(seen)
    assert pages == 6


async def test_list_filters(client: httpx.AsyncClient) -> None:
    await create(
        client, kind="mcp", principal="alice", client_id="c1", owner="gw-1", protocol_version="2025-06-18"
    )
    await create(client, kind="mcp", principal="bob", client_id="c1", owner="gw-2")
    await create(client, kind="basket", principal="alice")

    async def ids(**params: str) -> int:
        return len((await client.get("/v1/sessions", params=params, headers=auth())).json()["items"])

    assert await ids() == 3
    assert await ids(kind="mcp") == 2
    assert await ids(principal="alice") == 2
    assert await ids(principal="alice", kind="basket") == 1
    assert await ids(client_id="c1", owner="gw-2") == 1
    assert await ids(protocol_version="2025-06-18") == 1
    assert await ids(owner="nobody") == 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "eyJ4IjoxfQ"}, "cursor"),
        ({"princpal": "alice"}, "princpal"),
    ],
)
async def test_list_rejects_bad_parameters(client: httpx.AsyncClient, params: dict, field: str) -> None:
    problem = assert_problem(
        await client.get("/v1/sessions", params=params, headers=auth()), 422, "validation-error"
    )
    assert field in {error["field"] for error in problem["errors"]}
