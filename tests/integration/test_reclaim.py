"""A worker that claims back a task it is still running (its lease lapsed in a stall)."""

from __future__ import annotations

from typing import Any

import anyio
import psycopg
import pytest

from listener import create_task
from tests.integration.engine_support import (
    eventually,
    fault_registry,
    ledger,
    running_worker,
    statuses,
)

pytestmark = pytest.mark.anyio


async def test_a_task_claimed_back_while_its_run_goes_on_runs_once_and_the_worker_lives(
    dsn: str, effects_conn: psycopg.Connection[Any]
) -> None:
    # As if the worker had stalled past its lease: the task is rescued to pending
    # and this same worker claims it back while its first run is still going.
    conn = effects_conn
    registry = fault_registry()
    async with running_worker(dsn, registry, concurrency=4, poll_interval_s=0.2):
        task_id = create_task("slow_effect", {"s": 1.5}, conn=conn)
        await eventually(lambda: statuses(conn) == {"processing": 1})
        conn.execute(
            "UPDATE tasks SET status = 'pending', worker_id = NULL, lease_expires_at = NULL "
            "WHERE id = %s",
            (task_id,),
        )
        await eventually(
            lambda: (
                conn.execute("SELECT attempts FROM tasks WHERE id = %s", (task_id,)).fetchone()
                == (2,)
            )
        )
        await eventually(lambda: statuses(conn) == {"completed": 1})
        await anyio.sleep(2.0)  # as long as a second run of it would take
        after = create_task("noop", {}, conn=conn)
        await eventually(
            lambda: (
                conn.execute("SELECT status FROM tasks WHERE id = %s", (after,)).fetchone()
                == ("completed",)
            )
        )
    assert ledger(conn)["tasks_with_one_effect"] == 1
    assert ledger(conn)["tasks_with_duplicate_effects"] == 0
