"""Queue status for `listener status`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from listener.sqlfiles import query
from listener.store.schedules import LimitStatus, ScheduleStatus, limit_status, schedule_status


@dataclass(frozen=True, slots=True)
class QueueStatus:
    counts: list[tuple[str, str, int]]  # (status, type, count)
    oldest_pending_age_s: float | None
    unhandled_pending: list[tuple[str, int]]  # (type, count) no live worker handles
    workers: list[dict[str, Any]]
    limits: list[LimitStatus]  # limited types, as live workers publish them
    schedules: list[ScheduleStatus]


WORKER_STALE_S = 30.0
# Finished tasks are counted over the last hour: the window of the dashboard's
# throughput chart, and what "what failed lately?" means. A day's were counted before
# and cost 100-300 ms at 285,000 rows a day; the tasks listing goes further back.
FINISHED_WINDOW_S = 3600


def queue_status(conn: psycopg.Connection[Any]) -> QueueStatus:
    """Counts, oldest pending age, unhandled types, live workers, limits and schedules."""
    stale = {"stale_s": WORKER_STALE_S}
    window = {"finished_window_s": FINISHED_WINDOW_S}
    counts = [(s, t, int(c)) for s, t, c in conn.execute(query("unfinished_counts"), window)]
    age_row = conn.execute(query("oldest_pending_age")).fetchone()
    age = float(age_row[0]) if age_row and age_row[0] is not None else None
    unhandled = [(t, int(c)) for t, c in conn.execute(query("pending_types_without_worker"), stale)]
    cur = conn.execute(query("live_workers"), stale)
    names = [d.name for d in cur.description or ()]
    workers = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    limits = limit_status(conn, WORKER_STALE_S)
    schedules = schedule_status(conn, WORKER_STALE_S)
    return QueueStatus(counts, age, unhandled, workers, limits, schedules)
