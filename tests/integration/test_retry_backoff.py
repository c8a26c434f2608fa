"""Backoff end to end: a failed attempt's run_at is pushed by the policy's delay, and the
next attempt is claimed only once that run_at has come (database clock throughout)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from listener import create_task
from listener.registry import Registry, handler
from tests.integration.engine_support import eventually, running_worker

pytestmark = pytest.mark.anyio


def retry_state(conn: psycopg.Connection[Any], task_id: Any, attempts: int) -> Any:
    """(delay from the claim to the new run_at in s, run_at) once attempt ``attempts``
    failed and the task waits; None before that."""
    row = conn.execute(
        "SELECT extract(epoch FROM run_at - started_at), run_at FROM tasks "
        "WHERE id = %s AND status = 'pending' AND attempts = %s AND error IS NOT NULL",
        (task_id, attempts),
    ).fetchone()
    return None if row is None else (float(row[0]), row[1])


async def test_each_failed_attempt_pushes_run_at_by_the_growing_backoff(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    registry = Registry()

    # base 1 s: attempt 1 waits 0.5-1 s, attempt 2 waits 1-2 s (half fixed, half jitter).
    @handler("fails_twice", registry=registry, backoff_base_s=1.0, backoff_max_s=10.0)
    async def fails_twice(task: Any) -> None:
        if task.attempt <= 2:
            raise ValueError(f"attempt {task.attempt} fails")

    # A 30 s poll: only the run_at timer can bring the task back within the test.
    async with running_worker(dsn, registry, poll_interval_s=30.0):
        task_id = create_task("fails_twice", {}, conn=conn)
        first_delay, first_run_at = await eventually(lambda: retry_state(conn, task_id, 1))
        second_delay, second_run_at = await eventually(lambda: retry_state(conn, task_id, 2))
        await eventually(
            lambda: (
                conn.execute("SELECT status FROM tasks WHERE id = %s", (task_id,)).fetchone()
                == ("completed",)
            )
        )
    # Lower bounds are exact (the retry's now() is after the claim's); the upper ones
    # allow a second for the handler and the acknowledgement on a loaded machine.
    assert 0.5 <= first_delay <= 1.0 + 1.0
    assert 1.0 <= second_delay <= 2.0 + 1.0
    assert second_run_at > first_run_at
    row = conn.execute(
        "SELECT attempts, started_at >= %s FROM tasks WHERE id = %s", (second_run_at, task_id)
    ).fetchone()
    assert row == (3, True)  # the third attempt was claimed once its run_at had come
