"""Transactional handlers: their own connections, and their writes commit with the completion."""

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

    @handler("savepoint_then_fail", transactional=True, max_attempts=1, registry=registry)
    async def savepoint_then_fail(task: Task, conn: psycopg.AsyncConnection[Any]) -> None:
        """Writes inside its own conn.transaction() block, then fails."""
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO test_effects (task_id, what, pid) VALUES (%s, 'effect', 0)",
                (task.id,),
            )
        raise ValueError("fails after its block")

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


async def test_a_block_inside_a_transactional_handler_is_undone_when_the_handler_fails(
    dsn: str, effects_conn: psycopg.Connection[Any]
) -> None:
    conn = effects_conn
    async with running_worker(dsn, _registry(api_wait_s=0), concurrency=2):
        conn.execute("INSERT INTO tasks (type) VALUES ('savepoint_then_fail')")
        await eventually(lambda: statuses(conn) == {"failed": 1})
    # The handler's own transaction() block was a savepoint of the completing
    # transaction, not a commit of its own.
    assert conn.execute("SELECT count(*) FROM test_effects").fetchone() == (0,)


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
