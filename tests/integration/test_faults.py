"""Real faults against real worker processes; each ends with a ledger check.

Ledger: every task in exactly one terminal state, none lost, and (transactional
handlers) no effect applied twice.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import psycopg
import pytest

from listener import create_task, create_tasks, new_task
from tests.integration.engine_support import (
    WorkerProcess,
    free_port,
    ledger,
    statuses,
    wait_until,
    worker_processes,
)

FAST_LEASE = ("--lease-s", "1", "--rescue-interval-s", "0.3", "--poll-interval-s", "0.5")


INTERRUPTED = "Interrupted: the worker stopped before the handler finished"


def _row(conn: psycopg.Connection[Any], task_id: Any) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT status, attempts, worker_id, error FROM tasks WHERE id = %s", (task_id,)
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_sigkilled_worker_task_is_rescued_and_runs_once_to_completion(
    dsn: str, effects_conn: psycopg.Connection[Any]
) -> None:
    conn = effects_conn
    with worker_processes(dsn, 1, *FAST_LEASE) as (first,):
        task_id = create_task("slow_effect", {"s": 2}, conn=conn)
        wait_until(lambda: _row(conn, task_id)[0] == "processing")
        first.signal(signal.SIGKILL)
        first.wait()
    with worker_processes(dsn, 1, *FAST_LEASE):
        wait_until(lambda: _row(conn, task_id)[0] == "completed", timeout_s=20)
    assert _row(conn, task_id)[1] == 2  # the killed attempt counted
    assert ledger(conn) == {
        "statuses": {"completed": 1},
        "tasks_with_duplicate_effects": 0,
        "tasks_with_one_effect": 1,
    }


def test_frozen_worker_late_acknowledgement_changes_nothing(
    dsn: str, effects_conn: psycopg.Connection[Any]
) -> None:
    conn = effects_conn
    with worker_processes(dsn, 1, *FAST_LEASE) as (frozen,):
        task_id = create_task("slow_effect", {"s": 1}, conn=conn)
        wait_until(lambda: _row(conn, task_id)[0] == "processing")
        frozen.signal(signal.SIGSTOP)
        with worker_processes(dsn, 1, *FAST_LEASE):
            wait_until(lambda: _row(conn, task_id)[0] == "completed", timeout_s=20)
            winner = _row(conn, task_id)[2]
            frozen.signal(signal.SIGCONT)
            wait_until(lambda: b"task.lease_lost" in frozen.log(), timeout_s=10)
    assert _row(conn, task_id)[0] == "completed"
    assert _row(conn, task_id)[2] == winner
    assert ledger(conn)["tasks_with_one_effect"] == 1
    assert ledger(conn)["tasks_with_duplicate_effects"] == 0


def test_heartbeat_keeps_a_task_three_times_longer_than_its_lease(
    dsn: str, effects_conn: psycopg.Connection[Any]
) -> None:
    conn = effects_conn
    with worker_processes(dsn, 2, *FAST_LEASE):
        task_id = create_task("slow_effect", {"s": 3}, conn=conn)
        wait_until(lambda: _row(conn, task_id)[0] == "completed", timeout_s=20)
    assert _row(conn, task_id)[1] == 1  # never rescued: one attempt
    assert ledger(conn)["tasks_with_one_effect"] == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_finishes_quick_tasks_puts_slow_ones_back_counted_and_exits_zero(
    dsn: str, conn: psycopg.Connection[Any], signum: int
) -> None:
    with worker_processes(dsn, 1, "--grace-s", "1.5") as (worker,):
        quick = [create_task("announced_sleep", {"s": 0.3}, conn=conn) for _ in range(2)]
        slow = [create_task("announced_sleep", {"s": 60}, conn=conn) for _ in range(2)]
        wait_until(lambda: worker.log().count(b"handler.started") == 4)
        worker.signal(signum)
        assert worker.wait(20) == 0
    for task_id in quick:
        assert _row(conn, task_id)[0] == "completed"
    for task_id in slow:  # started, interrupted: the attempt counts
        assert _row(conn, task_id) == ("pending", 1, None, INTERRUPTED)
    assert "processing" not in statuses(conn)


def test_second_sigterm_puts_running_tasks_back_at_once(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    with worker_processes(dsn, 1, "--grace-s", "60") as (worker,):
        task_id = create_task("announced_sleep", {"s": 60}, conn=conn)
        wait_until(lambda: f"handler.started {task_id}".encode() in worker.log())
        worker.signal(signal.SIGTERM)
        wait_until(lambda: b"worker.stopping" in worker.log())
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        assert b'"in_flight": 1' in worker.log()
    assert _row(conn, task_id) == ("pending", 1, None, INTERRUPTED)


@pytest.mark.parametrize("metrics", ["no endpoint", "endpoint on"])
def test_a_storm_of_stop_signals_still_ends_in_a_clean_exit_with_the_task_released(
    dsn: str, conn: psycopg.Connection[Any], metrics: str
) -> None:
    # Signals keep arriving through the drain, the release and interpreter exit:
    # none of them may turn the clean exit into a death by signal. With the metrics
    # endpoint on (the default), closing it takes up to half a second on the way out.
    endpoint = ["--metrics-host", "127.0.0.1", "--metrics-port", str(free_port())]
    flags = ["--grace-s", "60", *(endpoint if metrics == "endpoint on" else [])]
    with worker_processes(dsn, 1, *flags) as (worker,):
        task_id = create_task("announced_sleep", {"s": 60}, conn=conn)
        wait_until(lambda: f"handler.started {task_id}".encode() in worker.log())
        deadline = time.monotonic() + 30
        while worker.proc.poll() is None and time.monotonic() < deadline:
            worker.signal(signal.SIGTERM)
            time.sleep(0.001)
        assert worker.wait(5) == 0
    assert _row(conn, task_id) == ("pending", 1, None, INTERRUPTED)


def test_stop_puts_back_claimed_tasks_that_never_started_at_once_not_after_the_grace(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    with worker_processes(dsn, 1, "--grace-s", "60", "--concurrency", "2001") as (worker,):
        sleeper = create_task("announced_sleep", {"s": 60}, conn=conn)
        wait_until(lambda: f"handler.started {sleeper}".encode() in worker.log())
        conn.execute("INSERT INTO tasks (type) SELECT 'spin' FROM generate_series(1, 2000)")
        wait_until(lambda: statuses(conn).get("completed", 0) >= 20)
        worker.signal(signal.SIGTERM)
        # The sleeper has its grace period; the claimed tasks that never started go
        # back now, for other workers, instead of when the grace period ends.
        wait_until(lambda: statuses(conn).get("processing") == 1, timeout_s=10)
        put_back = conn.execute(
            "SELECT count(*) FROM tasks WHERE type = 'spin' AND status = 'pending' "
            "AND attempts = 0 AND worker_id IS NULL"
        ).fetchone()
        assert put_back is not None
        assert put_back[0] > 0
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    counts = statuses(conn)
    assert set(counts) <= {"completed", "pending"}
    assert sum(counts.values()) == 2001


def test_a_drained_worker_exits_without_waiting_for_an_abandoned_handler_thread(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    with worker_processes(dsn, 1) as (worker,):
        task_id = create_task("sync_hang", {"s": 20}, conn=conn)
        wait_until(lambda: b"task.timed_out" in worker.log())  # its thread runs on
        assert _row(conn, task_id)[0] == "processing"  # leased until the thread ends
        worker.signal(signal.SIGTERM)
        assert worker.wait(5) == 0  # not 20 s later, when the thread would return
    # The thread died with the process: the timed-out attempt is written (no attempt left).
    status, attempts, _, error = _row(conn, task_id)
    assert (status, attempts) == ("failed", 1)
    assert error.startswith("HandlerTimeout")


def test_killed_listener_backend_reconnects_and_processes_what_arrived(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    with worker_processes(dsn, 1, "--poll-interval-s", "30") as (worker,):
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'listener:listen' AND datname = current_database()"
        ).fetchall()
        assert killed == [(True,)]
        ids = [create_task("noop", {}, conn=conn) for _ in range(5)]
        wait_until(lambda: statuses(conn) == {"completed": 5}, timeout_s=15)
        assert b"listener.reconnecting" in worker.log()
    assert {_row(conn, i)[0] for i in ids} == {"completed"}


def test_four_workers_and_concurrent_producers_complete_each_task_exactly_once(
    dsn: str, effects_conn: psycopg.Connection[Any]
) -> None:
    conn = effects_conn
    # 4 workers x 5,000 tasks: 4 producers insert 1,250 each while the workers run.
    per_producer, producers = 1250, 4

    def produce() -> None:
        with psycopg.connect(dsn, autocommit=True) as own:
            for _ in range(0, per_producer, 50):
                create_tasks([new_task("effect") for _i in range(50)], conn=own)

    with worker_processes(dsn, 4, "--concurrency", "8", "--log-level", "warning"):
        threads = [threading.Thread(target=produce) for _ in range(producers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = per_producer * producers
        wait_until(lambda: statuses(conn) == {"completed": total}, timeout_s=300)
    assert ledger(conn) == {
        "statuses": {"completed": total},
        "tasks_with_duplicate_effects": 0,
        "tasks_with_one_effect": total,
    }


def test_crash_looping_poison_task_fails_after_max_attempts_while_others_complete(
    dsn: str, effects_conn: psycopg.Connection[Any]
) -> None:
    conn = effects_conn
    poison = create_task("kill_self", {}, conn=conn)
    good = [create_task("effect", {}, conn=conn) for _ in range(20)]
    workers: list[WorkerProcess] = []

    def poison_done() -> bool:
        if not workers or workers[-1].proc.poll() is not None:
            workers.append(WorkerProcess(dsn, "--concurrency", "1", *FAST_LEASE))
        return bool(_row(conn, poison)[0] == "failed")

    try:
        wait_until(poison_done, timeout_s=60, interval_s=0.2)
        wait_until(lambda: statuses(conn).get("completed") == len(good), timeout_s=30)
    finally:
        for w in workers:
            w.stop()
    status, attempts, _, error = _row(conn, poison)
    assert (status, attempts) == ("failed", 3)
    assert "WorkerLost" in error
    assert ledger(conn)["tasks_with_one_effect"] == len(good)


def test_a_task_that_hangs_past_the_grace_period_on_every_deploy_eventually_fails(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    task_id = create_task("announced_sleep", {"s": 3600}, conn=conn)
    for deploy in (1, 2):
        with worker_processes(dsn, 1, "--grace-s", "0.3", "--max-attempts", "2") as (worker,):
            wait_until(lambda: f"handler.started {task_id}".encode() in worker.log())
            worker.signal(signal.SIGTERM)
            assert worker.wait(20) == 0
        assert _row(conn, task_id)[1] == deploy  # each interrupted attempt counted
    status, attempts, _, error = _row(conn, task_id)
    assert (status, attempts) == ("failed", 2)
    assert error == f"{INTERRUPTED}, and no attempts are left"
