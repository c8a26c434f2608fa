"""Transactional handlers: their own connections, and no open transaction before they write."""

from __future__ import annotations

import time
from typing import Any

import anyio
import psycopg
import pytest

from listener import Task
from listener.registry import Registry, handler
from tests.integration.engine_support import eventually, ledger, running_worker, statuses

pytestmark = pytest.mark.anyio


def _registry(api_wait_s: float) -> Registry:
    registry = Registry()

    @handler("noop", registry=registry)
    async def noop(task: Task) -> None:
        """Completes at once."""

    @handler("api_then_write", transactional=True, registry=registry)
    async def api_then_write(task: Task, conn: psycopg.AsyncConnection[Any]) -> None:
        """Waits on a (simulated) remote API first, then writes its effect."""
        await anyio.sleep(api_wait_s)
        await conn.execute(
            "INSERT INTO test_effects (task_id, what, pid) VALUES (%s, 'effect', 0)", (task.id,)
        )

    @handler(
        "write_then_hang", transactional=True, timeout_s=0.5, max_attempts=1, registry=registry
    )
    async def write_then_hang(task: Task, conn: psycopg.AsyncConnection[Any]) -> None:
        """Writes its effect, then runs past its timeout: the write must not survive."""
        await conn.execute(
            "INSERT INTO test_effects (task_id, what, pid) VALUES (%s, 'effect', 0)", (task.id,)
        )
        await anyio.sleep(3600)

    return registry


def _sessions_idle_in_transaction(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND state = 'idle in transaction'"
    ).fetchone()
    assert row is not None
    return int(row[0])


async def test_a_handler_waiting_on_an_api_before_it_writes_holds_no_open_transaction(
    dsn: str, effects_conn: psycopg.Connection[Any]
) -> None:
    conn = effects_conn
    async with running_worker(dsn, _registry(api_wait_s=1.5), concurrency=4):
        conn.execute("INSERT INTO tasks (type) SELECT 'api_then_write' FROM generate_series(1, 3)")
        await eventually(lambda: statuses(conn) == {"processing": 3})
        seen = []
        while statuses(conn).get("processing"):
            seen.append(_sessions_idle_in_transaction(conn))
            await anyio.sleep(0.1)
        await eventually(lambda: statuses(conn) == {"completed": 3})
    assert seen
    assert max(seen) == 0
    assert ledger(conn)["tasks_with_one_effect"] == 3


async def test_many_transactional_handlers_holding_connections_never_starve_the_engine(
    dsn: str, effects_conn: psycopg.Connection[Any]
) -> None:
    # 20 slow transactional handlers hold 20 connections for 4 s; the engine's own
    # pool (12 connections at this concurrency) keeps claiming and acknowledging.
    conn = effects_conn
    async with running_worker(dsn, _registry(api_wait_s=4.0), concurrency=30):
        conn.execute("INSERT INTO tasks (type) SELECT 'api_then_write' FROM generate_series(1, 20)")
        await eventually(lambda: statuses(conn).get("processing") == 20)
        started = time.monotonic()
        conn.execute("INSERT INTO tasks (type) SELECT 'noop' FROM generate_series(1, 5)")
        await eventually(
            lambda: conn.execute(
                "SELECT count(*) = 5 FROM tasks WHERE type = 'noop' AND status = 'completed'"
            ).fetchone()[0],  # type: ignore[index]
            timeout_s=10,
        )
        noops_done_after_s = time.monotonic() - started
        await eventually(lambda: statuses(conn) == {"completed": 25}, timeout_s=20)
    assert noops_done_after_s < 2.0, noops_done_after_s
    assert ledger(conn)["tasks_with_one_effect"] == 20


async def test_a_transactional_handler_past_its_timeout_leaves_no_write_behind(
    dsn: str, effects_conn: psycopg.Connection[Any]
) -> None:
    conn = effects_conn
    async with running_worker(dsn, _registry(api_wait_s=0), concurrency=2):
        conn.execute("INSERT INTO tasks (type) VALUES ('write_then_hang'), ('api_then_write')")
        await eventually(lambda: statuses(conn) == {"failed": 1, "completed": 1}, timeout_s=10)
    error = conn.execute("SELECT error FROM tasks WHERE type = 'write_then_hang'").fetchone()
    assert error is not None
    assert error[0].startswith("HandlerTimeout")
    effects = conn.execute(
        "SELECT t.type FROM test_effects AS e JOIN tasks AS t ON t.id = e.task_id"
    ).fetchall()
    assert effects == [("api_then_write",)]  # the timed-out handler's write was rolled back
