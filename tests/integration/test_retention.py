"""The worker's optional retention deletes old finished tasks and nothing else."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.integration.engine_support import eventually, fault_registry, running_worker

pytestmark = pytest.mark.anyio


async def test_worker_retention_prunes_old_finished_tasks_only(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(
        "INSERT INTO tasks (type, status, completed_at) VALUES "
        "('noop', 'completed', now() - interval '2 days'),"
        "('noop', 'failed', now() - interval '2 days'),"
        "('noop', 'completed', now() - interval '1 minute')"
    )
    conn.execute("INSERT INTO tasks (type, run_at) VALUES ('noop', now() + interval '1 day')")

    def remaining() -> list[tuple[str, bool]]:
        rows = conn.execute(
            "SELECT status, completed_at IS NULL FROM tasks ORDER BY status"
        ).fetchall()
        return [(status, open_) for status, open_ in rows]

    async with running_worker(
        dsn, fault_registry(), prune_older_than_s=3600.0, prune_interval_s=0.1
    ):
        await eventually(lambda: len(remaining()) == 2, timeout_s=10)
    assert remaining() == [("completed", False), ("pending", True)]
