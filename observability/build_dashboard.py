"""Generate helm/session-broker/files/grafana-dashboard.json (run from the repo root).

    python observability/build_dashboard.py

The JSON is provisioning-style (no `__inputs`): the Prometheus data source is the `datasource`
template variable and tenant-labelled queries filter on `tenant=~"$tenant"`.
tests/observability/test_dashboard.py fails when the committed JSON differs from this output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parents[1] / "helm" / "session-broker" / "files" / "grafana-dashboard.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
T = 'tenant=~"$tenant"'
RI = "$__rate_interval"


def rate(selector: str) -> str:
    return f"rate({selector}[{RI}])"


def sum_by(by: str, expr: str) -> str:
    """`expr` summed over replicas, one series per value of the `by` labels (a single series for "")."""
    return f"sum by ({by}) ({expr})" if by else f"sum({expr})"


def or_zero(expr: str) -> str:
    """0 instead of "no data" while no series exists yet (a counter appears with its first increment)."""
    return f"{expr} or on() vector(0)"


def of_tenants(metric: str, match: str = "") -> str:
    """`metric` for the tenants chosen in the dashboard's tenant variable (and any other `match`)."""
    return f"{metric}{{{match}{',' if match else ''}{T}}}"


def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "range": True, "refId": ref}


class Layout:
    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.next_id = 1
        self.x = 0
        self.y = 0

    def row(self, title: str) -> None:
        if self.x:
            self.x, self.y = 0, self.y + 8
        self.panels.append(
            {
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "id": self.next_id,
                "panels": [],
                "title": title,
                "type": "row",
            }
        )
        self.next_id += 1
        self.y += 1

    def panel(
        self,
        title: str,
        description: str,
        targets: list[tuple[str, str]],
        unit: str = "short",
        kind: str = "timeseries",
        width: int = 8,
    ) -> None:
        if self.x + width > 24:
            self.x, self.y = 0, self.y + 8
        options: dict[str, Any]
        if kind == "timeseries":
            options = {
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                "tooltip": {"mode": "multi", "sort": "desc"},
            }
        else:
            options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
        self.panels.append(
            {
                "datasource": DS,
                "description": description,
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "gridPos": {"h": 8, "w": width, "x": self.x, "y": self.y},
                "id": self.next_id,
                "options": options,
                "targets": [
                    target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)
                ],
                "title": title,
                "type": kind,
            }
        )
        self.next_id += 1
        self.x += width


def ratio_or_zero(num: str, den: str, by: str) -> str:
    """num/den by labels, reading 0 (not "no data") where the numerator has no series yet."""
    return f"({sum_by(by, num)} or {sum_by(by, den)} * 0) / {sum_by(by, den)}"


def quantiles(bucket: str, by: str, qs: tuple[float, ...], legend: str) -> list[tuple[str, str]]:
    group = f"le, {by}" if by else "le"
    return [
        (f"histogram_quantile({q}, {sum_by(group, rate(bucket))})", f"p{round(q * 100)} {legend}".strip())
        for q in qs
    ]


def build() -> dict[str, Any]:
    d = Layout()
    d.row("Sessions")
    d.panel(
        "Live sessions by tenant and kind",
        "session_broker_sessions_live, refreshed periodically by the leader replica.",
        [(f"max by (tenant, kind) ({of_tenants('session_broker_sessions_live')})", "{{tenant}} {{kind}}")],
    )
    d.panel(
        "Sessions created / s",
        "By how: created (minted here), registered (caller-minted id), rotated.",
        [
            (
                sum_by("tenant, how", rate(of_tenants("session_broker_sessions_created_total"))),
                "{{tenant}} {{how}}",
            )
        ],
        unit="ops",
    )
    d.panel(
        "Sessions ended / s by reason",
        "deleted, expired_idle, expired_lifetime, evicted, revoked, rotated. Idle expiry normally dominates.",
        [(sum_by("reason", rate(of_tenants("session_broker_sessions_ended_total"))), "{{reason}}")],
        unit="ops",
    )
    d.panel(
        "Session lifetime quantiles",
        "Age of sessions when they ended (histogram_quantile over session_broker_session_lifetime_seconds).",
        quantiles(of_tenants("session_broker_session_lifetime_seconds_bucket"), "", (0.5, 0.9, 0.99), ""),
        unit="s",
    )
    touches = of_tenants("session_broker_touches_total")
    d.panel(
        "Touch write ratio",
        "written / (written + throttled): share of touches that moved the expiry (a database write). "
        "Lower is cheaper; throttled touches are reads.",
        [
            (
                ratio_or_zero(
                    rate(of_tenants("session_broker_touches_total", 'result="written"')),
                    rate(of_tenants("session_broker_touches_total", 'result=~"written|throttled"')),
                    "tenant",
                ),
                "{{tenant}}",
            )
        ],
        unit="percentunit",
    )
    d.panel(
        "Touches / s by result",
        "written, throttled, not_found (a gateway touching an unknown or ended session).",
        [(sum_by("result", rate(touches)), "{{result}}")],
        unit="ops",
    )
    d.panel(
        "Binding mismatches and quota actions / s",
        "Session-Principal mismatches (possible hijack attempts or gateway bugs), 429 quota rejections, "
        "quota evictions.",
        [
            (
                or_zero(sum_by("operation", rate(of_tenants("session_broker_binding_mismatches_total")))),
                "mismatch {{operation}}",
            ),
            (
                or_zero(sum_by("scope", rate(of_tenants("session_broker_quota_rejections_total")))),
                "rejected {{scope}}",
            ),
            (
                or_zero(sum_by("scope", rate(of_tenants("session_broker_quota_evictions_total")))),
                "evicted {{scope}}",
            ),
        ],
        unit="ops",
    )
    d.panel(
        "Expiry warnings and request-limit refusals / s",
        "session.expiring events written, and touches refused with 429 by a per-session request limit "
        "(max_requests, max_requests_per_minute).",
        [
            (f"sum({rate(f'session_broker_expiry_warnings_total{{{T}}}')}) or on() vector(0)", "warnings"),
            (
                f"sum by (limit) ({rate(f'session_broker_session_requests_limited_total{{{T}}}')})"
                " or on() vector(0)",
                "refused {{limit}}",
            ),
        ],
        unit="ops",
    )

    d.row("HTTP API")
    http = "session_broker_http_requests_total"
    d.panel(
        "Requests / s by route",
        "By route template and method; probes and /metrics are excluded.",
        [(sum_by("route, method", rate(http)), "{{method}} {{route}}")],
        unit="reqps",
    )
    d.panel(
        "Latency p50 / p99 by route",
        "From session_broker_http_request_duration_seconds.",
        quantiles("session_broker_http_request_duration_seconds_bucket", "route", (0.5, 0.99), "{{route}}"),
        unit="s",
    )
    d.panel(
        "Error ratio by route",
        "Share of responses that were 5xx (server errors, including 503) and 4xx (client errors; 404 is "
        "normal for ended sessions).",
        [
            (ratio_or_zero(rate(f'{http}{{status="5xx"}}'), rate(http), "route"), "5xx {{route}}"),
            (ratio_or_zero(rate(f'{http}{{status="4xx"}}'), rate(http), "route"), "4xx {{route}}"),
        ],
        unit="percentunit",
    )
    d.panel(
        "503 Service Unavailable / s",
        "Answers given because the database was unreachable or too slow (gateways should retry).",
        [(sum_by("", rate("session_broker_unavailable_responses_total")), "503/s")],
        unit="reqps",
    )
    d.panel(
        "Requests in flight",
        "Summed over replicas.",
        [(sum_by("", "session_broker_http_requests_in_flight"), "in flight")],
    )

    d.row("Database and purge")
    d.panel(
        "DB pool saturation",
        "in_use / size per replica (1.0 = every connection busy) and callers waiting for a connection.",
        [
            (
                f"{sum_by('instance', 'session_broker_db_pool_in_use')}"
                f" / {sum_by('instance', 'session_broker_db_pool_size')}",
                "in use {{instance}}",
            ),
            (sum_by("instance", "session_broker_db_pool_waiting"), "waiting {{instance}}"),
        ],
        unit="percentunit",
    )
    d.panel(
        "DB query p99 by operation",
        "From session_broker_db_query_duration_seconds.",
        quantiles("session_broker_db_query_duration_seconds_bucket", "operation", (0.99,), "{{operation}}"),
        unit="s",
    )
    d.panel(
        "DB errors / s by kind",
        "From session_broker_db_errors_total.",
        [(or_zero(sum_by("kind", rate("session_broker_db_errors_total"))), "{{kind}}")],
        unit="ops",
    )
    d.panel(
        "Expiry notice delay",
        "From a session's expiry to the purge statement that recorded it (event, counters, tombstone): "
        "normally within twice SESSION_BROKER_PURGE_INTERVAL_SECONDS.",
        quantiles("session_broker_expiry_notice_delay_seconds_bucket", "", (0.5, 0.99), ""),
        unit="s",
    )
    d.panel(
        "Purge backlog",
        "Expired rows not yet purged (as measured by the purger). Should stay flat or fall.",
        [("max(session_broker_purge_backlog)", "backlog")],
    )
    d.panel(
        "Purge throughput",
        "Rows deleted per second by table, and purge runs per second by result (ok, error, skipped).",
        [
            (sum_by("table", rate("session_broker_purge_deleted_total")), "deleted {{table}}"),
            (sum_by("result", rate("session_broker_purge_runs_total")), "runs {{result}}"),
        ],
        unit="ops",
    )
    d.panel(
        "Purge batch duration",
        "p99 of one purge batch (one transaction), and batches per second.",
        [
            *quantiles("session_broker_purge_batch_duration_seconds_bucket", "", (0.99,), "batch"),
            (sum_by("", rate("session_broker_purge_batch_duration_seconds_count")), "batches/s"),
        ],
        unit="s",
    )

    d.row("MCP request analytics (reported by gateways in touch bodies)")
    gw = of_tenants("session_broker_gateway_requests_total")
    d.panel(
        "MCP requests / s by method",
        "Normalised MCP method (unknown names are 'other').",
        [(sum_by("method", rate(gw)), "{{method}}")],
        unit="reqps",
    )
    d.panel(
        "MCP error ratio by method",
        "Requests the gateway reported with ok=false.",
        [
            (
                ratio_or_zero(
                    rate(of_tenants("session_broker_gateway_request_errors_total")), rate(gw), "method"
                ),
                "{{method}}",
            )
        ],
        unit="percentunit",
    )
    d.panel(
        "MCP p99 duration by method",
        "As reported by gateways (duration_ms).",
        quantiles(
            of_tenants("session_broker_gateway_request_duration_seconds_bucket"),
            "method",
            (0.99,),
            "{{method}}",
        ),
        unit="s",
    )

    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": "Session and state-handle broker for MCP gateways: sessions, HTTP API, database, "
        "purge and gateway-reported MCP analytics.",
        "editable": True,
        "graphTooltip": 1,
        "links": [],
        "panels": d.panels,
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["session-broker", "mcp"],
        "templating": {
            "list": [
                {
                    "hide": 0,
                    "label": "Data source",
                    "name": "datasource",
                    "query": "prometheus",
                    "refresh": 1,
                    "regex": "",
                    "type": "datasource",
                },
                {
                    "allValue": ".*",
                    "datasource": DS,
                    "hide": 0,
                    "includeAll": True,
                    "label": "Tenant",
                    "multi": True,
                    "name": "tenant",
                    "query": {
                        "qryType": 1,
                        "query": "label_values(session_broker_sessions_live, tenant)",
                        "refId": "PrometheusVariableQueryEditor-VariableQuery",
                    },
                    "refresh": 2,
                    "regex": "",
                    "sort": 1,
                    "type": "query",
                },
            ]
        },
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": "Session broker",
        "uid": "session-broker",
        "version": 1,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUTPUT.write_text(render())
    sys.stdout.write(f"wrote {OUTPUT}\n")
