"""The wake-up protocol under faults: the LISTEN session down, the watcher killed.

Workers poll every 60 s here: a pickup within seconds is a wake-up, never the poll.
To keep a LISTEN session down (not merely killed and reconnected at once), the worker
logs in as a role of the test's own whose connection limit is then lowered to the
connections it already has: its pool keeps working, a new LISTEN session is refused.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.integration.engine_support import eventually, running_worker, wait_until
from tests.integration.wake_support import (
    insert_one,
    keep_watched,
    noop_registry,
    sample,
    settled_idle,
    watch_holders,
)

pytestmark = pytest.mark.anyio

NO_POLL = 60.0


class FlakyRole:
    """A login role for the worker whose new connections the test can refuse."""

    def __init__(self, conn: psycopg.Connection[Any], dsn: str) -> None:
        self.conn = conn
        self.name = f"listener_flaky_{uuid.uuid4().hex[:8]}"
        self.dsn = make_conninfo(dsn, user=self.name)
        role = sql.Identifier(self.name)
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN BYPASSRLS").format(role))
        for statement in (
            "GRANT USAGE ON SCHEMA listener TO {}",
            "GRANT ALL ON ALL TABLES IN SCHEMA public, listener TO {}",
            "GRANT ALL ON ALL SEQUENCES IN SCHEMA public, listener TO {}",
            "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public, listener TO {}",
        ):
            conn.execute(sql.SQL(statement).format(role))

    def refuse_new_connections(self) -> None:
        """Existing sessions stay; the next login of this role is refused."""
        row = self.conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (self.name,)
        ).fetchone()
        assert row is not None
        # The limit counts the connecting session too; the LISTEN one is killed next.
        limit = int(row[0]) - 1
        self.conn.execute(
            sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}").format(
                sql.Identifier(self.name), sql.Literal(limit)
            )
        )

    def accept_connections(self) -> None:
        self.conn.execute(
            sql.SQL("ALTER ROLE {} CONNECTION LIMIT -1").format(sql.Identifier(self.name))
        )

    def kill_listen_session(self) -> None:
        killed = self.conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE usename = %s AND application_name = 'listener:listen'",
            (self.name,),
        ).fetchall()
        assert killed == [(True,)]

    def drop(self) -> None:
        self.conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
            (self.name,),
        )
        role = sql.Identifier(self.name)
        self.conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
        self.conn.execute(sql.SQL("DROP ROLE {}").format(role))


@pytest.fixture
def flaky(conn: psycopg.Connection[Any], dsn: str) -> Iterator[FlakyRole]:
    role = FlakyRole(conn, dsn)
    try:
        yield role
    finally:
        role.drop()


async def test_tasks_inserted_while_the_listen_session_is_down_are_claimed_when_it_returns(
    conn: psycopg.Connection[Any], flaky: FlakyRole
) -> None:
    seen: set[uuid.UUID] = set()
    registry = noop_registry("t", seen=seen)
    async with running_worker(flaky.dsn, registry, poll_interval_s=NO_POLL) as w:
        first, _ = insert_one(conn, "t")
        await eventually(lambda: first in seen)
        await settled_idle(w)
        flaky.refuse_new_connections()
        flaky.kill_listen_session()
        await eventually(lambda: sample(w, "listener_listening") == 0)
        inserted = [insert_one(conn, "t")[0] for _ in range(5)]
        await eventually(lambda: sample(w, "listener_db_reconnects_total") >= 2)
        assert sample(w, "listener_listening") == 0  # they were all inserted while down
        assert not set(inserted) & seen
        flaky.accept_connections()
        back = time.monotonic()
        await eventually(lambda: set(inserted) <= seen, timeout_s=20)
        caught_up_s = time.monotonic() - back
        assert sample(w, "listener_listening") == 1
    assert caught_up_s < 10  # the reconnect's catch-up claim, long before the 60 s poll


async def test_a_watcher_whose_listen_session_drops_still_claims_what_producers_skipped(
    dsn: str, conn: psycopg.Connection[Any], flaky: FlakyRole
) -> None:
    seen: set[uuid.UUID] = set()
    stop = threading.Event()

    def trickle() -> None:  # keeps the worker watching
        with psycopg.connect(dsn, autocommit=True) as own:
            keep_watched(own, "t", stop)

    registry = noop_registry("t", seen=seen)
    async with running_worker(flaky.dsn, registry, poll_interval_s=NO_POLL) as w:
        thread = threading.Thread(target=trickle)
        thread.start()
        try:
            await eventually(lambda: watch_holders(conn, ["t"]))
            with psycopg.connect(dsn) as producer:
                # Skipped its NOTIFY (the type is watched), and holds the gate open.
                row = producer.execute("INSERT INTO tasks (type) VALUES ('t') RETURNING id")
                skipped = row.fetchone()
                assert skipped is not None
                assert watch_holders(conn, ["t"])
                stop.set()
                thread.join()
                flaky.refuse_new_connections()
                flaky.kill_listen_session()
                await eventually(lambda: sample(w, "listener_listening") == 0)
                producer.commit()
            # The watch locks went with the session; the worker passed the gate after
            # our commit and claimed, with its LISTEN session still down.
            await eventually(lambda: skipped[0] in seen, timeout_s=5)
            assert sample(w, "listener_listening") == 0
            assert sample(w, "listener_watch_releases_total", {"reason": "lost"}) == 1
        finally:
            stop.set()
            flaky.accept_connections()


def test_when_the_watching_worker_is_killed_producers_notify_and_another_worker_claims(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    from tests.integration.engine_support import WorkerProcess

    stop = threading.Event()

    def trickle() -> None:
        with psycopg.connect(dsn, autocommit=True) as own:
            keep_watched(own, "noop", stop)

    watcher = WorkerProcess(dsn, "--poll-interval-s", str(NO_POLL), "--types", "noop")
    other: WorkerProcess | None = None
    thread = threading.Thread(target=trickle)
    try:
        watcher.wait_started()
        thread.start()
        holder = wait_until(lambda: watch_holders(conn, ["noop"]))
        other = WorkerProcess(dsn, "--poll-interval-s", str(NO_POLL), "--types", "noop")
        other.wait_started()
        assert watch_holders(conn, ["noop"]) == holder  # the first one still watches
        watcher.stop()  # SIGKILL: its sessions end, and the watch lock with them
        killed_at = time.monotonic()
        time.sleep(0.2)  # the bursts go on: several hundred more tasks
        stop.set()
        thread.join()
        wait_until(
            lambda: (
                conn.execute(
                    "SELECT count(*) FILTER (WHERE status = 'pending') FROM tasks"
                ).fetchone()
                == (0,)
            ),
            timeout_s=20,
        )
        drained_s = time.monotonic() - killed_at
        worker_ids = conn.execute(
            "SELECT count(DISTINCT worker_id) FROM tasks WHERE status = 'completed'"
        ).fetchone()
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        watcher.stop()
        if other is not None:
            other.stop()
    # Tasks the killed worker had claimed but not finished are the rescuer's; the rest,
    # including those skipped just before the kill, were woken up for, not polled.
    assert drained_s < 10
    assert worker_ids == (2,)
