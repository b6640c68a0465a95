"""Shared readers for the dashboard and alert rules (used by the lint and end-to-end tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
FILES = REPO / "helm" / "session-broker" / "files"
DASHBOARD = FILES / "grafana-dashboard.json"
RULES = FILES / "prometheus-rules.yaml"
SCHEMA = REPO / "observability" / "grafana-dashboard.schema.json"
ALERT_TESTS = REPO / "observability" / "alerts.test.yaml"


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """All non-row panels, including panels nested in collapsed rows."""
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def to_promql(expr: str, rate_interval: str = "1m") -> str:
    """Substitute the Grafana variables the way Grafana would for tenant=All."""
    return (
        expr.replace("$__rate_interval", rate_interval)
        .replace("${__rate_interval}", rate_interval)
        .replace('"$tenant"', '".*"')
    )


def load_alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]
