"""A shipped handler whose settings are missing: a warning at start, tasks that wait unharmed."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from listener import create_task
from tests.integration.engine_support import WorkerProcess, wait_until

UNSET = {
    name: ""
    for name in (
        "SMTP_HOST", "SMTP_FROM", "SMTP_USERNAME", "SMTP_PASSWORD", "LLM_BASE_URL",
        "LLM_MODEL", "LLM_API_KEY", "RAZORPAY_WEBHOOK_SECRET",
    )
}  # fmt: skip


def _events(worker: WorkerProcess, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith(b"{")]
    return [line for line in lines if line.get("event") == name]


def test_run_warns_once_per_handler_whose_settings_are_missing_and_the_task_waits(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    worker = WorkerProcess(dsn, "--handlers", "handlers", env=UNSET)
    try:
        worker.wait_started()
        warned = {e["type"]: e["error"] for e in _events(worker, "handler.misconfigured")}
        assert warned == {
            "send_email": "SMTP_FROM is not set",
            "generate_care_plan": "LLM_BASE_URL is not set",
            "razorpay_webhook": "RAZORPAY_WEBHOOK_SECRET is not set",
        }
        assert len(_events(worker, "handler.misconfigured")) == 3  # once each
        task_id = create_task(
            "send_email", {"to": "a@example.com", "subject": "Hi", "body": "Hello"}, conn=conn
        )
        wait_until(lambda: _row(conn, task_id)[2] is not None)
    finally:
        worker.stop()
    status, attempts, error, due_in_s = _row(conn, task_id)
    # Retried later, attempt given back: fixing the setting lets it through, however
    # long that takes (before, 5 attempts were used up in 15 s).
    assert (status, attempts, error) == ("pending", 0, "ConfigError: SMTP_FROM is not set")
    assert due_in_s > 3


def _row(conn: psycopg.Connection[Any], task_id: Any) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT status, attempts, error, extract(epoch FROM run_at - now())::float8 "
        "FROM tasks WHERE id = %s",
        (task_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)
