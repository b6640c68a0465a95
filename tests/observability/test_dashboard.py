"""The Grafana dashboard: schema-valid, generated, every query on our metrics and variables."""

from __future__ import annotations

import json
import re
import sys

import jsonschema
import pytest

from app import collectors, work_metrics

from .dashboard_exprs import DASHBOARD, REPO, SCHEMA, load_dashboard, panels

COLLECTORS = [
    c
    for c in [*vars(collectors).values(), *vars(work_metrics).values()]
    if isinstance(c, collectors.Counter | collectors.Gauge | collectors.Histogram)
]
TENANT_METRICS = {c._name for c in COLLECTORS if "tenant" in c._labelnames}
ALL_METRICS = {c._name for c in COLLECTORS}
SELECTOR = re.compile(
    r"\b(session_broker_[a-z_]+?)(?:_bucket|_count|_sum|_total)?(\{[^}]*\})?(?=[\s\[\),]|$)"
)


def test_dashboard_matches_the_grafana_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(load_dashboard()), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:20])


def test_dashboard_is_provisioning_style() -> None:
    dashboard = load_dashboard()
    assert "__inputs" not in dashboard and "__requires" not in dashboard
    assert "id" not in dashboard or dashboard["id"] is None
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    tenant = variables["tenant"]
    assert tenant["type"] == "query" and tenant["multi"] and tenant["includeAll"]
    assert tenant["query"]["query"] == "label_values(session_broker_sessions_live, tenant)"
    assert tenant["datasource"]["uid"] == "${datasource}"


def test_committed_dashboard_is_the_generator_output() -> None:
    sys.path.insert(0, str(REPO / "observability"))
    try:
        import build_dashboard
    finally:
        sys.path.pop(0)
    assert DASHBOARD.read_text() == build_dashboard.render(), "run: python observability/build_dashboard.py"


def test_panel_ids_unique() -> None:
    ids = [p["id"] for p in load_dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_selector_parser_sees_names_and_tenant_filters() -> None:
    expr = (
        'sum by (le) (rate(session_broker_session_lifetime_seconds_bucket{tenant=~"$tenant"}[5m]))'
        ' / sum(session_broker_http_requests_total) + session_broker_sessions_live{kind="x"}'
    )
    assert SELECTOR.findall(expr) == [
        ("session_broker_session_lifetime_seconds", '{tenant=~"$tenant"}'),
        ("session_broker_http_requests", ""),
        ("session_broker_sessions_live", '{kind="x"}'),
    ]
    assert {
        "session_broker_sessions_live",
        "session_broker_touches",
        "session_broker_gateway_requests",
    } <= TENANT_METRICS
    assert "session_broker_http_requests" not in TENANT_METRICS


@pytest.mark.parametrize("panel", panels(load_dashboard()), ids=lambda p: p["title"])
def test_panel_queries(panel: dict[str, object]) -> None:
    assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    targets = panel["targets"]
    assert isinstance(targets, list) and targets
    for target in targets:
        assert target["datasource"]["uid"] == "${datasource}"
        expr = target["expr"]
        found = SELECTOR.findall(expr)
        assert found, f"no session_broker_ metric in {expr}"
        for name, selector in found:
            assert name in ALL_METRICS, f"unknown metric {name} in {expr}"
            if name in TENANT_METRICS:
                assert 'tenant=~"$tenant"' in selector, f"{name} not filtered by tenant in {expr}"
        if "rate(" in expr:
            assert "$__rate_interval" in expr
