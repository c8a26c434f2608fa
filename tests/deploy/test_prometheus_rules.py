"""The shipped Prometheus config and alerts, checked and unit-tested by promtool."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.exported import exported_names, referenced_names
from tests.tools import ROOT, require_tool

# prometheus.yml and alerts.yml ship at the top level; their unit tests live here.
PROMETHEUS_DIR = ROOT
ALERT_TESTS = ROOT / "tests" / "deploy" / "alerts_test.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def test_prometheus_config_is_valid_and_loads_the_alerts(promtool: str) -> None:
    result = run(promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_alert_rules_are_valid(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(PROMETHEUS_DIR / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def load(name: str) -> Any:
    return yaml.safe_load((PROMETHEUS_DIR / name).read_text())


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    alerts = {r["alert"] for g in load("alerts.yml")["groups"] for r in g["rules"]}
    fired: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    assert alerts == {
        "ListenerBacklogGrowing", "ListenerOldestPendingTaskTooOld", "ListenerFailureRatioHigh",
        "ListenerNoWorkerListening", "ListenerTasksRescued", "ListenerNotificationQueueFilling",
        "ListenerQueueStatsUnavailable", "ListenerTaskRunningTooLong",
    }  # fmt: skip
    assert alerts - fired == set(), "alerts never tested firing"
    assert alerts - silent == set(), "alerts never tested staying silent"


def test_every_alert_links_a_runbook_section_that_exists() -> None:
    anchors = {
        "#" + line.lstrip("#").strip().lower()
        for line in (ROOT / "docs" / "monitoring.md").read_text().splitlines()
        if line.startswith("### ")
    }
    for group in load("alerts.yml")["groups"]:
        for rule in group["rules"]:
            runbook = rule["annotations"]["runbook"]
            assert runbook.startswith("docs/monitoring.md#")
            assert runbook.removeprefix("docs/monitoring.md") in anchors, rule["alert"]


def test_every_metric_an_alert_uses_is_exported_by_the_worker() -> None:
    exported = exported_names()
    for group in load("alerts.yml")["groups"]:
        for rule in group["rules"]:
            missing = referenced_names(rule["expr"]) - exported
            assert missing == set(), (rule["alert"], missing)
