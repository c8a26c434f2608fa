"""The insert trigger: one constant, data-free NOTIFY per statement that adds due work."""

from __future__ import annotations

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
