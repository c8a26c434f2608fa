"""Admin commands and doctor next to a real running worker."""

from __future__ import annotations

from typing import Any

import anyio
import psycopg
import pytest

from listener import cli, doctor, handler
from listener.doctor import Level
from listener.registry import Registry
from tests.integration.engine_support import eventually, running_worker

pytestmark = pytest.mark.anyio


def status_of(conn: psycopg.Connection[Any], task_id: Any) -> str:
    row = conn.execute("SELECT status FROM tasks WHERE id = %s", [task_id]).fetchone()
    assert row is not None
    return str(row[0])


async def test_retried_task_is_picked_up_by_a_running_worker_through_notify(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    registry = Registry()
    runs: list[int] = []

    @handler("flaky_report", registry=registry)
    async def flaky_report(task: Any) -> None:
        runs.append(task.attempt)

    row = conn.execute(
        "INSERT INTO tasks (type, status, attempts, error, completed_at) "
        "VALUES ('flaky_report', 'failed', 5, 'boom', now()) RETURNING id"
    ).fetchone()
    assert row is not None
    # A long poll interval: only retry's NOTIFY can wake the worker in time.
    async with running_worker(dsn, registry, poll_interval_s=60.0):
        code = await anyio.to_thread.run_sync(
            cli.main, ["retry", "--type", "flaky_report", "--dsn", dsn]
        )
        await eventually(lambda: status_of(conn, row[0]) == "completed", timeout_s=5)
    assert code == 0
    assert runs == [1]  # a fresh first attempt, not the sixth


async def test_doctor_finds_nothing_wrong_with_a_running_worker(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    registry = Registry()

    @handler("slow_job", registry=registry)
    async def slow_job(task: Any) -> None:
        await anyio.sleep(30)

    async with running_worker(dsn, registry, grace_s=0.1, concurrency=2):
        # Two run, one waits: pending work of a type a live worker handles.
        conn.execute("INSERT INTO tasks (type) VALUES ('slow_job'), ('slow_job'), ('slow_job')")
        await eventually(
            lambda: (
                conn.execute(
                    "SELECT count(*) = 2 FROM tasks WHERE status = 'processing'"
                ).fetchone()
                == (True,)
            )
        )
        findings = await anyio.to_thread.run_sync(
            lambda: doctor.diagnose(dsn, doctor.Thresholds(idle_listener_s=0))
        )
    failed = [f.line() for f in findings if f.level is Level.FAIL]
    assert failed == []
    listeners = [f for f in findings if "idle in a transaction" in f.title]
    assert [f.level for f in listeners] == [Level.OK]
    handled = [f for f in findings if "live worker" in f.title]
    assert [f.level for f in handled] == [Level.OK]
