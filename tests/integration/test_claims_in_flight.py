"""Under a backlog, a worker sends its next claim while the one before is on its way.

With one claim at a time, the database and the worker each waited for the other: a
default worker draining a backlog used one of two cores. Here a statement trigger holds
each claim after its UPDATE for a while before it commits (only the claim: the trigger
looks at the statement's text, and a cancel request does not stop it), so the claims a
worker has on their way show in pg_stat_activity, and a claim the worker gave up would
still commit after it.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import psycopg
import pytest

from listener import create_tasks, handler, new_task
from listener.dispatcher import CLAIMS_IN_FLIGHT
from listener.registry import Registry
from tests.integration.engine_support import eventually, running_worker, statuses

pytestmark = pytest.mark.anyio

TASKS = 3000
CLAIMING = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
    "AND state = 'active' AND query LIKE '%%listener.claim_batch(%%' "
    "AND query NOT LIKE '%%pg_stat_activity%%'"  # nor a sampler's own query
)


@pytest.fixture
def slow_claims(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        """
        CREATE TABLE test_claim_hold (s float8 NOT NULL, outcomes_s float8 NOT NULL);
        INSERT INTO test_claim_hold VALUES (0.2, 0);
        CREATE FUNCTION hold_claim() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF current_query() LIKE '%listener.claim_batch(%' THEN
                PERFORM pg_sleep((SELECT s FROM public.test_claim_hold));
            ELSIF current_query() LIKE '%outcome AS (%' THEN
                PERFORM pg_sleep((SELECT outcomes_s FROM public.test_claim_hold));
            END IF;
            RETURN NULL;
        EXCEPTION WHEN query_canceled THEN
            -- As over a network, where the worker's cancel request comes too late: the
            -- claim goes on and commits. (Here, on loopback, it would always be in time.)
            PERFORM pg_sleep((SELECT s FROM public.test_claim_hold));
            RETURN NULL;
        END $$;
        CREATE TRIGGER hold_claim AFTER UPDATE ON tasks
            FOR EACH STATEMENT EXECUTE FUNCTION hold_claim();
        """
    )


def _hold_claims_for(
    conn: psycopg.Connection[Any], seconds: float, *, outcomes_s: float = 0.0
) -> None:
    conn.execute("UPDATE test_claim_hold SET s = %s, outcomes_s = %s", (seconds, outcomes_s))


def _two_claims_on_their_way(conn: psycopg.Connection[Any]) -> list[int]:
    pids = [pid for (pid,) in conn.execute(CLAIMING).fetchall()]
    return pids if len(pids) == 2 else []


class ClaimsWatch:
    """Samples, every 10 ms on a thread of its own, the pids of claims in flight."""

    def __init__(self, dsn: str) -> None:
        self.samples: list[list[int]] = []
        self._dsn = dsn
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            while not self._done.is_set():
                self.samples.append([pid for (pid,) in conn.execute(CLAIMING).fetchall()])
                time.sleep(0.01)

    @property
    def most_at_once(self) -> int:
        return max(len(pids) for pids in self.samples)


@pytest.fixture
def claims_watch(dsn: str) -> Iterator[ClaimsWatch]:
    watch = ClaimsWatch(dsn)
    try:
        yield watch
    finally:
        watch.stop()


def _loop_errors(worker: Any, loop: str) -> dict[str, float]:
    return {
        sample.labels["error"]: sample.value
        for metric in worker.metrics.registry.collect()
        for sample in metric.samples
        if sample.name == "listener_loop_errors_total" and sample.labels["loop"] == loop
    }


def _counting_registry(runs: collections.Counter[str]) -> Registry:
    registry = Registry()

    @handler("noop", registry=registry)
    async def noop(task: Any) -> None:
        runs[str(task.id)] += 1

    return registry


async def test_under_a_backlog_a_claim_is_sent_while_the_one_before_is_on_its_way(
    dsn: str, conn: psycopg.Connection[Any], slow_claims: None, claims_watch: ClaimsWatch
) -> None:
    runs: collections.Counter[str] = collections.Counter()
    ids = create_tasks([new_task("noop") for _ in range(TASKS)], conn=conn)
    async with running_worker(dsn, _counting_registry(runs)):
        await eventually(lambda: statuses(conn) == {"completed": TASKS}, timeout_s=30)
    assert claims_watch.most_at_once == CLAIMS_IN_FLIGHT == 2  # and never more
    assert set(runs) == {str(i) for i in ids}
    assert set(runs.values()) == {1}  # each task ran once
    attempts = conn.execute("SELECT DISTINCT attempts FROM tasks").fetchall()
    assert attempts == [(1,)]


async def test_a_claim_cut_on_its_way_beside_another_loses_and_doubles_nothing(
    dsn: str, conn: psycopg.Connection[Any], slow_claims: None
) -> None:
    runs: collections.Counter[str] = collections.Counter()
    ids = create_tasks([new_task("noop") for _ in range(TASKS)], conn=conn)
    _hold_claims_for(conn, 1.0)  # the other claim commits after the restart's reconcile
    async with running_worker(dsn, _counting_registry(runs)) as worker:
        # Two claims on their way: cut one of them (its session ends mid-statement).
        victim, _ = await eventually(lambda: _two_claims_on_their_way(conn))
        conn.execute("SELECT pg_terminate_backend(%s)", (victim,))
        await eventually(lambda: statuses(conn) == {"completed": TASKS}, timeout_s=30)
        errors = _loop_errors(worker, "claims")
    # The claim loop saw the cut claim fail once (AdminShutdown mid-statement, or the
    # connection found closed between statements), and went on.
    assert sum(errors.values()) == 1
    assert set(errors) <= {"AdminShutdown", "OperationalError"}
    assert set(runs) == {str(i) for i in ids}
    assert set(runs.values()) == {1}  # each task ran once
    attempts = conn.execute("SELECT DISTINCT attempts FROM tasks").fetchall()
    assert attempts == [(1,)]  # a claim put back by the reconcile got its attempt back


async def test_a_worker_stopped_with_claims_on_their_way_leaves_no_task_processing(
    dsn: str, conn: psycopg.Connection[Any], slow_claims: None
) -> None:
    create_tasks([new_task("noop") for _ in range(TASKS)], conn=conn)
    # Outcome writes are held too, so that the writer is still putting the returned
    # claims' tasks back when the worker stops its services: the shutdown's flush must
    # write them again, not take them for being written.
    _hold_claims_for(conn, 1.0, outcomes_s=0.5)
    async with running_worker(dsn, _counting_registry(collections.Counter())):
        await eventually(lambda: _two_claims_on_their_way(conn))
    # The worker has exited; had it given its claims up, the server could commit them
    # now, after the shutdown's reconcile: tasks processing under a worker that is gone.
    await eventually(lambda: not conn.execute(CLAIMING).fetchall(), timeout_s=5)
    assert "processing" not in statuses(conn)
    pending_attempts = conn.execute(
        "SELECT DISTINCT attempts FROM tasks WHERE status = 'pending'"
    ).fetchall()
    assert pending_attempts in ([], [(0,)])  # put back with their attempt given back


async def test_a_trickles_claims_all_go_through_the_claim_loops_own_session(
    dsn: str, conn: psycopg.Connection[Any], slow_claims: None
) -> None:
    """The pool hands out the connection used least recently, whose server process is
    the coldest; one task at a time, each claim took ~60 us longer through it. The loop
    holds a connection of its own for its claims (those on their way use the pool)."""
    conn.execute(
        """
        CREATE TABLE test_claim_sessions (task_id uuid PRIMARY KEY, pid int NOT NULL);
        CREATE FUNCTION note_claim_session() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO public.test_claim_sessions VALUES (NEW.id, pg_backend_pid());
            RETURN NULL;
        END $$;
        CREATE TRIGGER note_claim_session AFTER UPDATE ON tasks FOR EACH ROW
            WHEN (OLD.status = 'pending' AND NEW.status = 'processing')
            EXECUTE FUNCTION note_claim_session();
        """
    )
    runs: collections.Counter[str] = collections.Counter()
    async with running_worker(dsn, _counting_registry(runs), concurrency=10):
        # A backlog first, its claims slowed so that two are on their way at once
        # beside the loop's own connection: the pool grows to three or more.
        _hold_claims_for(conn, 0.05)
        create_tasks([new_task("noop") for _ in range(TASKS)], conn=conn)
        await eventually(lambda: statuses(conn).get("completed") == TASKS, timeout_s=60)
        _hold_claims_for(conn, 0.0)
        connections = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'listener' "
            "AND datname = current_database()"
        ).fetchone()
        assert connections is not None
        assert connections[0] >= 3  # pooled (LISTEN is listener:listen): claims would rotate
        trickle = []
        for _ in range(12):
            (task_id,) = create_tasks([new_task("noop")], conn=conn)
            trickle.append(task_id)
            await eventually(lambda: statuses(conn).get("completed") == TASKS + len(trickle))
            await anyio.sleep(0.02)
    sessions = conn.execute(
        "SELECT DISTINCT pid FROM test_claim_sessions WHERE task_id = ANY (%s)", (trickle,)
    ).fetchall()
    assert len(sessions) == 1, sessions
