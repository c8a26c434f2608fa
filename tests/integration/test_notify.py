"""The insert trigger: one constant, data-free NOTIFY per statement that adds due work."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

CHANNEL = "listener_tasks"
MARKER = "end-of-test-marker"


@pytest.fixture
def listening(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        yield listener


def _payloads_until_marker(
    conn: psycopg.Connection[Any], sender: psycopg.Connection[Any]
) -> list[str]:
    """Every notification before a marker sent afterwards (delivery is in commit order)."""
    sender.execute("SELECT pg_notify(%s, %s)", (CHANNEL, MARKER))
    seen: list[str] = []
    for note in conn.notifies(timeout=10):
        if note.payload == MARKER:
            return seen
        seen.append(note.payload)
    raise AssertionError(f"marker notification never arrived; saw {seen}")


def test_one_insert_of_1000_rows_sends_exactly_one_small_constant_notification(
    conn: psycopg.Connection[Any], listening: psycopg.Connection[Any]
) -> None:
    conn.execute(
        "INSERT INTO tasks (type, payload) "
        "SELECT 'send_email', jsonb_build_object('email', 'user' || i || '@example.com') "
        "FROM generate_series(1, 1000) AS i"
    )
    payloads = _payloads_until_marker(listening, conn)
    assert payloads == [""]  # nothing of the tasks' data leaks to other database users


def test_insert_of_a_future_task_sends_no_notification(
    conn: psycopg.Connection[Any], listening: psycopg.Connection[Any]
) -> None:
    conn.execute("INSERT INTO tasks (type, run_at) VALUES ('later', now() + interval '1 hour')")
    assert _payloads_until_marker(listening, conn) == []


def test_insert_of_a_finished_task_sends_no_notification(
    conn: psycopg.Connection[Any], listening: psycopg.Connection[Any]
) -> None:
    conn.execute("INSERT INTO tasks (type, status) VALUES ('archived', 'completed')")
    assert _payloads_until_marker(listening, conn) == []


def test_mixed_insert_with_one_due_row_notifies_once(
    conn: psycopg.Connection[Any], listening: psycopg.Connection[Any]
) -> None:
    conn.execute(
        "INSERT INTO tasks (type, run_at) VALUES ('later', now() + interval '1 hour'), "
        "('now', now())"
    )
    assert _payloads_until_marker(listening, conn) == [""]


def test_notification_arrives_only_after_the_inserting_transaction_commits(
    dsn: str, conn: psycopg.Connection[Any], listening: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn) as producer:
        producer.execute("INSERT INTO tasks (type) VALUES ('t')")
        # Not committed yet: a marker committed by someone else arrives with nothing before it.
        assert _payloads_until_marker(listening, conn) == []
        producer.commit()
    assert _payloads_until_marker(listening, conn) == [""]


def test_rolled_back_insert_sends_nothing(
    dsn: str, conn: psycopg.Connection[Any], listening: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn) as producer:
        producer.execute("INSERT INTO tasks (type) VALUES ('t')")
        producer.rollback()
    assert _payloads_until_marker(listening, conn) == []


def test_trigger_is_statement_level_after_insert(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute(
        "SELECT action_timing, action_orientation, event_manipulation "
        "FROM information_schema.triggers WHERE trigger_name = 'tasks_notify_inserted'"
    ).fetchone()
    assert row == ("AFTER", "STATEMENT", "INSERT")


# The wake-up protocol's producer side (migration 0008, docs/notify.md).


@pytest.fixture
def watcher(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A session that can take watch locks, as a worker's LISTEN session does."""
    with psycopg.connect(dsn, autocommit=True) as session:
        yield session


def _watch(session: psycopg.Connection[Any], task_type: str) -> None:
    row = session.execute(
        "SELECT pg_try_advisory_lock(listener.wake_watch_key(%s))", (task_type,)
    ).fetchone()
    assert row == (True,)


def test_a_watched_type_inserts_without_a_notification(
    conn: psycopg.Connection[Any],
    listening: psycopg.Connection[Any],
    watcher: psycopg.Connection[Any],
) -> None:
    _watch(watcher, "a")
    conn.execute("INSERT INTO tasks (type) VALUES ('a')")
    conn.execute("INSERT INTO tasks (type) SELECT 'a' FROM generate_series(1, 100)")
    assert _payloads_until_marker(listening, conn) == []


def test_a_type_nobody_watches_still_notifies_while_another_is_watched(
    conn: psycopg.Connection[Any],
    listening: psycopg.Connection[Any],
    watcher: psycopg.Connection[Any],
) -> None:
    _watch(watcher, "a")
    conn.execute("INSERT INTO tasks (type) VALUES ('b')")
    conn.execute("INSERT INTO tasks (type) VALUES ('a'), ('b')")  # one statement, both
    assert _payloads_until_marker(listening, conn) == ["", ""]


def test_inserts_notify_again_once_the_watch_lock_is_given_back(
    conn: psycopg.Connection[Any],
    listening: psycopg.Connection[Any],
    watcher: psycopg.Connection[Any],
) -> None:
    _watch(watcher, "a")
    watcher.execute("SELECT pg_advisory_unlock(listener.wake_watch_key('a'))")
    conn.execute("INSERT INTO tasks (type) VALUES ('a')")
    assert _payloads_until_marker(listening, conn) == [""]


def test_a_producer_that_skipped_holds_the_gate_until_it_commits(
    dsn: str, watcher: psycopg.Connection[Any]
) -> None:
    _watch(watcher, "a")
    passed: list[float] = []
    with psycopg.connect(dsn) as producer:
        producer.execute("INSERT INTO tasks (type) VALUES ('a')")  # skipped: 'a' is watched
        watcher.execute("SELECT pg_advisory_unlock(listener.wake_watch_key('a'))")

        def pass_gate() -> None:
            watcher.execute("SELECT listener.wake_gate_pass(ARRAY['a'], false)")
            passed.append(time.monotonic())

        gate = threading.Thread(target=pass_gate)
        gate.start()
        time.sleep(0.3)
        assert passed == []  # still waiting for our transaction
        committed = time.monotonic()
        producer.commit()
        gate.join(10)
    assert passed
    assert passed[0] >= committed
    # ... and once through the gate, the row is there to claim.
    row = watcher.execute("SELECT count(*) FROM tasks WHERE type = 'a'").fetchone()
    assert row == (1,)


def test_producers_notify_while_a_watcher_waits_at_the_gate(
    dsn: str,
    conn: psycopg.Connection[Any],
    listening: psycopg.Connection[Any],
    watcher: psycopg.Connection[Any],
) -> None:
    _watch(watcher, "a")
    with psycopg.connect(dsn) as slow_producer:
        slow_producer.execute("INSERT INTO tasks (type) VALUES ('a')")  # holds the gate
        watcher.execute("SELECT pg_advisory_unlock(listener.wake_watch_key('a'))")
        gate = threading.Thread(
            target=watcher.execute, args=("SELECT listener.wake_gate_pass(ARRAY['a'], false)",)
        )
        gate.start()
        _wait_for_gate_waiter(conn)
        # The gate is queued for: a producer's shared try is refused, so it notifies.
        conn.execute("INSERT INTO tasks (type) VALUES ('a')")
        assert _payloads_until_marker(listening, conn) == [""]
        slow_producer.rollback()
        gate.join(10)


def _wait_for_gate_waiter(conn: psycopg.Connection[Any]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone()
        if row and row[0]:
            return
        time.sleep(0.01)
    raise AssertionError("the gate pass never queued for the gate lock")


def test_the_trigger_leaves_no_advisory_lock_behind_after_commit(
    conn: psycopg.Connection[Any], watcher: psycopg.Connection[Any]
) -> None:
    conn.execute("INSERT INTO tasks (type) VALUES ('a')")  # nobody watches: notifies
    _watch(watcher, "a")
    conn.execute("INSERT INTO tasks (type) VALUES ('a')")  # watched: skips
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    ).fetchone()
    assert row == (0,)


def test_a_producer_without_any_right_on_schema_listener_can_insert_and_notify(
    dsn: str, conn: psycopg.Connection[Any], listening: psycopg.Connection[Any]
) -> None:
    conn.execute(
        "DO $$ BEGIN CREATE ROLE listener_test_producer NOLOGIN; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    conn.execute("GRANT INSERT, SELECT ON tasks TO listener_test_producer")
    conn.execute("ALTER TABLE tasks DISABLE ROW LEVEL SECURITY")  # a plain-PostgreSQL app
    with psycopg.connect(dsn, autocommit=True) as producer:
        producer.execute("SET ROLE listener_test_producer")
        row = producer.execute("SELECT has_schema_privilege('listener', 'USAGE')").fetchone()
        assert row == (False,)
        producer.execute("INSERT INTO tasks (type) VALUES ('a')")
    assert _payloads_until_marker(listening, conn) == [""]
    conn.execute("REVOKE ALL ON tasks FROM listener_test_producer")


def test_the_trigger_spells_the_same_lock_keys_as_the_worker_functions(
    conn: psycopg.Connection[Any],
) -> None:
    body = conn.execute(
        "SELECT prosrc FROM pg_proc WHERE oid = 'listener.notify_tasks_inserted'::regproc"
    ).fetchone()
    keys = conn.execute(
        "SELECT listener.wake_watch_key('x') = hashtextextended('x', 1920462053), "
        "listener.wake_gate_key('x') = hashtextextended('x', 1920462054)"
    ).fetchone()
    assert body is not None
    assert "hashtextextended(task_type, 1920462053)" in body[0]
    assert "hashtextextended(task_type, 1920462054)" in body[0]
    assert keys == (True, True)
