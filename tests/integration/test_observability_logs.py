"""A real `listener run` worker's JSON log lines: events, fields, and no e-mail leaks."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.integration.engine_support import WorkerProcess, wait_until

EMAIL = "priya.n+receipts@example.org"


@pytest.fixture
def worker(dsn: str) -> Iterator[WorkerProcess]:
    process = WorkerProcess(dsn, "--handlers", "tests.observability_handlers")
    try:
        process.wait_started()
        yield process
    finally:
        process.stop()


def events(process: WorkerProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in process.log().decode().splitlines() if line.strip()]


def finished(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM tasks WHERE status IN ('completed', 'failed')")
    return int(row.fetchone()[0])  # type: ignore[index]


def test_worker_logs_one_structured_line_per_outcome_and_never_the_email(
    conn: psycopg.Connection[Any], worker: WorkerProcess
) -> None:
    payload = json.dumps({"email": EMAIL, "order": "A-1"})
    ok_id, bounce_id = (
        conn.execute(
            "INSERT INTO tasks (type, payload) VALUES (%s, %s) RETURNING id", (kind, payload)
        ).fetchone()[0]  # type: ignore[index]
        for kind in ("obs_ok", "obs_bounce")
    )
    wait_until(lambda: finished(conn) == 2, timeout_s=15)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0

    lines = events(worker)
    completed = [e for e in lines if e["event"] == "task.completed"]
    failed = [e for e in lines if e["event"] == "task.failed"]
    assert [(e["task_id"], e["type"], e["attempt"]) for e in completed] == [
        (str(ok_id), "obs_ok", 1)
    ]
    assert [(e["task_id"], e["type"], e["level"]) for e in failed] == [
        (str(bounce_id), "obs_bounce", "warning")
    ]
    assert failed[0]["error"] == "PermanentError: 550 mailbox [email] unavailable"
    assert isinstance(completed[0]["duration_s"], float)
    assert {"worker.started", "worker.stopped"} <= {e["event"] for e in lines}
    assert EMAIL not in worker.log().decode()
    assert "example.org" not in worker.log().decode()
