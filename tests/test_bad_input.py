"""Bad input gets a 4xx problem naming the field, never a 5xx, and nothing is written by a refused request.

Deep metadata used to make 500s, one of them after the create had committed: orjson encodes at most 254
levels including the response envelope, and the merge patch recursed once per level.
"""

from __future__ import annotations

import asyncpg
import httpx

from app.schemas import MAX_METADATA_DEPTH
from tests.helpers import assert_problem, auth, create, path

DEPTHS = [*range(1, 80), *range(240, 270), *range(995, 1030), 1500, 2000]


def nested(depth: int) -> bytes:
    """A body whose metadata is `depth` levels deep, `{"x": [[...]]}` (the object is level 1), written as
    text: no JSON encoder goes that deep."""
    inner = "[" * (depth - 1) + "]" * (depth - 1)
    return ('{"metadata": {"x": ' + inner + "}}").encode() if depth > 1 else b'{"metadata": {}}'


async def counts(raw_db: asyncpg.Connection) -> tuple[int, int]:
    sessions = await raw_db.fetchval("SELECT count(*) FROM sessions")
    events = await raw_db.fetchval("SELECT count(*) FROM session_events")
    return sessions, events


async def test_metadata_depths_from_1_to_2000_are_accepted_or_refused_cleanly(
    client: httpx.AsyncClient, raw_db: asyncpg.Connection
) -> None:
    target = await create(client)
    for depth in DEPTHS:
        body = nested(depth)
        before = await counts(raw_db)
        answers = [
            await client.post(
                "/v1/sessions", content=body, headers={**auth(), "Content-Type": "application/json"}
            ),
            await client.put(
                path(f"deep-{depth}"), content=body, headers={**auth(), "Content-Type": "application/json"}
            ),
            await client.patch(
                path(target["id"]),
                content=body,
                headers={**auth(), "Content-Type": "application/merge-patch+json"},
            ),
        ]
        if depth <= MAX_METADATA_DEPTH:
            assert [answer.status_code for answer in answers] == [201, 201, 200], depth
            continue
        for answer in answers:
            problem = assert_problem(answer, 422, "validation-error")
            assert problem["errors"][0]["field"] in ("metadata", "body"), problem
        assert await counts(raw_db) == before, depth  # nothing written, no event
    # Everything stored reads back, alone and in list pages.
    for session_id in [row["id"] for row in await raw_db.fetch("SELECT id FROM sessions")]:
        assert (await client.get(path(session_id), headers=auth())).status_code == 200
    page = await client.get("/v1/sessions", params={"limit": 1000}, headers=auth())
    assert page.status_code == 200 and len(page.json()["items"]) == await raw_db.fetchval(
        "SELECT count(*) FROM sessions"
    )


async def test_a_patch_of_999_nested_objects_is_refused_without_recursing(client: httpx.AsyncClient) -> None:
    session = await create(client, metadata={"keep": True})
    patch = '{"metadata": ' + '{"a": ' * 999 + "{}" + "}" * 999 + "}"
    answer = await client.patch(
        path(session["id"]),
        content=patch.encode(),
        headers={**auth(), "Content-Type": "application/merge-patch+json"},
    )
    problem = assert_problem(answer, 422, "validation-error")
    assert problem["errors"][0]["field"] == "metadata"
    assert f"{MAX_METADATA_DEPTH} levels" in problem["errors"][0]["message"]
    assert (await client.get(path(session["id"]), headers=auth())).json()["metadata"] == {"keep": True}
