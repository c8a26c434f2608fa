"""Helpers for the wake-up protocol's tests: idle workers, pickup delays, lock views."""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import anyio
import psycopg
import pytest

from listener import create_task, create_tasks, new_task
from listener import watcher as watcher_module
from listener.registry import Registry, handler
from listener.watcher import Watcher
from listener.worker import Worker
from tests.integration.engine_support import eventually

# A pg_locks row's bigint advisory key (classid: high half, objid: low half).
LOCK_KEY = "((l.classid::bigint << 32) | l.objid::bigint)"


def noop_registry(*types: str, seen: set[uuid.UUID] | None = None) -> Registry:
    """Handlers that return at once for ``types``, adding each task's id to ``seen``."""
    registry = Registry()
    for task_type in types:

        @handler(task_type, registry=registry)
        async def run(task: Any) -> None:
            if seen is not None:
                seen.add(task.id)

    return registry


def watch_from_two_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers started after this watch once two tasks are found within 2 ms (1,000/s).

    The shipped bar (400 tasks/s over 50 ms) keeps a watch 50 ms after its last burst;
    tests of what happens as a watch starts and ends make it cycle far more often.
    The protocol is the same: when to watch is not what they prove.
    """
    monkeypatch.setattr(watcher_module, "WATCH_RATE", 1000.0)
    monkeypatch.setattr(watcher_module, "WATCH_WINDOW_S", 0.002)


def watcher_of(worker: Worker) -> Watcher:
    assert worker.dispatcher is not None
    watch = worker.dispatcher.watch
    assert isinstance(watch, Watcher), "a listening worker has a Watcher"
    return watch


async def settled_idle(worker: Worker, timeout_s: float = 10.0) -> None:
    """Wait until the worker watches nothing and owes nothing (gate passed, claimed)."""
    watch = watcher_of(worker)
    await eventually(lambda: watch.idle, timeout_s=timeout_s, interval_s=0.002)


def sample(worker: Worker, name: str, labels: dict[str, str] | None = None) -> float:
    value = worker.metrics.registry.get_sample_value(name, labels)
    return float(value or 0.0)


def pickup_delays_s(conn: psycopg.Connection[Any], committed: dict[Any, float]) -> list[float]:
    """Claim time (database clock) minus commit time (time.time(), same host clock)."""
    rows = conn.execute(
        "SELECT id, extract(epoch FROM started_at)::float8 FROM tasks WHERE id = ANY(%s)",
        (list(committed),),
    ).fetchall()
    assert len(rows) == len(committed)
    return sorted(float(started) - committed[task_id] for task_id, started in rows)


# Rows per INSERT while keeping a worker watching, one INSERT per ~2 ms: one burst is
# enough for the shipped watch bar (400 tasks/s over 50 ms: 20 tasks), so the watch
# holds even when a loaded machine (or the GIL) stretches the pause to tens of ms.
WATCHED_BURST = 5


def keep_watched(conn: psycopg.Connection[Any], task_type: str, stop: threading.Event) -> None:
    """Insert bursts of ``task_type`` tasks until ``stop``: a worker for it watches."""
    while not stop.is_set():
        conn.execute(
            "INSERT INTO tasks (type) SELECT %s FROM generate_series(1, %s)",
            (task_type, WATCHED_BURST),
        )
        time.sleep(0.002)


def insert_one(conn: psycopg.Connection[Any], task_type: str) -> tuple[Any, float]:
    """A plain-SQL producer: one row, autocommit. Returns (id, commit time)."""
    row = conn.execute("INSERT INTO tasks (type) VALUES (%s) RETURNING id", (task_type,)).fetchone()
    assert row is not None
    return row[0], time.time()


def watch_holders(conn: psycopg.Connection[Any], types: Iterable[str]) -> dict[str, int]:
    """Type -> pid of the session holding its watch lock, for the types watched now."""
    rows = conn.execute(
        f"SELECT t, l.pid FROM unnest(%s::text[]) AS t JOIN pg_locks AS l "
        f"ON l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted "
        f"AND l.mode = 'ExclusiveLock' AND l.database = "
        f"(SELECT oid FROM pg_database WHERE datname = current_database()) "
        f"AND {LOCK_KEY} = listener.wake_watch_key(t)",
        (list(types),),
    ).fetchall()
    return {str(t): int(pid) for t, pid in rows}


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class Rounds:
    """Producer threads that insert once per round, all released at the same instant."""

    def __init__(self, dsn: str, producers: int) -> None:
        self.dsn = dsn
        self.start = threading.Barrier(producers + 1)
        self.done = threading.Barrier(producers + 1)
        self.committed: dict[uuid.UUID, float] = {}
        self.stopping = False
        self.errors: list[BaseException] = []
        self.threads = [
            threading.Thread(target=self._produce, args=(n,), daemon=True) for n in range(producers)
        ]

    def _produce(self, seed: int) -> None:
        rnd = random.Random(seed)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while True:
                self.start.wait()
                if self.stopping:
                    return
                try:
                    if rnd.random() < 0.8:  # some producers sit a round out
                        time.sleep(rnd.uniform(0, 0.003))
                        ids = _insert_somehow(conn, rnd)
                        committed = time.time()
                        self.committed.update(dict.fromkeys(ids, committed))
                except BaseException as exc:
                    self.errors.append(exc)
                self.done.wait()

    def run_round(self) -> None:
        self.start.wait()
        self.done.wait()

    def close(self) -> None:
        self.stopping = True
        self.start.wait(timeout=10)
        for thread in self.threads:
            thread.join(10)


def _insert_somehow(conn: psycopg.Connection[Any], rnd: random.Random) -> list[uuid.UUID]:
    """One of the ways producers enqueue; ids of the tasks it committed."""
    how = rnd.random()
    if how < 0.3:
        row = conn.execute("INSERT INTO tasks (type) VALUES ('t') RETURNING id").fetchone()
        return [row[0]] if row else []
    if how < 0.6:  # the transaction stays open after the INSERT, as an app's would
        with conn.transaction():
            rows = conn.execute(
                "INSERT INTO tasks (type) SELECT 't' FROM generate_series(1, %s) RETURNING id",
                (rnd.randint(1, 3),),
            ).fetchall()
            time.sleep(rnd.uniform(0, 0.003))
        return [r[0] for r in rows]
    if how < 0.75:
        return [create_task("t", {}, conn=conn)]
    if how < 0.9:
        row = conn.execute("SELECT enqueue_task('t', '{}'::jsonb)").fetchone()
        return [row[0]] if row else []
    return create_tasks([new_task("t"), new_task("t")], conn=conn)


ROUND_DEADLINE_S = 2.0  # workers poll every 60 s: a task not picked up by then was lost


def watch_idle_cycles(worker: Worker) -> float:
    return sample(worker, "listener_watch_releases_total", {"reason": "idle"})


async def race(
    worker: Worker | None,
    rounds: Rounds,
    seen: set[uuid.UUID],
    seconds: float,
    *,
    stop_after_idle: float = math.inf,
    seed: int = 7,
) -> int:
    """Play rounds for ``seconds``; fail on the first whose tasks are not all picked up.

    With a ``worker``, half the rounds start once it is idle again, the others while
    it may still be going idle. Returns the number of rounds played.
    """
    rnd = random.Random(seed)
    watch = watcher_of(worker) if worker is not None else None
    end = time.monotonic() + seconds
    played = 0
    while time.monotonic() < end and (
        worker is None or watch_idle_cycles(worker) < stop_after_idle
    ):
        await anyio.to_thread.run_sync(rounds.run_round)
        played += 1
        assert not rounds.errors, rounds.errors
        due = set(rounds.committed)
        with contextlib.suppress(AssertionError):
            await eventually(lambda d=due: d <= seen, ROUND_DEADLINE_S, 0.0005)
        lost = due - seen
        assert not lost, f"round {played}: {len(lost)} task(s) not picked up: {lost}"
        if watch is not None and rnd.random() < 0.5:
            await eventually(lambda: watch.idle, 10.0, 0.0005)
        else:
            await anyio.sleep(rnd.uniform(0, 0.003))
    return played
