"""Alert rules: promtool lint and unit tests (every alert firing and not firing)."""

from __future__ import annotations

import subprocess

import yaml

from .dashboard_exprs import ALERT_TESTS, RULES, load_alert_rules

EXPECTED_ALERTS = {
    "SessionBrokerDown",
    "SessionBrokerHigh5xxRatio",
    "SessionBrokerHigh503Ratio",
    "SessionBrokerHighP99Latency",
    "SessionBrokerPurgeBacklogGrowing",
    "SessionBrokerExpiriesRecordedLate",
    "SessionBrokerPurgeFailing",
    "SessionBrokerDbPoolSaturated",
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def test_promtool_check_rules(promtool: str) -> None:
    proc = run(promtool, "check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_test_rules(promtool: str) -> None:
    proc = run(promtool, "test", "rules", str(ALERT_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_is_complete() -> None:
    rules = load_alert_rules()
    assert {r["alert"] for r in rules} == EXPECTED_ALERTS
    for rule in rules:
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"] and "First response" in rule["annotations"]["description"]


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    doc = yaml.safe_load(ALERT_TESTS.read_text())
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert fired == EXPECTED_ALERTS
    assert quiet == EXPECTED_ALERTS
