"""record_transaction(): a replayed payment webhook is a no-op."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

RECORD = "SELECT public.record_transaction(%s, %s, %s, %s)"


def test_first_recording_is_new_and_a_replay_is_not(conn: psycopg.Connection[Any]) -> None:
    args = ("order_123", "a@example.com", 49_900, "paid")
    assert conn.execute(RECORD, args).fetchone() == (True,)
    assert conn.execute(RECORD, args).fetchone() == (False,)
    rows = conn.execute("SELECT order_id, email, amount, status FROM transactions").fetchall()
    assert rows == [args]


def test_replay_with_different_details_keeps_the_first_recording(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute(RECORD, ("order_1", "a@example.com", 100, "paid"))
    assert conn.execute(RECORD, ("order_1", "b@example.com", 999, "refunded")).fetchone() == (
        False,
    )
    assert conn.execute("SELECT email, amount FROM transactions").fetchall() == [
        ("a@example.com", 100)
    ]


def test_amount_beyond_32_bits_is_stored(conn: psycopg.Connection[Any]) -> None:
    big = 10_000_000_000  # 100 million rupees in paise: over integer's 2^31
    conn.execute(RECORD, ("big", None, big, "paid"))
    assert conn.execute("SELECT amount FROM transactions").fetchone() == (big,)


def test_negative_amount_is_rejected(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="transactions_amount_not_negative"):
        conn.execute(RECORD, ("neg", None, -1, "paid"))


def test_plain_duplicate_insert_is_rejected_by_the_unique_order_id(
    conn: psycopg.Connection[Any],
) -> None:
    insert = "INSERT INTO transactions (order_id, amount, status) VALUES ('o', 1, 'paid')"
    conn.execute(insert)
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(insert)


def test_concurrent_replays_record_exactly_one_row(dsn: str, conn: psycopg.Connection[Any]) -> None:
    callers = 12
    barrier = threading.Barrier(callers)
    results: list[bool] = []
    lock = threading.Lock()

    def replay() -> None:
        with psycopg.connect(dsn, autocommit=True) as own:
            barrier.wait()
            row = own.execute(RECORD, ("order_race", "r@example.com", 500, "paid")).fetchone()
            assert row is not None
            with lock:
                results.append(row[0])

    threads = [threading.Thread(target=replay) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == [False] * (callers - 1) + [True]
    assert conn.execute("SELECT count(*) FROM transactions").fetchone() == (1,)
