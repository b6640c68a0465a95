"""A real Prometheus scrapes a real broker: every dashboard query and alert expression must work.

Drives API traffic (create, touch with analytics bodies, get a missing id, delete, register an id
with reserved characters), waits for two scrapes after it, then runs every dashboard panel target
and every alert expression through /api/v1/query. Panels must return data; alert expressions must
parse (they may be empty: a healthy service fires nothing). Also lints a scrape with promtool.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx
import pytest

from tests.helpers import API_KEYS, start_server, stop_server

from .dashboard_exprs import load_alert_rules, load_dashboard, panels, to_promql

JOB = "session-broker"


class Server(Protocol):
    base_url: str
    api_key: str


@pytest.fixture(scope="module")
def broker(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of this module's own (real uvicorn, two workers in multiprocess metrics mode, on the
    real test PostgreSQL), so counts and route labels come from this module's traffic only."""
    log_path = tmp_path_factory.mktemp("e2e-broker") / "server.log"
    server = start_server(
        {
            "SESSION_BROKER_DATABASE_URL": database_url,
            "SESSION_BROKER_API_KEYS": API_KEYS,
            "SESSION_BROKER_WORKERS": "2",
            "SESSION_BROKER_STATS_REFRESH_SECONDS": "1",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path_factory.mktemp("e2e-metrics")),
        },
        log_path,
    )
    yield server
    stop_server(server)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PrometheusServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def query(self, expr: str) -> httpx.Response:
        return httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)


@pytest.fixture(scope="module")
def prometheus(broker: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found; install it with: apt-get update && apt-get install -y prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    target = broker.base_url.removeprefix("http://")
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: {JOB}\n    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = PrometheusServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(server.url + "/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("prometheus did not start:\n" + log_path.read_text(errors="replace"))
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def drive_traffic(broker: Server) -> None:
    headers = {"Authorization": f"Bearer {broker.api_key}"}
    with httpx.Client(base_url=broker.base_url, headers=headers, timeout=10) as api:
        ids = []
        for _ in range(6):
            response = api.post("/v1/sessions", json={})
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        bodies: list[dict[str, Any] | None] = [
            {"method": "tools/call", "ok": True, "duration_ms": 12},
            {"method": "tools/list", "ok": False, "duration_ms": 3.5},
            {"method": "initialize", "ok": True, "duration_ms": 40},
            {"method": "x-vendor/custom", "ok": True, "duration_ms": 1},
            None,
        ]
        for i, sid in enumerate(ids):
            for body in bodies[i % 3 :]:
                path = f"/v1/sessions/{quote(sid, safe='')}/touch"
                response = api.post(path, json=body) if body is not None else api.post(path)
                assert response.status_code == 200, response.text
            assert api.get(f"/v1/sessions/{quote(sid, safe='')}").status_code == 200
        assert api.get("/v1/sessions/no-such-session-e2e").status_code == 404
        assert api.post("/v1/sessions/no-such-session-e2e/touch").status_code == 404
        # an id with reserved characters must still be labelled by its route template
        odd = "e2e/odd+id?x=1#frag%"
        assert api.put(f"/v1/sessions/{quote(odd, safe='')}", json={}).status_code == 201
        assert api.get(f"/v1/sessions/{quote(odd, safe='')}").status_code == 200
        for sid in [*ids[:3], odd]:
            assert api.delete(f"/v1/sessions/{quote(sid, safe='')}").status_code == 204


def scrape_count(prometheus: PrometheusServer) -> int:
    """Scrapes of the broker in the last 10 minutes (the whole test runs well inside that)."""
    response = prometheus.query(f'count_over_time(up{{job="{JOB}"}}[10m])')
    result = response.json()["data"]["result"] if response.status_code == 200 else []
    return int(result[0]["value"][1]) if result else 0


@pytest.fixture(scope="module")
def scraped(broker: Server, prometheus: PrometheusServer) -> PrometheusServer:
    drive_traffic(broker)
    # Two scrapes after the traffic: rate() needs two samples of the series the traffic created.
    wanted = scrape_count(prometheus) + 2
    deadline = time.monotonic() + 30
    while scrape_count(prometheus) < wanted:
        if time.monotonic() > deadline:
            log = prometheus.log_path.read_text(errors="replace")
            pytest.fail(f"prometheus did not scrape the broker twice after the traffic:\n{log}")
        time.sleep(0.2)
    up = prometheus.query(f'up{{job="{JOB}"}}').json()["data"]["result"]
    assert up and up[0]["value"][1] == "1", up
    return prometheus


def dashboard_targets() -> list[tuple[str, str]]:
    return [
        (f"{panel['title']} [{target['refId']}]", target["expr"])
        for panel in panels(load_dashboard())
        for target in panel["targets"]
    ]


def test_every_dashboard_panel_returns_data(scraped: PrometheusServer) -> None:
    problems = []
    for name, expr in dashboard_targets():
        response = scraped.query(to_promql(expr))
        if response.status_code != 200:
            problems.append(f"{name}: HTTP {response.status_code} {response.text[:300]}")
        elif not response.json()["data"]["result"]:
            problems.append(f"{name}: EMPTY for {to_promql(expr)}")
    assert not problems, "\n".join(problems)


def test_every_alert_expression_parses(scraped: PrometheusServer) -> None:
    problems = []
    for rule in load_alert_rules():
        response = scraped.query(rule["expr"])
        if response.status_code != 200:
            problems.append(f"{rule['alert']}: HTTP {response.status_code} {response.text[:300]}")
    assert not problems, "\n".join(problems)
    # healthy service: nothing should fire except, at most, latency on a cold start
    down = scraped.query(load_alert_rules()[0]["expr"]).json()["data"]["result"]
    assert down == [], f"SessionBrokerDown expression matches a healthy target: {down}"


def test_tenant_variable_has_values(scraped: PrometheusServer) -> None:
    """The dashboard's tenant variable is label_values(session_broker_sessions_live, tenant)."""
    response = httpx.get(
        scraped.url + "/api/v1/label/tenant/values",
        params={"match[]": "session_broker_sessions_live"},
        timeout=10,
    )
    assert response.status_code == 200
    assert "acme" in response.json()["data"]


def test_routes_are_templates_never_raw_ids(scraped: PrometheusServer) -> None:
    routes = {
        series["metric"]["route"]
        for series in scraped.query("session_broker_http_requests_total").json()["data"]["result"]
    }
    assert "/v1/sessions" in routes
    assert any("{" in route for route in routes), routes
    assert not [r for r in routes if "e2e" in r or "no-such-session" in r], routes
    unmatched = scraped.query('session_broker_http_requests_total{route="unmatched"}').json()["data"][
        "result"
    ]
    assert not unmatched, f"API requests were labelled route=unmatched: {json.dumps(unmatched)}"


def test_scrape_passes_promtool_lint(broker: Server, promtool: str) -> None:
    body = httpx.get(broker.base_url + "/metrics", timeout=10).content
    proc = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
