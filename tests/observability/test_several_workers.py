"""With `--workers 2` (as the chart can run it): every request has its access line, and every metric of
the README's table is in /metrics."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import API_KEYS, ROOT, LiveServer, auth, path, start_server, stop_server


@pytest.fixture(scope="module")
def two_workers(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    log_path = tmp_path_factory.mktemp("two-workers") / "server.log"
    server = start_server(
        {
            "SESSION_BROKER_DATABASE_URL": database_url,
            "SESSION_BROKER_API_KEYS": API_KEYS,
            "SESSION_BROKER_WORKERS": "2",
            "SESSION_BROKER_PURGE_ENABLED": "false",
            "SESSION_BROKER_STATS_REFRESH_SECONDS": "1",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path_factory.mktemp("two-workers-metrics")),
        },
        log_path,
    )
    yield server
    stop_server(server)


def readme_metrics() -> set[str]:
    """Every metric name the README's metric table promises (`a` / `_b` rows expand to `a`, `a_b`...)."""
    names: set[str] = set()
    for line in (ROOT / "README.md").read_text().splitlines():
        cell = line.split("|")[1] if line.startswith("| `session_broker_") else ""
        listed = re.findall(r"`([a-z_]+)`", cell)
        if listed:
            base = listed[0]
            names.add(base)
            stem = base.rsplit("_", 1)[0]
            names.update(stem + suffix for suffix in listed[1:] if suffix.startswith("_"))
    return names


async def test_every_request_has_its_access_line_with_two_workers(two_workers: LiveServer) -> None:
    ids = []
    async with httpx.AsyncClient(base_url=two_workers.base_url) as client:
        for n in range(60):
            if n % 3 == 0:
                response = await client.post("/v1/sessions", headers=auth())
                ids.append(response.json()["id"])
            elif n % 3 == 1:
                response = await client.post(path(ids[-1]) + "/touch", headers=auth())
            else:
                response = await client.get(path(ids[-1]), headers={**auth(), "X-Request-ID": f"req-{n}"})
            assert response.status_code in (200, 201)
    lines = [json.loads(line) for line in two_workers.log_text().splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("logger") == "session_broker.access"]
    answered = [line for line in access if line["route"] != "/readyz"]
    assert len(answered) >= 60, f"{len(answered)} access lines for 60 requests"
    for field in ("route", "method", "status", "duration_ms", "tenant", "request_id"):
        assert all(field in line for line in answered), field
    assert {f"req-{n}" for n in range(2, 60, 3)} <= {line["request_id"] for line in answered}


async def test_the_readme_metric_table_is_true_with_two_workers(two_workers: LiveServer) -> None:
    promised = readme_metrics()
    assert len(promised) > 20 and "session_broker_db_errors_total" in promised
    # Traffic that gives every metric a reason to have a sample: a binding mismatch, a touch with
    # analytics, an ended session (its lifetime), a create retried with its Idempotency-Key; then two
    # gauge refreshes (one per second).
    async with httpx.AsyncClient(base_url=two_workers.base_url) as client:
        created = await client.post("/v1/sessions", json={"principal": "alice"}, headers=auth())
        session_id = created.json()["id"]
        await client.get(path(session_id), headers={**auth(), "Session-Principal": "mallory"})
        analytics = {"method": "tools/call", "ok": False, "duration_ms": 5.0}
        touched = await client.post(path(session_id) + "/touch", json=analytics, headers=auth())
        assert touched.status_code == 200
        await client.post("/v1/sessions", headers=auth())
        await client.delete(path(session_id), headers=auth())
        for _ in range(2):
            retried = await client.post("/v1/sessions", headers={**auth(), "Idempotency-Key": "retried-1"})
            assert retried.status_code == 201
        assert retried.headers["Idempotent-Replayed"] == "true"
        await asyncio.sleep(2.5)
        body = (await client.get("/metrics")).text
    declared = set(re.findall(r"^# TYPE (\S+) ", body, flags=re.MULTILINE))
    # Counters are declared without their `_total` suffix by prometheus-client.
    present = declared | {name + "_total" for name in declared}
    assert promised <= present, sorted(promised - present)
    assert re.search(r'^session_broker_db_errors_total\{kind="timeout"\} 0\.0$', body, flags=re.MULTILINE)


def test_logging_is_configured_in_each_worker_not_only_the_parent(two_workers: LiveServer) -> None:
    lines = [json.loads(line) for line in two_workers.log_text().splitlines() if line.startswith("{")]
    started = [line for line in lines if line.get("msg") == "Application startup complete."]
    assert len(started) == 2  # both workers log through the configured JSON formatter
    assert Path(two_workers.log_path).exists()
