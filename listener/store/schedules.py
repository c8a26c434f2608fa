"""Schedules and published limits: the scheduler's SQL (async) and status's (sync)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection

from listener.sqlfiles import query

Conn = AsyncConnection[Any]


# -- the scheduler (async) --------------------------------------------------------


async def database_now(conn: Conn) -> datetime:
    cur = await conn.execute(query("database_now"))
    row = await cur.fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


async def register_schedules(
    conn: Conn, schedules: Mapping[str, str], next_run_ats: Mapping[str, datetime]
) -> None:
    """Create or refresh one row per scheduled type (``type -> description``)."""
    types = sorted(schedules)
    params = {
        "types": types,
        "schedules": [schedules[t] for t in types],
        "next_run_ats": [next_run_ats[t] for t in types],
    }
    await conn.execute(query("schedules_register"), params)


async def publish_worker(
    conn: Conn, worker_id: str, limits: Mapping[str, Any], schedules: Mapping[str, Any]
) -> None:
    """Write this worker's limits and schedules onto its listener.workers row."""
    params = {
        "worker_id": worker_id,
        "limits": json.dumps(limits, sort_keys=True),
        "schedules": json.dumps(schedules, sort_keys=True),
    }
    await conn.execute(query("schedules_publish_worker"), params)


async def baselines(conn: Conn, types: Sequence[str]) -> dict[str, datetime]:
    """Per type: the newest instant enqueued, else when the schedule was registered."""
    cur = await conn.execute(query("schedule_baselines"), {"types": list(types)})
    return {task_type: baseline for task_type, baseline in await cur.fetchall()}


async def enqueue_instant(
    conn: Conn, task_type: str, instant: datetime, next_run_at: datetime
) -> tuple[uuid.UUID, datetime] | None:
    """Insert the task for ``instant`` unless it was enqueued already.

    Returns (task id, previous baseline), or None if another worker got there first.
    """
    params = {
        "type": task_type,
        "instant": instant,
        "scheduled_for": instant.isoformat(),
        "task_id": uuid.uuid4(),
        "next_run_at": next_run_at,
    }
    cur = await conn.execute(query("schedule_enqueue"), params)
    row = await cur.fetchone()
    return None if row is None else (row[0], row[1])


# -- listener status (sync) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimitStatus:
    type: str
    global_concurrency: int | None  # the strictest a live worker publishes
    global_concurrency_varies: bool  # live workers disagree (a rolling deploy)
    running: int  # processing with a live lease
    rate_limits: list[dict[str, int]]  # {"count", "window_s"}: one unless workers disagree
    started_in_window: int | None  # for the strictest rate limit's window


@dataclass(frozen=True, slots=True)
class ScheduleStatus:
    type: str
    schedule: str
    last_run: datetime | None  # the newest instant enqueued
    last_task_id: uuid.UUID | None
    next_run: datetime | None  # None when no live worker runs the schedule
    active: bool


def limit_status(conn: psycopg.Connection[Any], stale_s: float) -> list[LimitStatus]:
    """Limited types as live workers publish them, with running and rate-window use."""
    found = []
    for task_type, global_n, variants, rates, running in conn.execute(
        query("status_limits"), {"stale_s": stale_s}
    ).fetchall():
        rate_limits = sorted(rates or [], key=lambda r: r["count"] / r["window_s"])
        started = None
        if rate_limits:
            params = {"type": task_type, "window_s": rate_limits[0]["window_s"]}
            row = conn.execute(query("status_rate_window_starts"), params).fetchone()
            started = int(row[0]) if row else 0
        found.append(
            LimitStatus(task_type, global_n, variants > 1, int(running), rate_limits, started)
        )
    return found


def schedule_status(conn: psycopg.Connection[Any], stale_s: float) -> list[ScheduleStatus]:
    rows = conn.execute(query("status_schedules"), {"stale_s": stale_s}).fetchall()
    return [
        ScheduleStatus(t, s, last, task_id, next_run if active else None, bool(active))
        for t, s, last, task_id, next_run, active in rows
    ]
