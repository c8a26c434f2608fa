"""Fleet-wide limits, enforced in the claim: real PostgreSQL, real worker processes."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import psycopg

from listener import create_task, create_tasks, new_task
from tests.integration.engine_support import WorkerProcess, statuses, wait_until
from tests.ledger import most_at_once, read_runs

HANDLERS = ("--handlers", "tests.limit_handlers")


def _workers(dsn: str, tmp_path: Path, count: int, *args: str) -> list[WorkerProcess]:
    workers = []
    for n in range(count):
        env = {"LISTENER_TEST_LEDGER": str(tmp_path / f"ledger-{n}-{time.time_ns()}.txt")}
        workers.append(WorkerProcess(dsn, *HANDLERS, "--concurrency", "10", *args, env=env))
    for worker in workers:
        worker.wait_started()
    return workers


def _ledgers(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob("ledger-*.txt"))


def test_global_concurrency_holds_across_three_workers_and_a_killed_one(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    fast = ("--lease-s", "1", "--rescue-interval-s", "0.3", "--poll-interval-s", "0.5")
    workers = _workers(dsn, tmp_path, 3, *fast)
    killed: dict[int, float] = {}
    try:
        create_tasks([new_task("two_at_a_time", {"s": 0.3}) for _ in range(30)], conn=conn)
        wait_until(lambda: statuses(conn).get("completed", 0) >= 4)
        holder = wait_until(
            lambda: conn.execute(
                "SELECT worker_id FROM tasks WHERE status = 'processing' LIMIT 1"
            ).fetchone()
        )
        victim = next(w for w in workers if f"-{w.proc.pid}-" in holder[0])
        victim.signal(signal.SIGKILL)
        victim.wait(10)
        killed[victim.proc.pid] = time.time()
        wait_until(lambda: statuses(conn) == {"completed": 30}, timeout_s=60)
    finally:
        for worker in workers:
            worker.stop()
    runs = read_runs(_ledgers(tmp_path), killed)
    assert most_at_once(runs) <= 2
    assert len(runs) == 30


def test_a_rate_limit_allows_no_more_starts_in_any_window_across_three_workers(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    workers = _workers(dsn, tmp_path, 3, "--poll-interval-s", "30")
    try:
        began = time.monotonic()
        create_tasks([new_task("five_a_second") for _ in range(30)], conn=conn)
        wait_until(lambda: statuses(conn) == {"completed": 30}, timeout_s=20)
        took = time.monotonic() - began
    finally:
        for worker in workers:
            worker.stop()
    # A start is a claim, on the database's clock (the one clock every worker shares);
    # each handler starts a pickup delay (milliseconds) after its claim.
    rows = conn.execute(
        "SELECT extract(epoch FROM started_at)::float8 FROM tasks ORDER BY 1"
    ).fetchall()
    starts = [float(r[0]) for r in rows]
    assert len(starts) == 30
    assert len(read_runs(_ledgers(tmp_path))) == 30  # each ran once
    for i, first in enumerate(starts):  # every 1-second window from each start on
        assert sum(1 for s in starts[i:] if s < first + 1.0) <= 5, starts
    # Without polling (--poll-interval-s 30): woken when the window allows.
    assert 4.5 < took < 9.0


def test_retry_later_holds_no_slot_of_a_limited_type_while_it_waits(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    workers = _workers(dsn, tmp_path, 1)
    try:
        waiting = create_task("one_at_a_time", {"wait_first": 3.0}, conn=conn)
        wait_until(lambda: _row(conn, waiting)[0] == "pending" and _row(conn, waiting)[1])
        other = create_task("one_at_a_time", {"s": 0.1}, conn=conn)
        wait_until(lambda: _row(conn, other)[0] == "completed", timeout_s=2.5)
        assert _row(conn, waiting)[0] == "pending"  # still waiting for its own delay
        wait_until(lambda: _row(conn, waiting)[0] == "completed", timeout_s=10)
    finally:
        for worker in workers:
            worker.stop()


def test_a_worker_that_does_not_run_a_limited_type_is_not_held_back_by_it(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    limited = _workers(dsn, tmp_path, 1, "--types", "two_at_a_time")
    others = _workers(dsn, tmp_path, 1, "--types", "unlimited")
    try:
        create_tasks([new_task("two_at_a_time", {"s": 1.0}) for _ in range(6)], conn=conn)
        create_tasks([new_task("unlimited", {"s": 0.5}) for _ in range(8)], conn=conn)
        wait_until(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM tasks WHERE type = 'unlimited' AND status = 'completed'"
                ).fetchone()
                == (8,)
            ),
            timeout_s=5,
        )
        wait_until(lambda: statuses(conn) == {"completed": 14}, timeout_s=20)
    finally:
        for worker in [*limited, *others]:
            worker.stop()
    runs = read_runs(_ledgers(tmp_path))
    limited_runs = {
        t: r for t, r in runs.items()
        if conn.execute("SELECT type FROM tasks WHERE id = %s", (t,)).fetchone()
        == ("two_at_a_time",)
    }  # fmt: skip
    assert most_at_once(limited_runs) <= 2
    assert most_at_once(runs) > 2  # the unlimited type ran beside them, 8 at once


def test_an_operator_retry_of_a_limited_type_is_still_limited(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    from listener import admin

    ids = create_tasks([new_task("two_at_a_time", {"s": 0.4}) for _ in range(6)], conn=conn)
    conn.execute("UPDATE tasks SET status = 'failed', completed_at = now() WHERE id = ANY(%s)",
                 (ids,))  # fmt: skip
    workers = _workers(dsn, tmp_path, 2)
    try:
        admin.retry(conn, admin.Selection(types=("two_at_a_time",)))
        wait_until(lambda: statuses(conn) == {"completed": 6}, timeout_s=20)
    finally:
        for worker in workers:
            worker.stop()
    assert most_at_once(read_runs(_ledgers(tmp_path))) <= 2


def _row(conn: psycopg.Connection[Any], task_id: Any) -> tuple[Any, ...]:
    row = conn.execute("SELECT status, error FROM tasks WHERE id = %s", (task_id,)).fetchone()
    assert row is not None
    return tuple(row)
