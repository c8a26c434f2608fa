"""Queue gauges read at scrape time: cheap, indexed, never a full-table count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from listener import db
from listener.sqlfiles import query

FINISHED_STATUSES = ("completed", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class QueueGauges:
    pending: int
    processing: int
    oldest_pending_age_s: float  # 0 when nothing is due
    notification_queue_usage: float  # 0..1, pg_notification_queue_usage()
    finished_estimate: dict[str, int]  # status -> rows, from planner statistics


def connect(dsn: str, timeout_s: float) -> psycopg.Connection[Any]:
    """An autocommit connection whose connects and statements give up after ``timeout_s``."""
    conn = db.connect(dsn, autocommit=True, connect_timeout=max(1, round(timeout_s)))
    try:
        conn.execute(query("set_statement_timeout"), {"timeout_ms": str(int(timeout_s * 1000))})
    except BaseException:
        conn.close()
        raise
    return conn


def read_queue_gauges(conn: psycopg.Connection[Any]) -> QueueGauges:
    """Exact pending/processing counts (partial indexes) and estimated finished rows."""
    row = conn.execute(query("queue_depth_unfinished")).fetchone()
    assert row is not None  # a SELECT of scalar subqueries always returns one row
    estimates = dict.fromkeys(FINISHED_STATUSES, 0)
    for status, estimate in conn.execute(query("queue_depth_finished_estimate")).fetchall():
        estimates[status] = int(estimate)
    return QueueGauges(
        pending=int(row[0]),
        processing=int(row[1]),
        oldest_pending_age_s=float(row[2]),
        notification_queue_usage=float(row[3]),
        finished_estimate=estimates,
    )
