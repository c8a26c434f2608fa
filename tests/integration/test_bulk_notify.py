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
    with psycopg.connect(dsn, autocommit=True) as listening:
        listening.execute("LISTEN listener_tasks")
        async with running_worker(dsn, fault_registry(), concurrency=100):
            with conn.transaction():
                conn.execute("INSERT INTO tasks (type) SELECT 'noop' FROM generate_series(1, 5000)")
                conn.execute("INSERT INTO tasks (type) SELECT 'noop' FROM generate_series(1, 5000)")
            await eventually(lambda: statuses(conn) == {"completed": 10_000}, timeout_s=60)
        # The worker, its slots full, also sends NOTIFYs (hand-offs): count the producer's.
        producer = conn.info.backend_pid
        sent = [n for n in listening.notifies(timeout=0.5) if n.pid == producer]
    # Two statements, one transaction: identical NOTIFYs collapse into one at commit.
    assert len(sent) == 1
