"""The engine's many-row writes reach each row by primary key, whatever the statistics.

Outcomes and lease renewals are written for hundreds of tasks at once at high
concurrency. On a table never analyzed (a burst the autovacuum has not seen), the
planner once joined the locked rows to a sequential scan of the table per row: 0.5 s
to write 500 outcomes, and a worker at --concurrency 500 drained ~2,500 tasks/s.
Mid-drain, it then locked them through a bitmap scan of tasks_lease_idx, which keeps
an entry for every task claimed since the last vacuum: the statement's cost grew with
the drain (5,000 entries read for 100 outcomes, 3 of its 4.4 ms). On a table analyzed
while nothing was processing, each outcome looked its row up through tasks_lease_idx,
which then looks empty: every processing row read per outcome (150,000 buffers for 500).
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from listener.sqlfiles import query
from tests.integration.plan_support import collect_plans, most_pages_read, most_rows_visited

BATCH = 500


def _claimed_batch(conn: psycopg.Connection[Any]) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """30,000 pending tasks, never analyzed; BATCH of them claimed by one claim."""
    conn.execute("INSERT INTO tasks (type) SELECT 'send_email' FROM generate_series(1, 30000)")
    return _claim(conn)


def _claim(conn: psycopg.Connection[Any]) -> tuple[uuid.UUID, list[uuid.UUID]]:
    token = uuid.uuid4()
    rows = conn.execute(
        query("claim_batch"),
        {
            "worker_id": "w",
            "token": token,
            "limit": BATCH,
            "types": ["send_email"],
            "attempt_limits": [3],
            "lease_s": 30.0,
            "concurrency": None,
            "rate_counts": None,
            "rate_windows_s": None,
        },
    ).fetchall()
    ids = [row[0] for row in rows if row[0] is not None]
    assert len(ids) == BATCH
    return token, ids


def _assert_rows_reached_by_primary_key(plans: list[str]) -> None:
    (plan,) = [p for p in plans if "Update on tasks" in p]
    assert "Seq Scan on tasks" not in plan, plan
    # Each row's index path and heap page, a few times over: not BATCH scans of the table.
    assert most_pages_read(plan) < 20 * BATCH, plan
    # Nor more index entries than a few per row (each update leaves one in the primary
    # key): not an entry for every task claimed since the last vacuum.
    assert most_rows_visited(plan) <= 4 * BATCH, plan


def _complete(conn: psycopg.Connection[Any], token: uuid.UUID, ids: list[uuid.UUID]) -> None:
    conn.execute(query("finish_tasks"), _outcomes(token, ids)).fetchall()


def _outcomes(token: uuid.UUID, ids: list[uuid.UUID]) -> dict[str, Any]:
    n = len(ids)
    return {"ids": ids, "tokens": [token] * n, "actions": ["complete"] * n,
            "delays_s": [None] * n, "errors": [None] * n}  # fmt: skip


def _mid_drain(conn: psycopg.Connection[Any]) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A batch claimed after 20 others were claimed and completed, never vacuumed."""
    token, ids = _claimed_batch(conn)
    for _ in range(20):
        _complete(conn, token, ids)
        token, ids = _claim(conn)
    return token, ids


def _analyzed_before_the_claim(conn: psycopg.Connection[Any]) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A table analyzed while nothing was processing (a backlog analyzed before the
    workers came): to the planner, tasks_lease_idx is then empty."""
    conn.execute("INSERT INTO tasks (type) SELECT 'send_email' FROM generate_series(1, 30000)")
    conn.execute("ANALYZE tasks")
    return _claim(conn)


STATES = {
    "fresh": _claimed_batch,
    "mid-drain": _mid_drain,
    "analyzed before the claim": _analyzed_before_the_claim,
}


@pytest.mark.parametrize("state", list(STATES))
def test_outcomes_of_a_large_batch_are_written_by_primary_key_whatever_the_statistics(
    conn: psycopg.Connection[Any], state: str
) -> None:
    token, ids = STATES[state](conn)
    plans = collect_plans(conn)
    written = conn.execute(query("finish_tasks"), _outcomes(token, ids)).fetchall()
    assert all(row[2] for row in written)
    assert len(written) == BATCH
    _assert_rows_reached_by_primary_key(plans)


@pytest.mark.parametrize("state", list(STATES))
def test_the_leases_of_a_large_batch_are_renewed_by_primary_key_whatever_the_statistics(
    conn: psycopg.Connection[Any], state: str
) -> None:
    token, ids = STATES[state](conn)
    plans = collect_plans(conn)
    renewed = conn.execute(
        query("heartbeat"),
        {
            "worker_id": "w",
            "hostname": "h",
            "pid": 1,
            "types": ["send_email"],
            "concurrency": BATCH,
            "ids": ids,
            "tokens": [token] * BATCH,
            "lease_s": 30.0,
        },
    ).fetchall()
    assert all(row[2] for row in renewed)
    assert len(renewed) == BATCH
    _assert_rows_reached_by_primary_key(plans)


@pytest.mark.parametrize("state", list(STATES))
def test_a_transactional_handlers_completion_reads_only_its_own_row(
    conn: psycopg.Connection[Any], state: str
) -> None:
    token, ids = STATES[state](conn)
    plans = collect_plans(conn)
    completed = conn.execute(query("complete_claim"), {"id": ids[-1], "token": token}).fetchall()
    assert completed == [(ids[-1],)]
    (plan,) = [p for p in plans if "Update on tasks" in p]
    assert most_rows_visited(plan) <= 4, plan
