"""The shipped Grafana dashboard: valid against Grafana's schema, PromQL that parses.

The schema is generated from Grafana's own TypeScript types (npm @grafana/schema,
classic dashboard model) by tests/deploy/grafana/generate-schema.sh; no Grafana server
is installable here, so the JSON model is what we can check.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.deploy.exported import exported_names, referenced_names
from tests.tools import ROOT, require_tool

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "listener.json"
SCHEMA = ROOT / "tests" / "deploy" / "grafana_dashboard.schema.json"
# Grafana substitutes these before the query reaches Prometheus; promtool needs values.
TEMPLATE_VALUES = {"$__rate_interval": "1m", "$job": "listener", "$type": ".*"}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def schema_errors(model: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(model)]


def exprs(model: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) for every query of every panel."""
    return [
        (panel["title"], target["expr"])
        for panel in model["panels"]
        for target in panel.get("targets", [])
    ]


def test_the_schema_is_the_one_of_the_grafana_version_compose_runs() -> None:
    """A dashboard valid for another Grafana release proves little about this one."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    image = compose["services"]["grafana"]["image"]
    pinned = image.removeprefix("grafana/grafana:")
    comment = json.loads(SCHEMA.read_text())["$comment"]
    generated = re.search(r"@grafana/schema (\d+\.\d+\.\d+)", comment)
    assert generated is not None, comment
    assert generated[1] == pinned, f"schema from {generated[1]}, compose runs {image}"


def test_dashboard_is_valid_against_grafanas_dashboard_schema() -> None:
    assert schema_errors(dashboard()) == []


def test_the_schema_rejects_a_misspelt_panel_field() -> None:
    broken = copy.deepcopy(dashboard())
    broken["panels"][1]["gridpos"] = broken["panels"][1].pop("gridPos")
    errors = schema_errors(broken)
    assert len(errors) == 1
    assert errors[0].startswith("['panels', 1]: ")  # neither a valid panel nor a valid row


def test_dashboard_covers_what_operators_watch() -> None:
    text = " ".join(e for _, e in exprs(dashboard()))
    for needle in [
        "rate(listener_tasks_finished_total",
        "sum by (type, outcome)",
        "listener_task_pickup_delay_seconds_bucket",
        "listener_task_duration_seconds_bucket",
        "listener_queue_depth",
        "listener_tasks_in_flight",
        "listener_db_reconnects_total",
        'outcome="rescued"',
    ]:
        assert needle in text, needle


def test_every_metric_the_dashboard_queries_is_exported_by_the_worker() -> None:
    exported = exported_names()
    for title, expr in exprs(dashboard()):
        assert referenced_names(expr) <= exported, (title, referenced_names(expr) - exported)


def test_panels_have_unique_ids_and_query_the_dashboards_datasource() -> None:
    model = dashboard()
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids))
    for panel in model["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_provisioned_datasource_matches_the_dashboard_variable_default() -> None:
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (source,) = sources["datasources"]
    variable = next(v for v in dashboard()["templating"]["list"] if v["name"] == "datasource")
    assert (source["type"], source["uid"]) == ("prometheus", variable["current"]["value"])


def substitute(expr: str) -> str:
    for name, value in TEMPLATE_VALUES.items():
        expr = expr.replace(name, value)
    assert not re.search(r"\$\w", expr), f"unknown template variable in {expr!r}"
    return expr


def test_every_dashboard_expression_parses_as_promql(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    rules = [
        {"record": f"dashboard:panel_query:{i}", "expr": substitute(expr)}
        for i, (_, expr) in enumerate(exprs(dashboard()))
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_promtool_check_rules_rejects_a_broken_expression(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    path = tmp_path / "broken.yml"
    rule = {"record": "dashboard:broken", "expr": "sum by (type (rate(x[1m]))"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": [rule]}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
