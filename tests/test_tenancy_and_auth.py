"""API keys, tenants, admin keys, and the loopback-only unauthenticated default."""

from __future__ import annotations

import httpx
import pytest

from app.auth import KeyRing
from app.config import ConfigurationError
from tests.helpers import ADMIN_KEY, GLOBEX_KEY, assert_problem, create, make_settings, path, running_client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer wrong-key-0123456789abcdef"},
        {"Authorization": "Basic YWNtZTprZXk="},
        {"Authorization": "acme-key-0123456789abcdef"},
    ],
)
async def test_missing_or_invalid_keys_are_401_with_bearer_challenge(
    client: httpx.AsyncClient, headers
) -> None:
    for method, url in (
        ("POST", "/v1/sessions"),
        ("GET", "/v1/sessions"),
        ("GET", path("x")),
        ("GET", "/v1/stats"),
    ):
        response = await client.request(method, url, headers=headers)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_another_tenants_session_is_indistinguishable_from_a_missing_one(
    client: httpx.AsyncClient,
) -> None:
    session = await create(client, kind="basket")
    other = bearer(GLOBEX_KEY)
    missing = (await client.get(path("no-such-session"), headers=other)).json()
    for response in (
        await client.get(path(session["id"]), headers=other),
        await client.post(path(session["id"]) + "/touch", headers=other),
        await client.patch(path(session["id"]), json={"owner": "x"}, headers=other),
        await client.delete(path(session["id"]), headers=other),
    ):
        body = assert_problem(response, 404, "session-not-found")
        assert body == missing
    listed = await client.get("/v1/sessions", headers=other)
    assert listed.json()["items"] == []
    # The same id may be registered independently in another tenant.
    assert (await client.put(path(session["id"]), headers=other)).status_code == 201
    mine = await client.get(path(session["id"]), headers=bearer("acme-key-0123456789abcdef"))
    assert mine.json()["kind"] == "basket"


async def test_admin_keys_cannot_act_as_a_tenant(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/sessions", headers=bearer(ADMIN_KEY))
    assert_problem(response, 403, "tenant-key-required")


async def test_no_keys_on_loopback_serves_tenant_default(database_url: str, raw_db) -> None:
    async with running_client(database_url, api_keys=None, admin_api_keys=None) as client:
        created = await client.post("/v1/sessions")
        assert created.status_code == 201
        stats = (await client.get("/v1/stats")).json()
        assert stats["tenant"] == "default"


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "example.internal"])
def test_no_keys_on_a_non_loopback_address_refuses_to_start(host: str) -> None:
    with pytest.raises(ConfigurationError, match="refusing to serve without authentication"):
        KeyRing.from_settings(make_settings(host=host, api_keys=None, admin_api_keys=None))


def test_keys_file_is_read_one_pair_per_line(tmp_path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(
        "# mounted from a Secret\nacme=file-key-0123456789abcdef\n\nglobex=other-key-0123456789abcdef\n"
    )
    ring = KeyRing.from_settings(make_settings(api_keys=None, api_keys_file=str(keys), host="0.0.0.0"))
    assert ring.authenticate("Bearer file-key-0123456789abcdef").tenant == "acme"
    assert ring.authenticate("Bearer other-key-0123456789abcdef").tenant == "globex"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("acme", "tenant=key"),
        ("acme=short", "at least 16"),
        ("bad tenant=key-0123456789abcdef", "tenant name"),
        ("a=same-key-0123456789abcdef,b=same-key-0123456789abcdef", "configured twice"),
    ],
)
def test_malformed_key_settings_fail_at_start_naming_the_setting(value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        KeyRing.from_settings(make_settings(api_keys=value))


def test_several_keys_per_tenant_allow_rotation() -> None:
    ring = KeyRing.from_settings(
        make_settings(api_keys="acme=old-key-0123456789abcdef,acme=new-key-0123456789abcdef")
    )
    assert ring.authenticate("Bearer old-key-0123456789abcdef").tenant == "acme"
    assert ring.authenticate("Bearer new-key-0123456789abcdef").tenant == "acme"
    assert ring.authenticate("bearer new-key-0123456789abcdef").tenant == "acme"  # scheme is case-insensitive
