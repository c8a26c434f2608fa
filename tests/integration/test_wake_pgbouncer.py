"""The wake-up protocol through a real PgBouncer in session mode.

Session mode gives each client connection one server connection for its lifetime, so
the LISTEN session and the watch locks on it behave as on a direct connection; when
the client goes away, PgBouncer's reset query (DISCARD ALL) gives the locks back.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import psycopg
import pytest

from tests.integration.engine_support import WorkerProcess, running_worker, wait_until
from tests.integration.pgbouncer_support import pgbouncer
from tests.integration.wake_support import (
    Rounds,
    insert_one,
    keep_watched,
    noop_registry,
    race,
    sample,
    watch_from_two_tasks,
    watch_holders,
    watch_idle_cycles,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def via_session_pooler(pg_admin_dsn: str) -> Iterator[Callable[[str], str]]:
    with pgbouncer(pg_admin_dsn, "session") as through:
        yield through


async def test_through_a_session_pooler_no_wake_up_is_lost_and_watchers_silence_producers(
    dsn: str,
    conn: psycopg.Connection[Any],
    via_session_pooler: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watch_from_two_tasks(monkeypatch)  # rounds of six producers start and end watches
    pooled = via_session_pooler(dsn)
    seen: set[uuid.UUID] = set()
    rounds = Rounds(pooled, 6)
    for thread in rounds.threads:
        thread.start()
    async with running_worker(pooled, noop_registry("t", seen=seen), poll_interval_s=60.0) as w:
        try:
            played = await race(w, rounds, seen, 6.0)
        finally:
            await anyio.to_thread.run_sync(rounds.close)
        notified = sample(w, "listener_notifications_total")
        idle_cycles = watch_idle_cycles(w)
    assert played > 50
    assert idle_cycles > 10
    assert notified < len(rounds.committed) / 2  # most producers found a watcher


def test_through_a_session_pooler_a_killed_watcher_gives_its_watch_back(
    dsn: str, conn: psycopg.Connection[Any], via_session_pooler: Callable[[str], str]
) -> None:
    pooled = via_session_pooler(dsn)
    stop = threading.Event()

    def trickle() -> None:
        with psycopg.connect(pooled, autocommit=True, prepare_threshold=None) as own:
            keep_watched(own, "noop", stop)

    worker = WorkerProcess(pooled, "--poll-interval-s", "60", "--types", "noop")
    thread = threading.Thread(target=trickle)
    try:
        worker.wait_started()
        thread.start()
        wait_until(lambda: watch_holders(conn, ["noop"]))
        worker.stop()  # SIGKILL; PgBouncer resets the server connection it held
        stop.set()
        thread.join()
        wait_until(lambda: watch_holders(conn, ["noop"]) == {}, timeout_s=10)
        with psycopg.connect(dsn, autocommit=True) as listening:
            listening.execute("LISTEN listener_tasks")
            insert_one(conn, "noop")
            heard = list(listening.notifies(timeout=5, stop_after=1))
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        worker.stop()
    assert len(heard) == 1  # nobody watches any more: producers notify again
