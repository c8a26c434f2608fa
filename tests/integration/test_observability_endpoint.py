"""A real `listener run` process serves /healthz, /readyz and the queue gauges."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.engine_support import ROOT, WorkerProcess, wait_until


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def gauges(body: str) -> dict[tuple[str, str | None], float]:
    return {
        (s.name, s.labels.get("status")): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def test_running_worker_is_alive_ready_and_exports_queue_gauges(
    conn: psycopg.Connection[Any], metrics_worker: tuple[WorkerProcess, int]
) -> None:
    _, port = metrics_worker
    conn.execute("INSERT INTO tasks (type) SELECT 'nobody_handles_this' FROM generate_series(1, 3)")

    assert get(port, "/healthz") == (200, json.dumps({"alive": True}) + "\n")
    wait_until(lambda: get(port, "/readyz")[0] == 200, timeout_s=10)
    status, body = get(port, "/metrics")
    assert status == 200
    samples = gauges(body)
    assert samples[("listener_queue_stats_up", None)] == 1
    assert samples[("listener_queue_depth", "pending")] == 3
    assert samples[("listener_queue_depth", "processing")] == 0
    assert samples[("listener_listening", None)] == 1


def test_a_taken_metrics_port_is_a_one_line_error(dsn: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "listener.cli", "run", "--dsn", dsn,
             "--handlers", "tests.observability_handlers", "--log-format", "json",
             "--metrics-host", "127.0.0.1", "--metrics-port", str(port)],
            cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"listener: error: cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    ]
