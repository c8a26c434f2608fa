"""A bulk insert wakes the worker once and every row is processed."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.integration.engine_support import eventually, fault_registry, running_worker, statuses

pytestmark = pytest.mark.anyio


async def test_ten_thousand_tasks_in_one_transaction_send_one_notification_all_processed(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    async with running_worker(dsn, fault_registry(), concurrency=100) as worker:
        with conn.transaction():
            conn.execute("INSERT INTO tasks (type) SELECT 'noop' FROM generate_series(1, 5000)")
            conn.execute("INSERT INTO tasks (type) SELECT 'noop' FROM generate_series(1, 5000)")
        await eventually(lambda: statuses(conn) == {"completed": 10_000}, timeout_s=60)
        notified = worker.metrics.registry.get_sample_value("listener_notifications_total")
    # Two statements, one transaction: identical NOTIFYs collapse into one at commit.
    assert notified == 1.0
