"""The proof: 4 workers, 5,000 tasks, misbehaving handlers, a database under fire.

While producers insert 5,000 tasks whose handlers return, raise Exception or a
BaseException, let out a stray cancellation, call sys.exit, overrun their timeout in a
thread, or ask RetryLater(0) -- with poison payloads mixed in -- the workers' database
sessions are terminated every 200 ms for 10 s, the database turns read-only for 2 s,
and one worker is SIGKILLed and restarted. At the end every task is in exactly one
terminal state, the one its handler called for; no task ever ran beside itself (the
ledger of handler start and end times); no worker died but the one killed; nothing is
left processing; and every surviving worker exits 0 on SIGTERM.
"""

from __future__ import annotations

import collections
import itertools
import json
import random
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.chaos_handlers import ERRORS, EXPECTED
from tests.integration.engine_support import (
    WorkerProcess,
    database_read_only,
    disable_payload_checks,
    wait_until,
)

pytestmark = pytest.mark.slow

TASKS, PRODUCERS, WORKERS = 5000, 4, 4
KINDS = {  # kind -> share of the tasks
    "return": 0.55, "retry_later": 0.1, "raise": 0.1, "base_exception": 0.05,
    "stray_cancel": 0.05, "system_exit": 0.05, "overrun": 0.1,
}  # fmt: skip
WORKER_ARGS = (
    "--handlers", "tests.chaos_handlers", "--concurrency", "10", "--lease-s", "3",
    "--rescue-interval-s", "0.5", "--poll-interval-s", "0.5",
)  # fmt: skip


def _plan() -> list[tuple[uuid.UUID, str]]:
    rng = random.Random(20261201)
    kinds = rng.choices(list(KINDS), weights=list(KINDS.values()), k=TASKS)
    return [(uuid.uuid4(), kind) for kind in kinds]


def _insert(conn: psycopg.Connection[Any], batch: list[tuple[uuid.UUID, str]]) -> None:
    # Explicit ids and ON CONFLICT: a producer that retries after a cut connection
    # never inserts a task twice.
    rows = [
        (i, "chaos_overrun" if kind == "overrun" else "chaos", json.dumps({"do": kind}),
         5 if EXPECTED[kind] == "completed" else 2)
        for i, kind in batch
    ]  # fmt: skip
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO tasks (id, type, payload, max_attempts) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (id) DO NOTHING",
            rows,
        )


def _produce(dsn: str, batches: list[list[tuple[uuid.UUID, str]]], errors: list[str]) -> None:
    """Insert the batches over ~8 s, through the chaos; retry a batch until it lands."""
    conn: psycopg.Connection[Any] | None = None
    for batch in batches:
        time.sleep(8.0 / len(batches))
        while True:
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(dsn)
                with conn.transaction():
                    _insert(conn, batch)
                break
            except psycopg.Error as exc:  # cut or read-only: try the batch again
                errors.append(type(exc).__name__)
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
    if conn is not None:
        conn.close()


def _terminate_worker_sessions(dsn: str, seconds: float, cuts: list[int]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                while time.monotonic() < deadline:
                    rows = conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND application_name LIKE 'listener%'"
                    ).fetchall()
                    cuts.append(len(rows))
                    time.sleep(0.2)
        except psycopg.Error:
            time.sleep(0.05)  # our own session was cut (the read-only switch): again


Runs = dict[str, list[tuple[float, float]]]


def _intervals(ledgers: list[Path], killed: dict[int, float]) -> Runs:
    """Per task, its handler runs as (start, end); a run cut by SIGKILL ends at the kill."""
    runs: Runs = collections.defaultdict(list)
    for path in (p for p in ledgers if p.exists()):
        open_runs: dict[str, tuple[float, int]] = {}
        for line in path.read_text().splitlines():
            what, task_id, at, pid = line.split()
            if what == "start":
                open_runs[task_id] = (float(at), int(pid))
            else:
                start, _ = open_runs.pop(task_id)
                runs[task_id].append((start, float(at)))
        for task_id, (start, pid) in open_runs.items():
            assert pid in killed, f"a run of {task_id} never ended in a worker that lived"
            runs[task_id].append((start, killed[pid]))
    return runs


def test_chaos_every_task_ends_as_its_handler_said_none_ran_twice_at_once(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = _plan()
    assert set(KINDS) | {"poison"} == set(EXPECTED)  # every kind of misbehaviour is in
    marks = tmp_path / "marks"
    marks.mkdir()
    # Poison payloads, stored as an older schema allowed: too deep for the worker.
    disable_payload_checks(conn)
    poison = [uuid.uuid4() for _ in range(20)]
    for task_id in poison:
        conn.execute(
            "INSERT INTO tasks (id, type, payload) VALUES (%s, 'chaos', %s::jsonb)",
            (task_id, '{"a":' * 3000 + "1" + "}" * 3000),
        )
    conn.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_check_payload")
    expected = {str(i): kind for i, kind in plan} | {str(i): "poison" for i in poison}

    ledgers: list[Path] = []

    def start_worker() -> WorkerProcess:
        ledgers.append(tmp_path / f"ledger-{len(ledgers)}.txt")
        env = {"LISTENER_TEST_LEDGER": str(ledgers[-1]), "LISTENER_TEST_MARKS": str(marks)}
        return WorkerProcess(dsn, *WORKER_ARGS, env=env)

    workers = [start_worker() for _ in range(WORKERS)]
    killed: dict[int, float] = {}
    producer_errors: list[str] = []
    cuts: list[int] = []
    try:
        for worker in workers:
            worker.wait_started()
        batches = [plan[i : i + 25] for i in range(0, TASKS, 25)]
        producers = [
            threading.Thread(target=_produce, args=(dsn, batches[p::PRODUCERS], producer_errors))
            for p in range(PRODUCERS)
        ]
        chaos = threading.Thread(target=_terminate_worker_sessions, args=(dsn, 10.0, cuts))
        for thread in [*producers, chaos]:
            thread.start()
        time.sleep(3.0)
        with database_read_only(conn):
            time.sleep(2.0)
        victim = workers[0]
        victim.signal(signal.SIGKILL)
        victim.wait(10)
        killed[victim.proc.pid] = time.time()
        time.sleep(1.0)
        workers.append(start_worker())
        workers[-1].wait_started()
        for thread in [*producers, chaos]:
            thread.join(60)
        wait_until(lambda: _unfinished(conn) == 0, timeout_s=60, interval_s=0.5)

        # Nobody but the victim died, and the survivors stop cleanly.
        survivors = workers[1:]
        assert all(w.proc.poll() is None for w in survivors), "a worker died"
        for worker in survivors:
            worker.signal(signal.SIGTERM)
        assert [w.wait(30) for w in survivors] == [0] * len(survivors)
    finally:
        for worker in workers:
            worker.stop()

    assert sum(cuts) > 0, "no worker session was terminated"
    assert producer_errors, "the producers never met the read-only database"
    rows = conn.execute("SELECT id::text, status, error FROM tasks").fetchall()
    assert len(rows) == len(expected)  # nothing lost, nothing doubled
    wrong = [
        (task_id, expected[task_id], status, error)
        for task_id, status, error in rows
        if status != EXPECTED[expected[task_id]]
        or (status == "failed" and not _expected_error(expected[task_id], error))
    ]
    assert wrong == [], f"{len(wrong)} tasks ended wrong, e.g. {wrong[:5]}"
    for task_id, runs in _intervals(ledgers, killed).items():
        runs.sort()
        for (_, end), (start, _) in itertools.pairwise(runs):
            assert end <= start, f"task {task_id} ran beside itself: {runs}"


def _unfinished(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM tasks WHERE status IN ('pending', 'processing')"
    ).fetchone()
    assert row is not None
    total = conn.execute("SELECT count(*) FROM tasks").fetchone()
    assert total is not None
    return int(row[0]) + (TASKS + 20 - int(total[0]))


def _expected_error(kind: str, error: str | None) -> bool:
    name = (error or "").split(":", 1)[0]
    return name in {ERRORS[kind], "WorkerLost"}
