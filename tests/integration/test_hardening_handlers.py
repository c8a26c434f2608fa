"""A handler can misbehave in every way Python allows; the worker fails that attempt only.

In-process workers on a real database. Each test would have crashed, stalled or
stranded tasks on the engine before the hardening (issue #10), as its name says.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import psycopg
import pytest

from listener import create_task, create_tasks, new_task
from listener import watcher as watcher_module
from listener.dispatcher import STALE_QUEUE_S
from listener.registry import Registry, handler
from tests import fault_handlers
from tests.integration.engine_support import (
    disable_payload_checks,
    eventually,
    fault_registry,
    running_worker,
    statuses,
)

pytestmark = pytest.mark.anyio


def _row(conn: psycopg.Connection[Any], task_id: Any) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT status, attempts, error FROM tasks WHERE id = %s", (task_id,)
    ).fetchone()
    assert row is not None
    return tuple(row)


def _deep(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


async def test_a_payload_too_deep_to_decode_fails_alone_and_the_worker_serves_on(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    # Stored before the insert-time limit existed (the trigger is off here, as on a
    # database upgraded with such a row in it): ~5,000 levels, 35 KB.
    disable_payload_checks(conn)
    with conn.transaction():  # one claim batch: the poison row and its siblings
        poison = conn.execute(
            "INSERT INTO tasks (type, payload) VALUES ('noop', %s::jsonb) RETURNING id",
            (_deep(5000),),
        ).fetchone()
        siblings = create_tasks([new_task("noop") for _ in range(5)], conn=conn)
    assert poison is not None
    async with running_worker(dsn, fault_registry()) as worker:
        await eventually(lambda: statuses(conn) == {"failed": 1, "completed": 5})
        later = create_task("noop", {}, conn=conn)
        await eventually(lambda: _row(conn, later)[0] == "completed")
        assert worker.dispatcher is not None
    status, attempts, error = _row(conn, poison[0])
    assert (status, attempts) == ("failed", 1)
    assert error.startswith("PayloadError: payload is nested too deeply to decode")
    assert {_row(conn, s)[0] for s in siblings} == {"completed"}


async def test_an_oversized_stored_payload_is_refused_by_the_worker_not_decoded(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    disable_payload_checks(conn)
    big = json.dumps({"blob": "x" * (2 * 1024 * 1024)})  # compresses to a few KB
    # Copied from an already compressed value, it passes the stored-size CHECK.
    conn.execute("CREATE TEMP TABLE big (p jsonb)")
    conn.execute("INSERT INTO big VALUES (%s::jsonb)", (big,))
    row = conn.execute(
        "INSERT INTO tasks (type, payload) SELECT 'noop', p FROM big RETURNING id"
    ).fetchone()
    assert row is not None
    async with running_worker(dsn, fault_registry()):
        await eventually(lambda: _row(conn, row[0])[0] == "failed")
    assert "over the 1048576-byte limit" in _row(conn, row[0])[2]


@pytest.mark.parametrize(
    ("task_type", "error_prefix"),
    [
        ("stray_cancel", "StrayCancellation: the handler raised CancelledError"),
        ("task_cancels_itself", "StrayCancellation: the handler raised CancelledError"),
        ("system_exit", "SystemExit: 3"),
        ("sync_system_exit", "SystemExit: 4"),
        ("keyboard_interrupt", "KeyboardInterrupt"),
        ("base_exception", "_NotAnException: not an Exception"),
    ],
)
async def test_a_base_exception_from_a_handler_fails_its_attempt_and_nothing_else(
    dsn: str, conn: psycopg.Connection[Any], task_type: str, error_prefix: str
) -> None:
    async with running_worker(dsn, fault_registry(), concurrency=4) as worker:
        bystander = create_task("sleep", {"s": 1.0}, conn=conn)
        await eventually(lambda: _row(conn, bystander)[0] == "processing")
        culprit = create_task(task_type, {}, conn=conn)
        await eventually(lambda: _row(conn, culprit)[0] == "failed")
        # The other running task was not interrupted, and the worker claims on.
        await eventually(lambda: _row(conn, bystander)[0] == "completed")
        after = create_task("noop", {}, conn=conn)
        await eventually(lambda: _row(conn, after)[0] == "completed")
        assert not worker.stop_requested
    status, attempts, error = _row(conn, culprit)
    assert (status, attempts) == ("failed", 1)  # the attempt counted: no crash loop
    assert error.startswith(error_prefix)
    assert _row(conn, bystander)[1] == 1


async def test_a_timed_out_sync_handler_keeps_its_thread_slot_and_lease_until_it_returns(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    fault_handlers.RUNS.clear()
    fault_handlers.THREADS_MAX[0] = 0
    async with running_worker(dsn, fault_registry(), concurrency=2) as worker:
        ids = create_tasks([new_task("sync_overrun", {"s": 0.6}) for _ in range(4)], conn=conn)
        metrics = worker.metrics.registry

        def abandoned() -> float:
            return metrics.get_sample_value("listener_handler_threads_abandoned") or 0.0

        await eventually(lambda: abandoned() >= 1)
        await eventually(lambda: statuses(conn) == {"failed": 4}, timeout_s=30)
    # Never more handler threads than slots, however many runs were abandoned ...
    assert fault_handlers.THREADS_MAX[0] <= 2
    # ... and no task ran beside its own abandoned run: its retry waited for the thread.
    for task_id in ids:
        runs = sorted((s, e) for t, _, s, e in fault_handlers.RUNS if t == str(task_id))
        assert len(runs) == 2
        assert runs[0][1] <= runs[1][0], f"task {task_id} ran twice at once: {runs}"
    assert {_row(conn, i)[2].split(":")[0] for i in ids} == {"HandlerTimeout"}


async def test_retry_later_zero_with_one_attempt_runs_again_and_completes(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    # Each is claimed back by this very worker at once, often while its first run is
    # still being accounted for: the second claim must neither be dropped (left
    # processing until its lease runs out, then failed) nor completed by the first ack.
    ids = create_tasks([new_task("retry_later_zero_once") for _ in range(200)], conn=conn)
    async with running_worker(dsn, fault_registry(), concurrency=20, poll_interval_s=0.2):
        await eventually(lambda: statuses(conn) == {"completed": len(ids)}, timeout_s=15)
    counts = conn.execute("SELECT attempts, count(*) FROM tasks GROUP BY 1").fetchall()
    assert counts == [(1, len(ids))]


async def test_an_outcome_of_one_attempt_never_lands_on_the_next_attempt(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    fault_handlers.RUNS.clear()
    async with running_worker(dsn, fault_registry(), poll_interval_s=0.2):
        blocker = create_task("sleep", {"s": 0.3}, conn=conn)
        task_id = create_task("quick_then_slow", {"s": 2.0}, conn=conn)
        await eventually(lambda: statuses(conn) == {"processing": 2})
        # Apps hold both rows for a while: the outcomes of both attempts 1 wait.
        with psycopg.connect(dsn) as hold_blocker, psycopg.connect(dsn) as hold_task:
            hold_blocker.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (blocker,))
            hold_task.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (task_id,))
            await eventually(lambda: task_id in _seen_ids())  # attempt 1 returned
            # Rescued meanwhile (as if its lease had run out), then claimed again by this
            # same worker: attempt 2 runs for 2 s.
            hold_task.execute(
                "UPDATE tasks SET status = 'pending', worker_id = NULL, "
                "lease_expires_at = NULL WHERE id = %s",
                (task_id,),
            )
            hold_task.commit()
            await eventually(lambda: _row(conn, task_id)[:2] == ("processing", 2))
        # Attempt 1's completion, released now, must not complete attempt 2 mid-run.
        await anyio.sleep(0.5)
        assert _row(conn, task_id)[0] == "processing"
        await eventually(lambda: _row(conn, task_id)[0] == "completed", timeout_s=10)
    assert [r for r in fault_handlers.RUNS if r[0] == str(task_id)]


def _seen_ids() -> set[Any]:
    return set(fault_handlers._seen_once)


async def test_tasks_of_one_claim_start_in_priority_order(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    started: list[int] = []
    registry = Registry()

    @handler("ordered", registry=registry)
    async def ordered(task: Any) -> None:
        started.append(task.priority)  # never waits: one slot runs the batch in order

    priorities = [(i * 7919) % 61 - 30 for i in range(60)]  # shuffled, id order random
    create_tasks([new_task("ordered", priority=p) for p in priorities], conn=conn)
    async with running_worker(dsn, registry, concurrency=100):
        await eventually(lambda: len(started) == len(priorities))
    assert started == sorted(priorities, reverse=True)


async def test_a_missing_setting_waits_without_using_up_the_task(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    from listener.errors import ConfigError

    registry = Registry()
    runs: list[float] = []

    def smtp_settings() -> None:
        raise ConfigError("SMTP_FROM is not set")

    @handler("needs_setting", max_attempts=2, check_settings=smtp_settings, registry=registry)
    async def needs_setting(task: Any) -> None:
        runs.append(time.monotonic())
        smtp_settings()

    task_id = create_task("needs_setting", {}, conn=conn)
    async with running_worker(dsn, registry):
        await eventually(lambda: runs)
        await anyio.sleep(0.5)
    status, attempts, error = _row(conn, task_id)
    # Not failed after max_attempts: retried later, the attempt given back.
    assert (status, attempts) == ("pending", 0)
    assert error == "ConfigError: SMTP_FROM is not set"
    delay = conn.execute(
        "SELECT extract(epoch FROM run_at - now()) FROM tasks WHERE id = %s", (task_id,)
    ).fetchone()
    assert delay is not None
    assert delay[0] > 3.0  # a long wait, not the handler's backoff
    assert len(runs) == 1


async def test_the_age_of_the_longest_running_handler_is_a_gauge(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    async with running_worker(dsn, fault_registry()) as worker:
        metrics = worker.metrics.registry

        def oldest() -> float:
            return metrics.get_sample_value("listener_task_oldest_running_seconds") or 0.0

        assert oldest() == 0.0
        create_task("sleep", {"s": 1.5}, conn=conn)
        await eventually(lambda: oldest() > 0.5)
        await eventually(lambda: statuses(conn) == {"completed": 1})
        assert oldest() == 0.0


async def test_tasks_arriving_from_a_claim_in_flight_when_the_stop_came_go_back_at_once(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the timing is arranged: the claim runs in the database as always, and its
    # reply is held back until the stop has been requested.
    from listener import dispatcher as dispatcher_module

    real_claim = dispatcher_module.store.claim
    reply = anyio.Event()
    claimed = anyio.Event()

    async def slow_reply(*args: Any, **kwargs: Any) -> Any:
        rows = await real_claim(*args, **kwargs)
        if rows:
            claimed.set()
            await reply.wait()
        return rows

    monkeypatch.setattr(dispatcher_module.store, "claim", slow_reply)
    async with running_worker(dsn, fault_registry(), grace_s=30.0) as worker:
        ids = create_tasks([new_task("noop") for _ in range(3)], conn=conn)
        await claimed.wait()
        worker.request_stop()  # the grace period is 30 s
        await anyio.sleep(0.1)
        reply.set()
        await eventually(lambda: statuses(conn) == {"pending": 3}, timeout_s=3)
    assert {_row(conn, i)[1] for i in ids} == {0}  # never started: attempt given back


async def test_a_sync_handler_that_returns_after_its_timeout_fails_even_if_the_loop_was_late(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    registry = Registry()

    @handler("late_thread", timeout_s=0.1, max_attempts=1, registry=registry)
    def late_thread(task: Any) -> None:
        time.sleep(0.3)

    @handler("loop_blocker", registry=registry)
    async def loop_blocker(task: Any) -> None:
        time.sleep(0.6)  # noqa: ASYNC251 - blocks the event loop on purpose: a stall

    async with running_worker(dsn, registry, concurrency=4):
        late = create_task("late_thread", {}, conn=conn)
        await eventually(lambda: _row(conn, late)[0] == "processing")
        create_task("loop_blocker", {}, conn=conn)  # the loop sees the deadline late
        await eventually(lambda: _row(conn, late)[0] == "failed", timeout_s=10)
    assert _row(conn, late)[2].startswith("HandlerTimeout")


async def test_tasks_claimed_ahead_never_wait_long_behind_a_slot_that_stopped_moving(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    # One slot, draining a backlog of fast tasks: the worker claims ahead. A long task
    # arrives in the middle, and the tasks claimed with it queue behind it in that one
    # slot: they go back, and another worker with room runs them meanwhile.
    registry = fault_registry()
    async with running_worker(dsn, registry, concurrency=1, poll_interval_s=0.2) as first:
        create_tasks([new_task("noop") for _ in range(3000)], conn=conn)
        await eventually(lambda: statuses(conn).get("completed", 0) >= 500)
        with conn.transaction():
            long = create_task("sleep", {"s": 10.0}, conn=conn)
            fast = create_tasks([new_task("noop") for _ in range(200)], conn=conn)
        await eventually(lambda: _row(conn, long)[0] == "processing", timeout_s=10)
        async with running_worker(dsn, registry, concurrency=4, poll_interval_s=0.2):
            done = lambda: {_row(conn, i)[0] for i in fast} == {"completed"}  # noqa: E731
            await eventually(done, timeout_s=6)
        assert _row(conn, long)[0] == "processing"  # still running in the first worker
        assert first.dispatcher is not None


async def test_tasks_queued_behind_a_busy_slot_go_back_even_when_nothing_wakes_the_worker(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As above, with nothing else to wake the worker: no other worker, its poll a minute
    # away, and no watch hand-off (a watcher whose slots stay full sends a NOTIFY every
    # 100 ms, which woke it by chance while the watch was still held). The long task
    # goes first in its claim (a higher priority), so that claim's other tasks queue
    # behind it in the one slot: only the stale queue's own timer can put them back.
    monkeypatch.setattr(watcher_module, "FULL_FOR_POLLS", 100_000)
    registry = fault_registry()
    async with running_worker(dsn, registry, concurrency=1, poll_interval_s=60.0):
        create_tasks([new_task("noop") for _ in range(3000)], conn=conn)
        await eventually(lambda: statuses(conn).get("completed", 0) >= 500)
        long = create_task("sleep", {"s": 10.0}, conn=conn, priority=1)
        await eventually(lambda: _row(conn, long)[0] == "processing", timeout_s=10)
        assert statuses(conn).get("processing", 0) > 1  # claimed with it, queued behind it
        only_long = lambda: statuses(conn).get("processing", 0) == 1  # noqa: E731
        await eventually(only_long, timeout_s=STALE_QUEUE_S + 2)
        assert _row(conn, long)[0] == "processing"  # the slot is still busy with it
