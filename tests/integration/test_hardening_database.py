"""The database fails in every way a failover or an operator can make it; the worker survives.

Real faults: a database switched read-only (as in a failover or Supabase's read-only
mode), sessions terminated with pg_terminate_backend, rows locked by another
transaction, a server that accepts connections and never answers, a worker killed
with SIGKILL. Each test would have failed on the engine before the hardening (#10).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import psycopg
import pytest

from listener import create_task, create_tasks, new_task
from tests.integration.engine_support import (
    ROOT,
    WorkerProcess,
    database_read_only,
    eventually,
    fault_registry,
    running_worker,
    statuses,
    terminate_other_sessions,
    wait_until,
    worker_processes,
)

pytestmark = pytest.mark.anyio


def _row(conn: psycopg.Connection[Any], task_id: Any) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT status, attempts, error, worker_id FROM tasks WHERE id = %s", (task_id,)
    ).fetchone()
    assert row is not None
    return tuple(row)


async def test_outcomes_wait_through_a_read_only_database_and_land_once_it_is_writable(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    async with running_worker(dsn, fault_registry()) as worker:
        running = create_task("sleep", {"s": 0.5}, conn=conn)
        await eventually(lambda: _row(conn, running)[0] == "processing")
        with database_read_only(conn):
            await anyio.sleep(2.0)  # the handler returns meanwhile: its completion waits
            assert _row(conn, running)[0] == "processing"
        await eventually(lambda: _row(conn, running)[0] == "completed")
        later = create_task("noop", {}, conn=conn)  # and the worker claims on
        await eventually(lambda: _row(conn, later)[0] == "completed")
        failures = worker.metrics.registry.get_sample_value(
            "listener_loop_errors_total", {"loop": "acks", "error": "ReadOnlySqlTransaction"}
        )
        assert (failures or 0) >= 1
    assert _row(conn, running)[:2] == ("completed", 1)  # written once, never rescued


async def test_a_row_locked_by_another_transaction_does_not_hold_back_its_batch(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    ids = create_tasks([new_task("sleep", {"s": 0.4}) for _ in range(5)], conn=conn)
    async with running_worker(dsn, fault_registry()):
        await eventually(lambda: statuses(conn) == {"processing": 5})
        with psycopg.connect(dsn) as locker:  # an app holding one row, say
            locker.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (ids[0],))
            await eventually(lambda: statuses(conn) == {"completed": 4, "processing": 1})
            await anyio.sleep(0.3)
            assert _row(conn, ids[0])[0] == "processing"
        await eventually(lambda: statuses(conn) == {"completed": 5})
    assert _row(conn, ids[0])[:2] == ("completed", 1)


async def test_a_claim_whose_reply_never_arrived_is_put_back_at_once_not_after_its_lease(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    worker_id = f"w-{uuid.uuid4().hex[:8]}"

    def orphan() -> Any:
        # What a claim that committed but whose reply was lost leaves behind.
        row = conn.execute(
            "INSERT INTO tasks (type, status, attempts, worker_id, claim_token, started_at, "
            "lease_expires_at) VALUES ('noop', 'processing', 1, %s, gen_random_uuid(), now(), "
            "now() + interval '1 hour') RETURNING id",
            (worker_id,),
        ).fetchone()
        assert row is not None
        return row[0]

    at_start = orphan()
    async with running_worker(dsn, fault_registry(), worker_id=worker_id):
        await eventually(lambda: _row(conn, at_start)[0] == "completed")
        after_error = orphan()
        terminate_other_sessions(conn)  # the next claim fails on a dead connection ...
        create_task("noop", {}, conn=conn)  # ... and this one makes it claim
        await eventually(lambda: _row(conn, after_error)[0] == "completed")
    for task_id in (at_start, after_error):  # the lost claim's attempt was given back
        assert _row(conn, task_id)[:2] == ("completed", 1)


def test_after_an_outage_longer_than_the_lease_the_owner_renews_before_anyone_rescues(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    fast = ("--lease-s", "3", "--rescue-interval-s", "0.2", "--poll-interval-s", "0.5")
    with worker_processes(dsn, 2, *fast) as workers:
        task_id = create_task("announced_sleep", {"s": 7}, conn=conn)
        wait_until(lambda: b"handler.started" in b"".join(w.log() for w in workers))
        with database_read_only(conn):
            time.sleep(4.5)  # every lease has run out meanwhile
        wait_until(lambda: _row(conn, task_id)[0] == "completed", timeout_s=20)
        logs = b"".join(w.log() for w in workers)
    assert b"task.rescued" not in logs
    assert logs.count(b"handler.started") == 1  # ran once: nobody took it from its owner
    assert _row(conn, task_id)[:2] == ("completed", 1)


def test_the_rescuer_applies_the_attempt_limit_fixed_when_the_task_was_claimed(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    fast = ("--lease-s", "1", "--rescue-interval-s", "0.3")
    owner = WorkerProcess(dsn, "--types", "patient", *fast)
    try:
        owner.wait_started()
        task_id = create_task("patient", {"s": 60}, conn=conn)  # its handler allows 10
        wait_until(lambda: f"handler.started {task_id}".encode() in owner.log())
        owner.signal(signal.SIGKILL)
        owner.wait()
    finally:
        owner.stop()
    # Another worker, for other types, with a default of one attempt, rescues it.
    with worker_processes(dsn, 1, "--types", "noop", "--max-attempts", "1", *fast) as (w,):
        wait_until(lambda: b"task.rescued" in w.log(), timeout_s=15)
    status, attempts, error, _ = _row(conn, task_id)
    assert (status, attempts) == ("pending", 1)
    assert error.startswith("WorkerLost")


class _SilentServer:
    """Accepts TCP connections on loopback and never says a word (a hung database)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(client)

    def close(self) -> None:
        self.sock.close()
        for client in self.accepted:
            client.close()


@pytest.fixture
def silent_server() -> Iterator[_SilentServer]:
    server = _SilentServer()
    yield server
    server.close()


def test_a_stop_signal_while_waiting_for_an_unanswering_database_exits_promptly(
    silent_server: _SilentServer,
) -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{silent_server.port}/postgres"
    worker = WorkerProcess(dsn)
    try:
        wait_until(lambda: silent_server.accepted, timeout_s=10)  # it is connecting
        time.sleep(0.3)
        worker.signal(signal.SIGTERM)
        assert worker.wait(3) == 0  # a requested stop, not death by signal
    finally:
        worker.stop()
    assert b"worker.stopped" in worker.log()


async def test_a_worker_cancelled_from_outside_still_writes_outcomes_and_puts_tasks_back(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    from listener.worker import Worker, WorkerSettings

    worker = Worker(WorkerSettings(dsn=dsn, poll_interval_s=5.0), registry=fault_registry())
    with anyio.CancelScope() as outside:
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            long = create_task("sleep", {"s": 60}, conn=conn)
            quick = create_task("noop", {}, conn=conn)
            await eventually(lambda: _row(conn, long)[0] == "processing")
            await eventually(lambda: _row(conn, quick)[0] != "pending")
            outside.cancel()  # e.g. the app embedding the worker shuts down
    assert _row(conn, quick)[0] == "completed"
    assert _row(conn, long)[:2] == ("pending", 1)  # interrupted: put back, attempt counted
    workers = conn.execute("SELECT count(*) FROM listener.workers").fetchone()
    assert workers == (0,)


def test_an_engine_fault_exits_non_zero_after_putting_its_tasks_back(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    # No real fault of the engine can be made on purpose (each one found is fixed), so
    # tests/engine_fault.py injects one: a BaseException out of the heartbeat loop.
    worker = WorkerProcess(
        dsn, "--handlers", "tests.engine_fault",
        env={"LISTENER_TEST_FAULT_AFTER_S": "1.5"},
    )  # fmt: skip
    try:
        worker.wait_started()
        task_id = create_task("sleep", {"s": 60}, conn=conn)
        wait_until(lambda: _row(conn, task_id)[0] == "processing")
        assert worker.wait(15) == 1
    finally:
        worker.stop()
    assert b"worker.crashed" in worker.log()
    assert _row(conn, task_id)[:2] == ("pending", 1)


def _commits(conn: psycopg.Connection[Any]) -> int:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    return int(row[0])


FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


@pytest.mark.skipif(
    not os.path.exists(FAKETIME) and os.environ.get("LISTENER_TEST_TOOLS") != "1",
    reason="libfaketime is not installed (apt-get install faketime; CI installs it)",
)
def test_a_worker_clock_ahead_of_the_database_does_not_make_it_poll_for_a_scheduled_task(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    skewed = {
        "LD_PRELOAD": FAKETIME, "FAKETIME": "+1.5s", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }  # fmt: skip
    row = conn.execute(
        "INSERT INTO tasks (type, run_at) VALUES ('noop', now() + interval '4 s') RETURNING id"
    ).fetchone()
    assert row is not None
    worker = WorkerProcess(dsn, "--poll-interval-s", "30", env=skewed)
    try:
        worker.wait_started()
        before = _commits(conn)
        time.sleep(4.5)  # not polling ourselves: every commit in this window is the worker's
        spent = _commits(conn) - before
        wait_until(lambda: _row(conn, row[0])[0] == "completed", timeout_s=10)
    finally:
        worker.stop()
    assert spent < 20, f"{spent} commits while waiting for one scheduled task"


def test_a_worker_with_every_slot_busy_does_not_spin(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    import psutil

    with worker_processes(dsn, 1, "--concurrency", "2") as (worker,):
        conn.execute(
            "INSERT INTO tasks (type, payload, run_at) VALUES "
            "('sleep', '{\"s\": 6}', now()), ('sleep', '{\"s\": 6}', now() + interval '0.5 s')"
        )
        wait_until(lambda: statuses(conn) == {"processing": 2})
        process = psutil.Process(worker.proc.pid)
        time.sleep(1.0)  # the scheduled one is due now, and no slot is free for it
        before = process.num_ctx_switches().voluntary  # the event loop's thread
        time.sleep(2.0)
        wakeups = process.num_ctx_switches().voluntary - before
    assert wakeups < 50, f"the event loop woke {wakeups} times in 2 s with every slot busy"


def test_max_attempts_above_the_schemas_limit_is_refused_at_start(dsn: str) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "listener.cli", "run", "--dsn", dsn, "--max-attempts", "5000",
         "--handlers", "tests.fault_handlers"],
        capture_output=True, text=True, cwd=ROOT, timeout=30, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 2
    assert "at most 1000" in done.stderr


async def test_a_task_at_the_attempts_cap_does_not_break_every_claim(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    capped = conn.execute(
        "INSERT INTO tasks (type, attempts) VALUES ('noop', 1000) RETURNING id"
    ).fetchone()
    assert capped is not None
    others = create_tasks([new_task("noop") for _ in range(3)], conn=conn)
    async with running_worker(dsn, fault_registry()):
        await eventually(lambda: {_row(conn, i)[0] for i in others} == {"completed"})
        await eventually(lambda: _row(conn, capped[0])[0] == "failed")
    assert _row(conn, capped[0])[2].startswith("AttemptsExhausted")


def test_a_storm_of_wakeups_with_nothing_to_claim_is_held_to_a_floor(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    with worker_processes(dsn, 1, "--poll-interval-s", "30"):
        before = _commits(conn)
        with psycopg.connect(dsn, autocommit=True) as notifier:
            deadline = time.monotonic() + 2.0
            sent = 0
            while time.monotonic() < deadline:  # forged wake-ups: nothing to claim
                notifier.execute("SELECT pg_notify('listener_tasks', '')")
                sent += 1
        time.sleep(1.2)  # the statistics of the last claims arrive
        spent = _commits(conn) - before - sent - 2
    # At most one empty claim (and its follow-up query) per 10 ms floor, not one per wake.
    assert sent > 1000, f"only {sent} notifications sent"
    assert spent < 2 * 2.0 / 0.01 + 20, f"{spent} commits for {sent} empty wake-ups"


def test_a_task_claimed_back_after_its_lease_was_lost_is_renewed_like_any_other(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    fast = ("--lease-s", "1", "--rescue-interval-s", "0.3", "--poll-interval-s", "0.3")
    with worker_processes(dsn, 1, *fast) as (worker,):
        task_id = create_task("announced_sleep", {"s": 4}, conn=conn)
        wait_until(lambda: worker.log().count(b"handler.started") == 1)
        # Taken from the worker (as a rescuer would after a stall): its lease is lost.
        conn.execute(
            "UPDATE tasks SET status = 'pending', worker_id = NULL, lease_expires_at = NULL "
            "WHERE id = %s",
            (task_id,),
        )
        wait_until(lambda: worker.log().count(b"handler.started") == 2)  # claimed back
        wait_until(lambda: _row(conn, task_id)[0] == "completed", timeout_s=20)
        log = worker.log()
    # The second run, 4 s under a 1 s lease, was renewed throughout: never rescued.
    assert b"task.rescued" not in log
    assert log.count(b"handler.started") == 2
    assert _row(conn, task_id)[:2] == ("completed", 2)


def test_a_worker_that_starts_while_the_database_refuses_connections_waits_for_it(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    from psycopg.conninfo import make_conninfo

    name = conn.info.dbname
    with psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')  # even superusers
        try:
            worker = WorkerProcess(dsn)
            wait_until(lambda: b"worker.waiting_for_database" in worker.log(), timeout_s=15)
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    try:
        worker.wait_started()  # up once the database takes connections again
        task_id = create_task("noop", {}, conn=conn)
        wait_until(lambda: _row(conn, task_id)[0] == "completed")
    finally:
        worker.stop()
