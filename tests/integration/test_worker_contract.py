"""The handler contract, end to end through an in-process worker on a real database."""

from __future__ import annotations

import itertools
import time
from typing import Any

import anyio
import psycopg
import pytest

from listener import create_task
from listener.registry import Registry, handler
from tests.integration.engine_support import eventually, fault_registry, running_worker

pytestmark = pytest.mark.anyio


def _task(conn: psycopg.Connection[Any], task_id: Any) -> dict[str, Any]:
    cur = conn.execute(
        "SELECT status, attempts, error, worker_id, lease_expires_at, run_at "
        "FROM tasks WHERE id = %s",
        (task_id,),
    )
    names = [d.name for d in cur.description or ()]
    row = cur.fetchone()
    assert row is not None
    return dict(zip(names, row, strict=True))


def _status(conn: psycopg.Connection[Any], task_id: Any) -> str:
    return str(_task(conn, task_id)["status"])


async def test_returning_handler_completes_task_and_clears_lease(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    async with running_worker(dsn, fault_registry()):
        task_id = create_task("noop", {}, conn=conn)
        await eventually(lambda: _status(conn, task_id) == "completed")
    row = _task(conn, task_id)
    assert (row["attempts"], row["error"], row["lease_expires_at"]) == (1, None, None)


async def test_permanent_error_fails_at_once_without_retry(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    async with running_worker(dsn, fault_registry()):
        task_id = create_task("permanent", {}, conn=conn)
        await eventually(lambda: _status(conn, task_id) == "failed")
    row = _task(conn, task_id)
    assert row["attempts"] == 1
    assert row["error"] == "PermanentError: this input can never work"


async def test_exception_retries_with_backoff_then_fails_at_max_attempts(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    async with running_worker(dsn, fault_registry()):
        task_id = create_task("always_fails", {}, conn=conn)
        await eventually(lambda: _status(conn, task_id) == "failed", timeout_s=10)
    row = _task(conn, task_id)
    assert row["attempts"] == 3
    assert row["error"] == "ValueError: always fails"


async def test_retry_later_reschedules_without_counting_an_attempt(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    async with running_worker(dsn, fault_registry()):
        task_id = create_task("retry_later_once", {}, conn=conn)
        await eventually(lambda: _task(conn, task_id)["error"] == "RetryLater: not yet")
        await eventually(lambda: _status(conn, task_id) == "completed", timeout_s=5)
    # Attempt 1 was given back: the completing run is recorded as attempt 1.
    assert _task(conn, task_id)["attempts"] == 1


async def test_handler_past_its_timeout_is_cancelled_and_counted_as_failed_attempt(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    async with running_worker(dsn, fault_registry()):
        task_id = create_task("hang", {}, conn=conn)
        await eventually(lambda: _status(conn, task_id) == "failed", timeout_s=10)
    row = _task(conn, task_id)
    assert row["attempts"] == 2
    assert row["error"] == "HandlerTimeout: handler ran past its 0.5s timeout"


async def test_malformed_payload_fails_and_worker_keeps_serving(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    async with running_worker(dsn, fault_registry()):
        bad = create_task("needs_shape", {"order": "not an object"}, conn=conn)
        await eventually(lambda: _status(conn, bad) == "failed")
        good = create_task("noop", {}, conn=conn)
        await eventually(lambda: _status(conn, good) == "completed")
    assert _task(conn, bad)["error"].startswith("TypeError: ")


async def test_task_without_handler_waits_pending_for_a_worker_that_knows_it(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    async with running_worker(dsn, fault_registry(), poll_interval_s=0.1):
        unknown = create_task("not_registered_here", {}, conn=conn)
        known = create_task("noop", {}, conn=conn)
        await eventually(lambda: _status(conn, known) == "completed")
        await anyio.sleep(0.3)  # several poll cycles: it must still be untouched
        assert _task(conn, unknown)["status"] == "pending"
        assert _task(conn, unknown)["attempts"] == 0

    registry = Registry()

    @handler("not_registered_here", registry=registry)
    async def late(task: Any) -> None:
        pass

    async with running_worker(dsn, registry):
        await eventually(lambda: _status(conn, unknown) == "completed")


async def test_forged_notify_with_junk_payload_is_only_a_wakeup(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    async with running_worker(dsn, fault_registry(), poll_interval_s=30.0):
        conn.execute("SELECT pg_notify('listener_tasks', repeat('junk', 1000))")
        conn.execute('NOTIFY listener_tasks, \'{"id": "not-a-uuid"}\'')
        task_id = create_task("noop", {}, conn=conn)
        await eventually(lambda: _status(conn, task_id) == "completed", timeout_s=5)


async def test_scheduled_task_runs_when_due_without_notify_or_poll(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    from datetime import timedelta

    async with running_worker(dsn, fault_registry(), poll_interval_s=30.0):
        task_id = create_task("noop", {}, conn=conn, run_at=timedelta(seconds=1))
        # The insert's NOTIFY is skipped (not due); the worker's run_at timer is armed
        # by the claim pass that a separate due task triggers.
        woken_by = create_task("noop", {}, conn=conn)
        await eventually(lambda: _status(conn, woken_by) == "completed")
        await eventually(lambda: _status(conn, task_id) == "completed", timeout_s=10)
    # Claimed once due, not before, by the database's clock (no sleep-and-look: a
    # loaded machine can't make this pass or fail by being slow).
    row = conn.execute("SELECT started_at >= run_at FROM tasks WHERE id = %s", (task_id,))
    assert row.fetchone() == (True,)


async def test_higher_priority_task_is_claimed_first(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    order: list[str] = []
    registry = Registry()

    @handler("ordered", registry=registry)
    async def ordered(task: Any) -> None:
        order.append(task.payload["name"])

    create_task("ordered", {"name": "low"}, conn=conn, priority=-5)
    create_task("ordered", {"name": "normal"}, conn=conn)
    create_task("ordered", {"name": "urgent"}, conn=conn, priority=10)
    async with running_worker(dsn, registry, concurrency=1):
        await eventually(lambda: len(order) == 3)
    assert order == ["urgent", "normal", "low"]


async def test_sync_handler_runs_in_a_thread_without_blocking_the_event_loop(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await anyio.sleep(0.05)

    async with running_worker(dsn, fault_registry()), anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        task_id = create_task("sync_sleep", {"s": 1.0}, conn=conn)
        await eventually(lambda: _status(conn, task_id) == "completed", timeout_s=5)
        tg.cancel_scope.cancel()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) < 0.5


async def test_transactional_handler_write_commits_with_completion(
    dsn: str, effects_conn: psycopg.Connection[Any]
) -> None:
    conn = effects_conn
    async with running_worker(dsn, fault_registry()):
        task_id = create_task("effect", {}, conn=conn)
        await eventually(lambda: _status(conn, task_id) == "completed")
    count = conn.execute("SELECT count(*) FROM test_effects WHERE task_id = %s", (task_id,))
    assert count.fetchone() == (1,)


async def test_transactional_handler_write_rolls_back_when_handler_raises(
    dsn: str, effects_conn: psycopg.Connection[Any]
) -> None:
    conn = effects_conn
    registry = Registry()

    @handler("write_then_fail", transactional=True, registry=registry)
    async def write_then_fail(task: Any, tx: psycopg.AsyncConnection[Any]) -> None:
        await tx.execute("INSERT INTO test_effects (task_id, what) VALUES (%s, 'x')", (task.id,))
        raise PermanentError("after writing")

    from listener import PermanentError

    async with running_worker(dsn, registry):
        task_id = create_task("write_then_fail", {}, conn=conn)
        await eventually(lambda: _status(conn, task_id) == "failed")
    assert conn.execute("SELECT count(*) FROM test_effects").fetchone() == (0,)
