"""End-to-end behaviour of every /v1/sessions operation through the real ASGI app and PostgreSQL."""

from __future__ import annotations

import re

import asyncpg
import httpx
import pytest

from tests.helpers import PROBLEM, assert_problem, auth, create, path

AWKWARD_IDS = [
    "a/b",
    "what?x=1",
    "frag#ment",
    "100%25",
    "%2F-literal-percent-sequence",
    "plus+sign",
    "base64+/x==",
    "~!@$&'()*,;:=[]{}|\\^`\"<>",
    "!",
    "x" * 255,
]


async def test_create_mints_a_url_safe_256_bit_id_and_returns_location_and_etag(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v1/sessions",
        json={"principal": "iss|alice", "client_id": "claude", "metadata": {"clientInfo": {"name": "x"}}},
        headers=auth(),
    )
    assert response.status_code == 201
    session = response.json()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", session["id"])
    assert response.headers["location"] == path(session["id"])
    assert response.headers["etag"] == '"1"'
    assert session["kind"] == "mcp" and session["version"] == 1
    assert session["principal"] == "iss|alice" and session["client_id"] == "claude"
    assert session["metadata"] == {"clientInfo": {"name": "x"}}
    assert session["idle_timeout_seconds"] == 1800 and session["max_lifetime_seconds"] == 28800
    assert session["created_at"].endswith("Z") and session["created_at"] == session["last_seen_at"]
    second = await create(client)
    assert second["id"] != session["id"]


async def test_create_without_body_uses_defaults(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/sessions", headers=auth())
    assert response.status_code == 201
    assert response.json()["metadata"] == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"idle_timeout_secs": 60}, "idle_timeout_secs"),
        ({"idle_timeout_seconds": 0}, "idle_timeout_seconds"),
        ({"idle_timeout_seconds": -5}, "idle_timeout_seconds"),
        ({"idle_timeout_seconds": 10**12}, "idle_timeout_seconds"),
        ({"idle_timeout_seconds": "60"}, "idle_timeout_seconds"),
        ({"idle_timeout_seconds": 1.5}, "idle_timeout_seconds"),
        ({"max_lifetime_seconds": 0}, "max_lifetime_seconds"),
        ({"max_lifetime_seconds": 10**9}, "max_lifetime_seconds"),
        ({"metadata": []}, "metadata"),
        ({"metadata": "x"}, "metadata"),
        ({"kind": ""}, "kind"),
        ({"kind": "has space"}, "kind"),
        ({"principal": 7}, "principal"),
        ({"principal": ""}, "principal"),
        ({"id": "mine"}, "id"),
        ({"version": 3}, "version"),
    ],
)
async def test_create_rejects_bad_fields_naming_them_and_writes_nothing(
    client: httpx.AsyncClient, raw_db: asyncpg.Connection, body: dict, field: str
) -> None:
    response = await client.post("/v1/sessions", json=body, headers=auth())
    problem = assert_problem(response, 422, "validation-error")
    assert field in {error["field"] for error in problem["errors"]}
    assert field in problem["detail"]
    assert await raw_db.fetchval("SELECT count(*) FROM sessions") == 0


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"{not json", "application/json", 422),
        (b"[1,2]", "application/json", 422),
        (b'{"principal": "a\\u0000b"}', "application/json", 422),
        (b'{"principal": "a"}', "text/plain", 415),
        (b'{"principal": "a"}', "application/x-www-form-urlencoded", 415),
    ],
)
async def test_create_rejects_malformed_bodies(
    client: httpx.AsyncClient, raw_db: asyncpg.Connection, content: bytes, content_type: str, status: int
) -> None:
    response = await client.post(
        "/v1/sessions", content=content, headers={**auth(), "content-type": content_type}
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert await raw_db.fetchval("SELECT count(*) FROM sessions") == 0


async def test_metadata_over_the_limit_is_413_naming_metadata(
    client_with, raw_db: asyncpg.Connection
) -> None:
    async with client_with(max_metadata_bytes=100) as client:
        ok = await client.post("/v1/sessions", json={"metadata": {"k": "v" * 50}}, headers=auth())
        assert ok.status_code == 201
        response = await client.post("/v1/sessions", json={"metadata": {"k": "v" * 200}}, headers=auth())
        problem = assert_problem(response, 413, "metadata-too-large")
        assert problem["field"] == "metadata"
        huge = await client.post("/v1/sessions", json={"metadata": {"k": "v" * 200_000}}, headers=auth())
        assert_problem(huge, 413, "payload-too-large")
    assert await raw_db.fetchval("SELECT count(*) FROM sessions") == 1


@pytest.mark.parametrize("session_id", AWKWARD_IDS)
async def test_awkward_ids_round_trip_through_every_operation(
    client: httpx.AsyncClient, session_id: str
) -> None:
    registered = await client.put(path(session_id), json={"kind": "streamable"}, headers=auth())
    assert registered.status_code == 201, registered.text
    assert registered.json()["id"] == session_id
    assert registered.headers["location"] == path(session_id)
    got = await client.get(path(session_id), headers=auth())
    assert got.status_code == 200 and got.json()["id"] == session_id
    touched = await client.post(path(session_id) + "/touch", headers=auth())
    assert touched.status_code == 200 and touched.json()["id"] == session_id
    patched = await client.patch(path(session_id), json={"owner": "gw-1"}, headers=auth())
    assert patched.status_code == 200 and patched.json()["owner"] == "gw-1"
    listed = await client.get("/v1/sessions", params={"kind": "streamable"}, headers=auth())
    assert [item["id"] for item in listed.json()["items"]] == [session_id]
    assert (await client.delete(path(session_id), headers=auth())).status_code == 204
    assert (await client.get(path(session_id), headers=auth())).status_code == 404


async def test_ids_that_differ_only_in_encoding_are_different_sessions(client: httpx.AsyncClient) -> None:
    for session_id in ("a/b", "a%2Fb", "a+b", "a b".replace(" ", "%20")):
        assert (await client.put(path(session_id), headers=auth())).status_code == 201
    got = await client.get(path("a%2Fb"), headers=auth())
    assert got.json()["id"] == "a%2Fb"


@pytest.mark.parametrize("session_id", ["", "x" * 256, "has space", "tab\tid", "é", "\x7f"])
async def test_register_rejects_invalid_ids(client: httpx.AsyncClient, session_id: str) -> None:
    url = path(session_id) if session_id else "/v1/sessions/%20"
    problem = assert_problem(await client.put(url, headers=auth()), 422, "validation-error")
    assert problem["errors"][0]["field"] == "session_id"


async def test_register_conflicts_with_a_live_session_and_never_overwrites(client: httpx.AsyncClient) -> None:
    first = await client.put(
        path("sdk-minted"), json={"principal": "alice", "metadata": {"n": 1}}, headers=auth()
    )
    assert first.status_code == 201
    again = await client.put(path("sdk-minted"), json={"principal": "mallory"}, headers=auth())
    assert_problem(again, 409, "session-exists")
    current = (await client.get(path("sdk-minted"), headers=auth())).json()
    assert current["principal"] == "alice" and current["metadata"] == {"n": 1}


async def test_get_missing_and_impossible_ids_are_404(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get(path("nope"), headers=auth()), 404, "session-not-found")
    assert "reason" not in body
    assert_problem(await client.get(path("x" * 300), headers=auth()), 404, "session-not-found")


async def test_get_does_not_touch(client: httpx.AsyncClient) -> None:
    session = await create(client)
    got = (await client.get(path(session["id"]), headers=auth())).json()
    assert got["last_seen_at"] == session["last_seen_at"] and got["expires_at"] == session["expires_at"]


async def test_delete_ends_the_session_and_says_why_afterwards(client: httpx.AsyncClient) -> None:
    session = await create(client)
    deleted = await client.delete(path(session["id"]), headers=auth())
    assert deleted.status_code == 204 and deleted.content == b""
    for response in (
        await client.get(path(session["id"]), headers=auth()),
        await client.post(path(session["id"]) + "/touch", headers=auth()),
        await client.patch(path(session["id"]), json={"owner": "x"}, headers=auth()),
        await client.delete(path(session["id"]), headers=auth()),
    ):
        assert assert_problem(response, 404, "session-not-found")["reason"] == "deleted"
    retired = await client.put(path(session["id"]), headers=auth())
    assert assert_problem(retired, 409, "session-id-retired")["reason"] == "deleted"


async def test_delete_missing_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.delete(path("never-was"), headers=auth()), 404, "session-not-found")


async def test_stats_counts_live_sessions_totals_and_limits(client: httpx.AsyncClient) -> None:
    for kind in ("mcp", "mcp", "basket"):
        await create(client, kind=kind)
    doomed = await create(client, kind="sse")
    await client.delete(path(doomed["id"]), headers=auth())
    stats = (await client.get("/v1/stats", headers=auth())).json()
    assert stats["tenant"] == "acme"
    assert stats["live"] == 3
    assert {row["kind"]: row["live"] for row in stats["by_kind"]} == {"basket": 1, "mcp": 2}
    assert stats["created_total"] == 4
    assert stats["ended_total"]["deleted"] == 1 and stats["ended_total"]["expired_idle"] == 0
    assert stats["limits"]["default_idle_timeout_seconds"] == 1800
    assert stats["oldest_created_at"] <= stats["newest_created_at"]
    other = (await client.get("/v1/stats", headers=auth("globex-key-0123456789abcdef"))).json()
    assert other["live"] == 0 and other["created_total"] == 0


async def test_unknown_routes_and_methods_are_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/nothing", headers=auth()), 404, "not-found")
    response = await client.request("TRACE", "/v1/sessions", headers=auth())
    assert_problem(response, 405, "method-not-allowed")
    assert set(response.headers["allow"].split(", ")) == {"GET", "POST", "DELETE"}
    item = await client.request("TRACE", path("a/b"), headers=auth())
    assert set(item.headers["allow"].split(", ")) == {"GET", "PUT", "PATCH", "DELETE"}


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200 and "session_broker_" in metrics.text


async def test_metadata_round_trips_any_json_including_nul_and_astral_characters(
    client: httpx.AsyncClient,
) -> None:
    metadata = {
        "nul": "a\u0000b",
        "k\u0000": [1, 2.5, None, True],
        "emoji": "\U0001f600",
        "deep": {"x": {"y": []}},
    }
    created = await create(client, metadata=metadata)
    assert created["metadata"] == metadata
    got = await client.get(path(created["id"]), headers=auth())
    assert got.json()["metadata"] == metadata


async def test_integers_of_any_size_round_trip_exactly(
    client: httpx.AsyncClient, raw_db: asyncpg.Connection
) -> None:
    """A JSON parser that turned 10**30 into 1e30 would store another number than the one sent: every
    integer comes back as it was sent, past 64 bits too, on create, read, list and patch."""
    huge = {
        "n": 10**30,
        "negative": -(2**70),
        "nested": {"list": [2**64, 2**64 - 1, -(2**63)]},
        "digits in a string": "1" * 40,
        "float": 1.5e300,
    }
    created = await create(client, metadata=huge)
    assert created["metadata"] == huge
    assert (await client.get(path(created["id"]), headers=auth())).json()["metadata"] == huge
    assert await raw_db.fetchval("SELECT metadata->>'n' FROM sessions WHERE id = $1", created["id"]) == str(
        10**30
    )
    listed = await client.get("/v1/sessions", headers=auth(), params={"limit": 500})
    assert huge in [item["metadata"] for item in listed.json()["items"]]
    patched = await client.patch(
        path(created["id"]),
        content=b'{"metadata": {"m": -123456789012345678901234567890}}',
        headers={**auth(), "Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["metadata"] == {**huge, "m": -123456789012345678901234567890}
