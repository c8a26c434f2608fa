"""The test harness: worker and CLI subprocesses run without the developer's settings."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from listener import create_task
from tests.integration.engine_support import WorkerProcess, wait_until
from tests.integration.support import cli_env

DEVELOPER_ENV = {
    "SMTP_PASSWORD": "dev-relay-password",
    "LLM_API_KEY": "sk-developer-key-0000",
    "RAZORPAY_WEBHOOK_SECRET": "dev-webhook-secret",
}


def test_a_worker_process_does_not_inherit_the_developers_handler_settings(
    effects_conn: psycopg.Connection[Any], dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in DEVELOPER_ENV.items():
        monkeypatch.setenv(name, value)
    worker = WorkerProcess(dsn, env={"SMTP_HOST": "127.0.0.1"})  # what a test passes on purpose
    try:
        worker.wait_started()
        task_id = create_task(
            "env_probe", {"names": [*DEVELOPER_ENV, "SMTP_HOST"]}, conn=effects_conn
        )
        seen = wait_until(
            lambda: effects_conn.execute(
                "SELECT what FROM test_effects WHERE task_id = %s ORDER BY what", (task_id,)
            ).fetchall()
        )
    finally:
        worker.stop()
    assert [what for (what,) in seen] == [
        "LLM_API_KEY=<unset>",
        "RAZORPAY_WEBHOOK_SECRET=<unset>",
        "SMTP_HOST=127.0.0.1",
        "SMTP_PASSWORD=<unset>",
    ]


def test_a_cli_subprocess_does_not_inherit_the_developers_handler_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in DEVELOPER_ENV.items():
        monkeypatch.setenv(name, value)
    env = cli_env(SMTP_HOST="127.0.0.1")
    assert not set(DEVELOPER_ENV) & set(env)
    assert env["SMTP_HOST"] == "127.0.0.1"
