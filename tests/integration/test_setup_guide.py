"""The setup guide's own verification queries run on a migrated database."""

from __future__ import annotations

from typing import Any

import psycopg


def test_setup_guide_verification_queries_run_on_migrated_database(
    conn: psycopg.Connection[Any],
) -> None:
    assert conn.execute("SELECT * FROM public.tasks LIMIT 1").fetchall() == []
    assert conn.execute("SELECT * FROM public.transactions LIMIT 1").fetchall() == []
    assert conn.execute("SELECT * FROM claim_next_task()").fetchall() == []


def test_claim_next_task_claims_oldest_pending_task_as_processing(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute(
        "INSERT INTO tasks (type, payload, created_at, run_at) VALUES "
        "('a', '{}', now() - interval '2 min', now() - interval '2 min'),"
        "('b', '{}', now() - interval '1 min', now() - interval '1 min')"
    )
    claimed = conn.execute(
        "SELECT type, status, started_at IS NOT NULL FROM claim_next_task()"
    ).fetchall()
    assert claimed == [("a", "processing", True)]
