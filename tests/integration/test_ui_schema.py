"""The dashboard's migration: two partial indexes, on rows the hot path never writes."""

from __future__ import annotations

from typing import Any

import psycopg


def test_the_dashboard_indexes_cover_only_failed_cancelled_and_deduplicated_finished_rows(
    conn: psycopg.Connection[Any],
) -> None:
    rows = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'tasks' "
        "AND indexname IN ('tasks_failed_cancelled_idx', 'tasks_finished_dedupe_key_idx') "
        "ORDER BY 1"
    ).fetchall()
    definitions = dict(rows)
    assert set(definitions) == {"tasks_failed_cancelled_idx", "tasks_finished_dedupe_key_idx"}
    assert "(status, completed_at, id)" in definitions["tasks_failed_cancelled_idx"]
    assert (
        "WHERE (status = ANY (ARRAY['failed'::text, 'cancelled'::text]))"
        in (definitions["tasks_failed_cancelled_idx"])
    )
    assert (
        "(dedupe_key) WHERE ((dedupe_key IS NOT NULL) AND (status = ANY"
        in (definitions["tasks_finished_dedupe_key_idx"])
    )


def test_a_completed_task_without_a_dedupe_key_enters_neither_index(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute(
        "INSERT INTO tasks (type, status, completed_at) "
        "SELECT 'noop', 'completed', now() FROM generate_series(1, 1000)"
    )
    conn.execute("INSERT INTO tasks (type, status, completed_at) VALUES ('x', 'failed', now())")
    conn.execute("VACUUM ANALYZE tasks")  # index tuple counts in pg_class
    counts = dict(
        conn.execute(
            "SELECT relname, reltuples::bigint FROM pg_class WHERE relname IN "
            "('tasks_failed_cancelled_idx', 'tasks_finished_dedupe_key_idx')"
        ).fetchall()
    )
    assert counts == {"tasks_failed_cancelled_idx": 1, "tasks_finished_dedupe_key_idx": 0}
