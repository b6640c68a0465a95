"""`POST /v1/analytics`: request outcomes reported after the fact, in batches, feeding exactly what touch
bodies feed (the gateway metrics and the batched `gateway_request_totals` flush)."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import assert_problem, auth, metric_value

TOOLS_CALL = 'session_broker_gateway_requests_total{method="tools/call",tenant="acme"}'
TOOLS_CALL_ERRORS = 'session_broker_gateway_request_errors_total{method="tools/call",tenant="acme"}'


async def test_a_batch_feeds_metrics_stats_and_the_flushed_totals(client_with, raw_db) -> None:
    async with client_with() as client:
        metrics_before = (await client.get("/metrics")).text
        batch = {
            "requests": [
                {"method": "tools/call", "ok": True, "duration_ms": 10.0},
                {"method": "tools/call", "ok": False, "duration_ms": 30.0},
                {"method": "tools/call", "ok": True, "duration_ms": None},
                {"method": "resources/read"},
                {"method": "x-vendor/custom", "ok": True, "duration_ms": 1.0},
            ]
        }
        response = await client.post("/v1/analytics", json=batch, headers=auth())
        assert response.status_code == 200, response.text
        assert response.json() == {"recorded": 5}
        metrics_after = (await client.get("/metrics")).text
        assert metric_value(metrics_after, TOOLS_CALL) == metric_value(metrics_before, TOOLS_CALL) + 3
        errors_before = metric_value(metrics_before, TOOLS_CALL_ERRORS)
        assert metric_value(metrics_after, TOOLS_CALL_ERRORS) == errors_before + 1
        requests = (await client.get("/v1/stats", headers=auth())).json()["requests"]
        assert requests["requests_total"] == 5 and requests["errors_total"] == 1
        busiest = {entry["method"]: entry for entry in requests["busiest_methods"]}
        assert busiest["tools/call"]["requests"] == 3 and busiest["tools/call"]["mean_duration_ms"] == 20.0
        assert "other" in busiest and "x-vendor/custom" not in busiest
        # In memory until the flush: no database write on the request path.
        assert await raw_db.fetchval("SELECT count(*) FROM gateway_request_totals") == 0
    # Shutdown flushed them: another replica sees the same fleet-wide totals.
    assert await raw_db.fetchval("SELECT sum(requests) FROM gateway_request_totals") == 5
    async with client_with() as other_replica:
        stats = (await other_replica.get("/v1/stats", headers=auth())).json()
        assert stats["requests"]["requests_total"] == 5


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"requests": [{"method": "ping", "extra": 1}]}, "requests.0.extra"),
        ({"requests": [{"method": "ping", "duration_ms": -1}]}, "requests.0.duration_ms"),
        ({"requests": [{"method": ""}]}, "requests.0.method"),
        ({"requests": [{"method": "ping", "ok": "yes"}]}, "requests.0.ok"),
        ({"requests": []}, "requests"),
        ({"requests": [{"method": "ping"}] * 1001}, "requests"),
        ({"request": [{"method": "ping"}]}, "request"),
        ({}, "requests"),
    ],
)
async def test_invalid_batches_are_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    response = await client.post("/v1/analytics", json=body, headers=auth())
    problem = assert_problem(response, 422, "validation-error")
    assert field in {error["field"] for error in problem["errors"]}


async def test_empty_body_wrong_media_type_and_keys(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/v1/analytics", headers=auth()), 422, "validation-error")
    assert_problem(
        await client.post(
            "/v1/analytics",
            content=b'{"requests":[{"method":"ping"}]}',
            headers={**auth(), "content-type": "text/plain"},
        ),
        415,
        "unsupported-media-type",
    )
    unauthenticated = await client.post("/v1/analytics", json={"requests": [{"method": "ping"}]})
    assert_problem(unauthenticated, 401, "unauthorized")
    admin = {"Authorization": "Bearer admin-key-0123456789abcdef"}
    assert_problem(
        await client.post("/v1/analytics", json={"requests": [{"method": "ping"}]}, headers=admin),
        403,
        "tenant-key-required",
    )
