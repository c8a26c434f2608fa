"""A real Prometheus server scrapes a real `listener run` worker processing real tasks.

Prometheus (Debian's package) runs on a free loopback port with its storage in a temp
folder and scrape_interval 1s; PromQL goes over its HTTP API. The first scrape shows
after ~5 s, so every check polls with a deadline.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.integration.engine_support import WorkerProcess, free_port
from tests.tools import ROOT, require_tool

pytestmark = pytest.mark.slow


@pytest.fixture
def prometheus_binary() -> str:
    return require_tool("prometheus")


@pytest.fixture
def prometheus(
    tmp_path: Path, prometheus_binary: str, metrics_worker: tuple[WorkerProcess, int]
) -> Iterator[str]:
    """Prometheus scraping the worker; the binary is checked first, before a worker starts."""
    binary = prometheus_binary
    shutil.copy(ROOT / "alerts.yml", tmp_path / "alerts.yml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [
            {
                "job_name": "listener",
                "static_configs": [{"targets": [f"127.0.0.1:{metrics_worker[1]}"]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


def api(base: str, path: str, **params: str) -> Any:
    """``data`` of a Prometheus API answer, or None while the server is starting."""
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback http
            return json.load(response)["data"]
    except (urllib.error.URLError, ConnectionError):
        return None


def scalar(base: str, promql: str) -> float | None:
    data = api(base, "query", query=promql)
    if not data or not data["result"]:
        return None
    return float(data["result"][0]["value"][1])


def insert(conn: psycopg.Connection[Any], kind: str, rows: int, delay: str = "0 s") -> None:
    conn.execute(
        "INSERT INTO tasks (type, run_at) "
        "SELECT %s, now() + %s::interval FROM generate_series(1, %s)",
        (kind, delay, rows),
    )


def test_prometheus_sees_throughput_and_queue_depth_of_a_working_worker(
    conn: psycopg.Connection[Any], prometheus: str
) -> None:
    insert(conn, "obs_ok", 4, delay="1 hour")  # scheduled: pending, not due
    insert(conn, "nobody_handles_this", 3)  # due, but no worker runs this type
    throughput = depth = None
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        insert(conn, "obs_ok", 5)  # a steady stream the worker completes at once
        throughput = scalar(
            prometheus,
            'sum(rate(listener_tasks_finished_total{type="obs_ok",outcome="completed"}[5s]))',
        )
        depth = scalar(prometheus, 'listener_queue_depth{job="listener",status="pending"}')
        if throughput and depth == 7:
            break
        time.sleep(0.5)
    assert throughput is not None
    assert throughput > 0
    assert depth == 7
    age = scalar(prometheus, "listener_queue_oldest_pending_age_seconds")
    assert age is not None
    assert age > 0
    assert scalar(prometheus, 'up{job="listener"}') == 1
    assert scalar(prometheus, "listener_listening") == 1


def test_shipped_alert_rules_evaluate_cleanly_on_live_worker_metrics(
    conn: psycopg.Connection[Any], prometheus: str
) -> None:
    """Every rule evaluates, and every condition is false: ``inactive``, not merely "not
    firing" (all rules but one wait minutes before firing, so a condition that held all
    along would still read ``pending`` here)."""
    insert(conn, "obs_ok", 3)
    deadline = time.monotonic() + 30
    rules: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        data = api(prometheus, "rules")
        rules = [r for g in (data or {}).get("groups", []) for r in g["rules"]]
        evaluated = rules and all(r["lastEvaluation"].startswith("20") for r in rules)
        settled = evaluated and all(r["state"] == "inactive" for r in rules)
        if settled and scalar(prometheus, "listener_listening") == 1:
            break
        time.sleep(0.5)
    assert len(rules) == 8  # every rule in alerts.yml
    assert {r["name"]: r["health"] for r in rules} == {r["name"]: "ok" for r in rules}
    # A healthy worker with an empty queue: no condition holds.
    assert {r["name"]: r["state"] for r in rules} == {r["name"]: "inactive" for r in rules}
