"""app.metrics: helpers, label hygiene, the ASGI middleware, exposition in both modes."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import REGISTRY

from app import collectors, metrics
from app.http.middleware.metrics import MetricsMiddleware
from app.http.route_template import route_template
from app.mcp_methods import MCP_METHODS, normalise_mcp_method


def value(name: str, **labels: str) -> float:
    """Current sample value, 0 when the series does not exist yet."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- MCP method normalisation ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MCP_METHODS))
def test_known_mcp_methods_are_kept(name: str) -> None:
    assert normalise_mcp_method(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "tools/CALL", "Tools/call", "tools/call ", "notifications/custom", "x" * 10_000, "tools", None, 3],
)
def test_unknown_mcp_methods_become_other(name: object) -> None:
    assert normalise_mcp_method(name) == "other"


def test_mcp_method_set_covers_the_spec_notifications() -> None:
    expected = {
        "notifications/" + n
        for n in (
            "initialized",
            "cancelled",
            "progress",
            "message",
            "roots/list_changed",
            "resources/updated",
            "resources/list_changed",
            "tools/list_changed",
            "prompts/list_changed",
        )
    }
    assert expected <= MCP_METHODS
    assert {
        "tasks/get",
        "tasks/list",
        "tasks/cancel",
        "tasks/result",
        "elicitation/create",
    } <= MCP_METHODS


# --- helpers ---------------------------------------------------------------------------------------------


def test_count_helpers_increment_the_right_series() -> None:
    t = "t-helpers"
    metrics.count_touch(t, "written")
    metrics.count_touch(t, "throttled")
    metrics.count_touch(t, "throttled")
    metrics.count_created(t, "registered")
    metrics.count_binding_mismatch(t, "touch")
    metrics.count_quota_rejection(t, "principal")
    metrics.count_quota_eviction(t, "tenant", 3)
    before_503 = value("session_broker_unavailable_responses_total")
    metrics.count_unavailable()
    metrics.count_db_error("timeout-helpers")
    assert value("session_broker_touches_total", tenant=t, result="written") == 1
    assert value("session_broker_touches_total", tenant=t, result="throttled") == 2
    assert value("session_broker_sessions_created_total", tenant=t, how="registered") == 1
    assert value("session_broker_binding_mismatches_total", tenant=t, operation="touch") == 1
    assert value("session_broker_quota_rejections_total", tenant=t, scope="principal") == 1
    assert value("session_broker_quota_evictions_total", tenant=t, scope="tenant") == 3
    assert value("session_broker_unavailable_responses_total") == before_503 + 1
    assert value("session_broker_db_errors_total", kind="timeout-helpers") == 1


def test_count_ended_observes_lifetime_only_when_given() -> None:
    t = "t-ended"
    metrics.count_ended(t, "expired_idle")
    metrics.count_ended(t, "deleted", lifetime_seconds=90.0)
    metrics.count_ended(t, "deleted", lifetime_seconds=-1.0)  # clock skew: not observed
    assert value("session_broker_sessions_ended_total", tenant=t, reason="deleted") == 2
    assert value("session_broker_sessions_ended_total", tenant=t, reason="expired_idle") == 1
    assert value("session_broker_session_lifetime_seconds_count", tenant=t) == 1
    assert value("session_broker_session_lifetime_seconds_sum", tenant=t) == 90.0
    assert value("session_broker_session_lifetime_seconds_bucket", tenant=t, le="60.0") == 0
    assert value("session_broker_session_lifetime_seconds_bucket", tenant=t, le="120.0") == 1


def test_lifetime_buckets_span_one_second_to_seven_days() -> None:
    upper = collectors.SESSION_LIFETIME._upper_bounds
    assert upper[0] == 1 and upper[-2] == 7 * 86400 and upper[-1] == math.inf


def test_record_gateway_request() -> None:
    t = "t-gw"
    metrics.record_gateway_request(t, "tools/call", True, 12)
    metrics.record_gateway_request(t, "tools/call", False, 1500.0)
    metrics.record_gateway_request(t, "made/up", None, None)
    metrics.record_gateway_request(t, "tools/list", True, math.nan)
    metrics.record_gateway_request(t, "tools/list", True, -5)
    assert value("session_broker_gateway_requests_total", tenant=t, method="tools/call") == 2
    assert value("session_broker_gateway_request_errors_total", tenant=t, method="tools/call") == 1
    assert value("session_broker_gateway_requests_total", tenant=t, method="other") == 1
    assert value("session_broker_gateway_request_errors_total", tenant=t, method="other") == 0
    assert value("session_broker_gateway_request_duration_seconds_count", tenant=t, method="tools/call") == 2
    assert (
        value("session_broker_gateway_request_duration_seconds_sum", tenant=t, method="tools/call") == 1.512
    )
    assert value("session_broker_gateway_request_duration_seconds_count", tenant=t, method="tools/list") == 0


def test_set_live_sessions_replaces_and_drops_label_sets() -> None:
    metrics.set_live_sessions([("acme", "mcp", 5), ("acme", "basket", 2), ("beta", "mcp", 1)])
    assert value("session_broker_sessions_live", tenant="acme", kind="mcp") == 5
    metrics.set_live_sessions([("acme", "mcp", 7), ("acme", "mcp", 1)])  # duplicates are summed
    assert value("session_broker_sessions_live", tenant="acme", kind="mcp") == 8
    assert (
        REGISTRY.get_sample_value("session_broker_sessions_live", {"tenant": "acme", "kind": "basket"})
        is None
    )
    assert (
        REGISTRY.get_sample_value("session_broker_sessions_live", {"tenant": "beta", "kind": "mcp"}) is None
    )
    metrics.clear_live_sessions()
    assert (
        REGISTRY.get_sample_value("session_broker_sessions_live", {"tenant": "acme", "kind": "mcp"}) is None
    )


def test_pool_and_backlog_gauges() -> None:
    metrics.set_pool_stats(10, 4, 2)
    metrics.set_purge_backlog(1234)
    assert value("session_broker_db_pool_size") == 10
    assert value("session_broker_db_pool_in_use") == 4
    assert value("session_broker_db_pool_waiting") == 2
    assert value("session_broker_purge_backlog") == 1234


def test_record_purge_run() -> None:
    before_ok = value("session_broker_purge_runs_total", result="ok")
    before_sessions = value("session_broker_purge_deleted_total", table="sessions")
    before_batches = value("session_broker_purge_batch_duration_seconds_count")
    metrics.record_purge_run("ok", {"sessions": 500, "tombstones": 0, "events": 20}, [0.02, 0.03])
    metrics.record_purge_run("skipped")
    assert value("session_broker_purge_runs_total", result="ok") == before_ok + 1
    assert value("session_broker_purge_runs_total", result="skipped") >= 1
    assert value("session_broker_purge_deleted_total", table="sessions") == before_sessions + 500
    assert value("session_broker_purge_batch_duration_seconds_count") == before_batches + 2


def test_purge_series_exist_before_the_first_run() -> None:
    for result in collectors.PURGE_RESULTS:
        assert REGISTRY.get_sample_value("session_broker_purge_runs_total", {"result": result}) is not None
    for table in collectors.PURGE_TABLES:
        assert REGISTRY.get_sample_value("session_broker_purge_deleted_total", {"table": table}) is not None


def test_register_tenants_creates_zero_series() -> None:
    collectors.register_tenants(["t-registered"])
    for result in collectors.TOUCH_RESULTS:
        assert (
            REGISTRY.get_sample_value(
                "session_broker_touches_total", {"tenant": "t-registered", "result": result}
            )
            == 0
        )
    for reason in collectors.END_REASONS:
        labels = {"tenant": "t-registered", "reason": reason}
        assert REGISTRY.get_sample_value("session_broker_sessions_ended_total", labels) == 0


def test_observe_db_query() -> None:
    metrics.observe_db_query("touch-test", 0.0003)
    assert value("session_broker_db_query_duration_seconds_count", operation="touch-test") == 1
    assert value("session_broker_db_query_duration_seconds_bucket", operation="touch-test", le="0.0005") == 1


# --- middleware ------------------------------------------------------------------------------------------


def make_app() -> FastAPI:
    router = APIRouter(prefix="/sessions")

    @router.get("/{session_id}")
    async def get_session(session_id: str) -> dict[str, str]:
        return {"id": session_id}

    @router.post("/{session_id}/touch")
    async def touch_session(session_id: str) -> dict[str, str]:
        return {"id": session_id}

    @router.delete("/{session_id}")
    async def delete_session(session_id: str) -> Response:
        raise RuntimeError("boom")

    app = FastAPI()
    app.include_router(router, prefix="/v1")

    @app.get("/healthz")
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/metrics")
    async def metrics_endpoint(request: Request) -> Response:
        body, content_type = metrics.render_metrics()
        return Response(body, media_type=content_type)

    app.add_middleware(MetricsMiddleware)
    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def http_count(route: str, method: str, status: str) -> float:
    return value("session_broker_http_requests_total", route=route, method=method, status=status)


async def test_middleware_labels_by_route_template_with_include_prefix() -> None:
    route = "/v1/sessions/{session_id}"
    before = http_count(route, "GET", "2xx")
    async with client(make_app()) as c:
        for i in range(3):
            assert (await c.get(f"/v1/sessions/raw-id-{i}")).status_code == 200
        assert (await c.post("/v1/sessions/x/touch")).status_code == 200
    assert http_count(route, "GET", "2xx") == before + 3
    assert http_count("/v1/sessions/{session_id}/touch", "POST", "2xx") >= 1
    body = metrics.render_metrics()[0].decode()
    assert "raw-id-" not in body
    assert value("session_broker_http_request_duration_seconds_count", route=route, method="GET") >= 3
    assert value("session_broker_http_requests_in_flight") == 0


async def test_middleware_unmatched_405_and_unknown_method() -> None:
    before_unmatched = http_count("unmatched", "GET", "4xx")
    async with client(make_app()) as c:
        assert (await c.get("/nowhere/secret-id")).status_code == 404
        assert (await c.put("/v1/sessions/abc")).status_code == 405
        assert (await c.request("BREW", "/v1/sessions/abc")).status_code == 405
    assert http_count("unmatched", "GET", "4xx") == before_unmatched + 1
    assert http_count("/v1/sessions/{session_id}", "PUT", "4xx") >= 1
    assert http_count("/v1/sessions/{session_id}", "other", "4xx") >= 1
    assert "secret-id" not in metrics.render_metrics()[0].decode()


async def test_middleware_counts_exceptions_as_5xx() -> None:
    before = http_count("/v1/sessions/{session_id}", "DELETE", "5xx")
    async with client(make_app()) as c:
        assert (await c.delete("/v1/sessions/abc")).status_code == 500
    assert http_count("/v1/sessions/{session_id}", "DELETE", "5xx") == before + 1
    assert value("session_broker_http_requests_in_flight") == 0


async def test_probes_and_metrics_are_excluded() -> None:
    async with client(make_app()) as c:
        assert (await c.get("/healthz")).status_code == 200
        response = await c.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'route="/healthz"' not in response.text
    assert 'route="/metrics"' not in response.text


def test_route_template_without_route_is_unmatched() -> None:
    assert route_template({"type": "http", "path": "/x"}) == "unmatched"


# --- exposition -------------------------------------------------------------------------------------------


def test_exposition_passes_promtool_lint(promtool: str) -> None:
    collectors.register_tenants(["lint"])
    metrics.set_live_sessions([("lint", "mcp", 1)])
    metrics.record_gateway_request("lint", "tools/call", True, 3)
    metrics.count_ended("lint", "deleted", 5)
    body, content_type = metrics.render_metrics()
    assert content_type.startswith("text/plain; version=")
    proc = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert not [
        line for line in body.decode().splitlines() if "_total_created" in line or "_created{" in line
    ]


MULTIPROC_CHILD = textwrap.dedent(
    """
    import sys
    from app import collectors, metrics
    assert collectors.MULTIPROCESS
    metrics.count_touch("acme", "written")
    metrics.set_live_sessions([("acme", "mcp", int(sys.argv[1]))])
    metrics.set_pool_stats(10, 1, 0)
    if len(sys.argv) > 2:
        sys.stdout.buffer.write(metrics.render_metrics()[0])
    """
)


def test_multiprocess_mode_aggregates_workers(tmp_path: Path, promtool: str) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    repo = Path(__file__).resolve().parents[2]

    def child(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-c", MULTIPROC_CHILD, *args],
            env=env,
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return proc.stdout

    child("3")
    out = child("4", "render")
    assert 'session_broker_touches_total{result="written",tenant="acme"} 2.0' in out
    # mostrecent: the last writer wins, not the sum
    assert 'session_broker_sessions_live{kind="mcp",tenant="acme"} 4.0' in out
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=out, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
