"""The wake-up protocol end to end (docs/notify.md): idle workers are woken by NOTIFY,
watching workers silence their types' producers, and no wake-up is lost on the way.

Every worker here polls every 60 s, so a pickup within a second is a wake-up, never
the poll; and each test waits until the worker is idle (its start-up claim pass and
any watch are over) before the insert that it measures.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import psycopg
import pytest

from listener import create_task, create_tasks, new_task
from tests.integration.engine_support import eventually, running_worker
from tests.integration.wake_support import (
    insert_one,
    keep_watched,
    noop_registry,
    pickup_delays_s,
    sample,
    settled_idle,
    watch_from_two_tasks,
    watch_holders,
    watcher_of,
)
from tests.tools import require_tool

pytestmark = pytest.mark.anyio

NOTIFIED = "listener_notifications_total"
NO_POLL = 60.0  # so that only a wake-up explains a pickup


async def _warm(worker: Any, conn: psycopg.Connection[Any], seen: set[uuid.UUID]) -> None:
    """One task through, then idle: the start-up pass is over, the LISTEN is proven."""
    first, _ = insert_one(conn, "t")
    await eventually(lambda: first in seen)
    await eventually(lambda: sample(worker, NOTIFIED) >= 1)
    await settled_idle(worker)


async def test_an_idle_worker_is_woken_by_a_plain_insert_from_another_connection(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    seen: set[uuid.UUID] = set()
    async with running_worker(dsn, noop_registry("t", seen=seen), poll_interval_s=NO_POLL) as w:
        await _warm(w, conn, seen)
        notified = sample(w, NOTIFIED)
        task_id, committed = insert_one(conn, "t")
        await eventually(lambda: task_id in seen, timeout_s=5)
        assert sample(w, NOTIFIED) == notified + 1
    assert pickup_delays_s(conn, {task_id: committed})[0] < 1.0


async def test_with_the_trigger_disabled_an_idle_worker_finds_a_task_by_its_poll_only(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    seen: set[uuid.UUID] = set()
    async with running_worker(dsn, noop_registry("t", seen=seen), poll_interval_s=0.5) as w:
        await _warm(w, conn, seen)
        conn.execute("ALTER TABLE tasks DISABLE TRIGGER tasks_notify_inserted")
        notified = sample(w, NOTIFIED)
        task_id, _ = insert_one(conn, "t")
        await eventually(lambda: task_id in seen, timeout_s=3)
        assert sample(w, NOTIFIED) == notified  # found by the poll: no NOTIFY was sent


def _produce_plain(conn: psycopg.Connection[Any], dsn: str) -> dict[Any, float]:
    task_id, committed = insert_one(conn, "t")
    return {task_id: committed}


def _produce_bulk(conn: psycopg.Connection[Any], dsn: str) -> dict[Any, float]:
    rows = conn.execute(
        "INSERT INTO tasks (type) SELECT 't' FROM generate_series(1, 25) RETURNING id"
    ).fetchall()
    committed = time.time()
    return {row[0]: committed for row in rows}


def _produce_create_task(conn: psycopg.Connection[Any], dsn: str) -> dict[Any, float]:
    task_id = create_task("t", {}, conn=conn)
    return {task_id: time.time()}


def _produce_create_tasks(conn: psycopg.Connection[Any], dsn: str) -> dict[Any, float]:
    ids = create_tasks([new_task("t"), new_task("t", {"n": 2})], conn=conn)
    committed = time.time()
    return dict.fromkeys(ids, committed)


def _produce_enqueue_task(conn: psycopg.Connection[Any], dsn: str) -> dict[Any, float]:
    row = conn.execute("SELECT enqueue_task('t', '{}'::jsonb)").fetchone()
    assert row is not None
    return {row[0]: time.time()}


def _produce_psql(conn: psycopg.Connection[Any], dsn: str) -> dict[Any, float]:
    """psql inserts and commits, then reads the clock in a second statement."""
    done = subprocess.run(
        [
            require_tool("psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", dsn,
            "-c", "INSERT INTO tasks (type) VALUES ('t') RETURNING id",
            "-c", "SELECT extract(epoch FROM clock_timestamp())",
        ],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    task_id, committed = done.stdout.split()
    return {uuid.UUID(task_id): float(committed)}


PRODUCERS: dict[str, Callable[[psycopg.Connection[Any], str], dict[Any, float]]] = {
    "plain INSERT": _produce_plain,
    "one INSERT of 25 rows": _produce_bulk,
    "create_task": _produce_create_task,
    "create_tasks": _produce_create_tasks,
    "enqueue_task": _produce_enqueue_task,
    "psql": _produce_psql,
}


@pytest.mark.parametrize("producer", list(PRODUCERS))
async def test_every_producer_wakes_an_idle_worker_within_milliseconds_of_its_commit(
    dsn: str, conn: psycopg.Connection[Any], producer: str
) -> None:
    seen: set[uuid.UUID] = set()
    delays: list[float] = []
    async with running_worker(dsn, noop_registry("t", seen=seen), poll_interval_s=NO_POLL) as w:
        await _warm(w, conn, seen)
        for _ in range(8):
            notified = sample(w, NOTIFIED)
            committed = PRODUCERS[producer](conn, dsn)
            await eventually(lambda c=set(committed): c <= seen, timeout_s=5)
            # Woken by the producer's NOTIFY (a watcher whose slots filled may add its own).
            assert sample(w, NOTIFIED) > notified
            delays += pickup_delays_s(conn, committed)
            await settled_idle(w)
    assert max(delays) < 1.0, delays
    assert statistics.median(delays) < 0.05, delays


async def test_a_watching_worker_silences_producers_of_its_own_types_only(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    seen: set[uuid.UUID] = set()
    registry = noop_registry("a", "b", seen=seen)
    stop = threading.Event()

    def trickle() -> None:  # keeps the worker for "a" watching
        with psycopg.connect(dsn, autocommit=True) as own:
            keep_watched(own, "a", stop)

    async with (
        running_worker(dsn, registry, types=["a"], poll_interval_s=NO_POLL) as for_a,
        running_worker(dsn, registry, types=["b"], poll_interval_s=NO_POLL) as for_b,
    ):
        thread = threading.Thread(target=trickle)
        thread.start()
        try:
            await eventually(lambda: set(watch_holders(conn, ["a", "b"])) == {"a"})
            # Producers that looked at the watch lock just before it was taken notify as
            # they commit: let those land before counting.
            await anyio.sleep(0.1)
            heard_by_b = sample(for_b, NOTIFIED)
            await anyio.sleep(0.3)  # thousands of inserts of type a
            assert sample(for_b, NOTIFIED) == heard_by_b  # silent: a watcher has them
            task_id, committed = insert_one(conn, "b")
            await eventually(lambda: task_id in seen, timeout_s=5)
            assert sample(for_b, NOTIFIED) > heard_by_b  # type b notified
            assert sample(for_a, "listener_watching") == 1
        finally:
            stop.set()
            thread.join()
    assert pickup_delays_s(conn, {task_id: committed})[0] < 1.0


async def test_a_watcher_whose_slots_stay_full_wakes_workers_that_have_room(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    seen: set[uuid.UUID] = set()
    registry = noop_registry("t", seen=seen)
    release = anyio.Event()

    from listener.registry import handler

    @handler("slow", registry=registry)
    async def slow(task: Any) -> None:
        await release.wait()

    async with running_worker(
        dsn, registry, concurrency=1, poll_interval_s=NO_POLL, grace_s=0.1
    ) as busy:
        await _warm(busy, conn, seen)
        # The only worker, so it watches; then its one slot is taken for good, and it
        # hands off with a NOTIFY now and then (it keeps watching).
        conn.execute("INSERT INTO tasks (type) SELECT 't' FROM generate_series(1, 5)")
        await eventually(lambda: sample(busy, "listener_watching") == 1, interval_s=0.001)
        conn.execute("INSERT INTO tasks (type) VALUES ('slow')")
        await eventually(lambda: sample(busy, "listener_watch_handoffs_total") >= 1)
        async with running_worker(dsn, registry, types=["t"], poll_interval_s=NO_POLL) as idle:
            await eventually(lambda: sample(idle, NOTIFIED) >= 0)
            await settled_idle(idle)
            task_id, committed = insert_one(conn, "t")
            await eventually(lambda: task_id in seen, timeout_s=5)
        release.set()
    assert pickup_delays_s(conn, {task_id: committed})[0] < 1.0
    owner = conn.execute("SELECT worker_id FROM tasks WHERE id = %s", (task_id,)).fetchone()
    assert owner == (idle.settings.worker_id,)


async def test_a_worker_that_does_not_listen_never_watches(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    seen: set[uuid.UUID] = set()
    registry = noop_registry("t", seen=seen)
    async with running_worker(dsn, registry, listen=False, poll_interval_s=0.05):
        with psycopg.connect(dsn, autocommit=True) as listening:
            listening.execute("LISTEN listener_tasks")
            for _ in range(20):
                task_id, _ = insert_one(conn, "t")
                await eventually(lambda t=task_id: t in seen)
                assert watch_holders(conn, ["t"]) == {}
            heard = list(listening.notifies(timeout=0.5, stop_after=20))
    assert len(heard) == 20  # every insert notified: nobody watches


async def test_the_watch_lock_lives_on_the_listen_session(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    seen: set[uuid.UUID] = set()
    stop = threading.Event()

    def trickle() -> None:
        with psycopg.connect(dsn, autocommit=True) as own:
            keep_watched(own, "t", stop)

    async with running_worker(dsn, noop_registry("t", seen=seen), poll_interval_s=NO_POLL):
        thread = threading.Thread(target=trickle)
        thread.start()
        try:
            holders = await eventually(lambda: watch_holders(conn, ["t"]))
            row = conn.execute(
                "SELECT application_name FROM pg_stat_activity WHERE pid = %s", (holders["t"],)
            ).fetchone()
        finally:
            stop.set()
            thread.join()
    assert row == ("listener:listen",)


@contextlib.asynccontextmanager
async def _its_one_slot_taken(dsn: str, conn: psycopg.Connection[Any]) -> AsyncIterator[Any]:
    """A worker for "t" and "slow" with one slot, taken by a "slow" task until the
    block ends, settled idle: the dispatcher claims nothing, so the test tells
    the watcher what its claims found, in an order the dispatcher could produce."""
    registry = noop_registry("t")
    release, running = anyio.Event(), anyio.Event()

    from listener.registry import handler

    @handler("slow", registry=registry)
    async def slow(task: Any) -> None:
        running.set()
        await release.wait()

    async with running_worker(
        dsn, registry, concurrency=1, poll_interval_s=NO_POLL, grace_s=0.1
    ) as w:
        conn.execute("INSERT INTO tasks (type) VALUES ('slow')")
        await running.wait()
        await settled_idle(w)
        try:
            yield w
        finally:
            release.set()


async def test_wishing_to_watch_again_before_the_watch_ended_takes_no_lock_twice(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    watch_from_two_tasks(monkeypatch)
    async with _its_one_slot_taken(dsn, conn) as w:
        watch = watcher_of(w)
        watch.after_claim(2, 8)
        await eventually(lambda: watch.held == {"t", "slow"})
        await anyio.sleep(0.003)  # the two tasks leave the rate's window
        for _ in range(3):  # three empty claims end the watch, and before the watcher
            watch.after_claim(0, 10)  # has had a turn to give the locks back, a busy
        watch.after_claim(2, 8)  # claim wants it again
        # The watcher's turn: it has acted on that wish (and its statement, if any, ran).
        await eventually(lambda: not (watch._attempt_due or watch.notifier._requests))
        assert watch.held == {"t", "slow"}
        await anyio.sleep(0.003)
        for _ in range(3):
            watch.after_claim(0, 10)
        idle = {"reason": "idle"}
        await eventually(lambda: sample(w, "listener_watch_releases_total", idle) == 1)
        holders = watch_holders(conn, ["t", "slow"])
    assert holders == {}  # a lock taken twice would be given back once, and kept


async def test_a_watch_refused_by_a_producers_look_is_taken_at_a_later_claim(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    watch_from_two_tasks(monkeypatch)
    # A producer's trigger holds W(t) shared for an instant; held here, it stays.
    looking = psycopg.connect(dsn, autocommit=True)
    try:
        async with _its_one_slot_taken(dsn, conn) as w:
            watch = watcher_of(w)
            looking.execute("SELECT pg_advisory_lock_shared(listener.wake_watch_key('t'))")
            watch.after_claim(2, 8)  # busy claims: the plan wants a watch, and keeps wanting
            await eventually(lambda: watch.held == {"slow"})  # t refused
            looking.execute("SELECT pg_advisory_unlock_shared(listener.wake_watch_key('t'))")
            await anyio.sleep(0.06)  # past WATCH_RETRY_S
            watch.after_claim(2, 8)  # the rate still holds: the plan's wish does not change
            await eventually(lambda: watch.held == {"t", "slow"})
            assert set(watch_holders(conn, ["t", "slow"])) == {"t", "slow"}
    finally:
        looking.close()


async def test_a_worker_refused_every_watch_settles_idle_without_another_claim(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    watch_from_two_tasks(monkeypatch)
    looking = psycopg.connect(dsn, autocommit=True)
    looking.execute("SELECT pg_advisory_lock_shared(listener.wake_watch_key('t'))")
    try:
        async with running_worker(dsn, noop_registry("t"), poll_interval_s=NO_POLL) as w:
            await settled_idle(w)
            watch = watcher_of(w)
            watch.after_claim(2, 8)  # a busy claim wants a watch; the try is refused
            # Not watching, nothing owed, no try in flight: idle, although the plan still
            # wants a watch (it changes only at claims, and none is coming).
            await settled_idle(w, timeout_s=5.0)
            assert watch.plan.wanted
            assert watch.held == set()
    finally:
        looking.close()
