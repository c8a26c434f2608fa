"""The dashboard's reads (`listener ui`): short statements over indexes, bounded per page.

Every function takes an autocommit connection set up by ``configure_session``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from listener.sqlfiles import query
from listener.store.status import QueueStatus, queue_status

# Rows one listing page may look at: a filter that matches few rows gives a short
# page that says where to go on, never a walk through the whole table.
LIST_BUDGET = 10_000
FINISHED = ("completed", "failed", "cancelled")
STATUSES = ("pending", "processing", *FINISHED)
_FIRST_UUID, _LAST_UUID = uuid.UUID(int=0), uuid.UUID(int=(1 << 128) - 1)
_TOP_PRIORITY = 32767  # smallint's maximum: a first page of pending tasks starts there

# (priority, run_at, id) for pending, (started_at, id) for processing,
# (completed_at, id) for finished tasks: the last row a page showed or looked at.
Cursor = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class SessionLimits:
    statement_timeout_ms: int = 5000
    lock_timeout_ms: int = 2000
    idle_in_transaction_timeout_ms: int = 10_000
    read_only: bool = True


def configure_session(conn: psycopg.Connection[Any], limits: SessionLimits) -> None:
    """Timeouts, UTC, no JIT and (without actions) read-only, for this session."""
    conn.execute(
        query("ui_session_settings"),
        {
            "statement_timeout": str(limits.statement_timeout_ms),
            "lock_timeout": str(limits.lock_timeout_ms),
            "idle_timeout": str(limits.idle_in_transaction_timeout_ms),
            "read_only": "on" if limits.read_only else "off",
        },
    )


@dataclass(frozen=True, slots=True)
class PickupDelay:
    """Due -> claimed, over tasks finished in the last 5 minutes and those running."""

    sampled: int
    p50_s: float | None
    p95_s: float | None
    max_s: float | None


@dataclass(frozen=True, slots=True)
class Overview:
    status: QueueStatus
    throughput: list[dict[str, Any]]  # per minute: minute, completed, failed, pickup_p95_s
    pickup: PickupDelay
    oldest_due: dict[str, Any] | None  # id, type, run_at, age_s
    now: datetime


def read_overview(conn: psycopg.Connection[Any]) -> Overview:
    """What the overview page shows: `listener status`, throughput, pickup delay."""
    status = queue_status(conn)
    throughput = _dicts(conn.execute(query("ui_throughput")))
    row = conn.execute(query("ui_pickup_delay")).fetchone()
    assert row is not None  # an aggregate without GROUP BY returns one row
    now, sampled, p50, p95, most = row
    oldest = _dicts(conn.execute(query("ui_oldest_due_pending")))
    return Overview(
        status=status,
        throughput=throughput,
        pickup=PickupDelay(int(sampled), p50, p95, most),
        oldest_due=oldest[0] if oldest else None,
        now=now,
    )


def read_now(conn: psycopg.Connection[Any]) -> datetime:
    """The database's clock (relative times are relative to it)."""
    row = conn.execute(query("ui_now")).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def worker_types(conn: psycopg.Connection[Any]) -> list[str]:
    """Types handled by the workers seen in the last day."""
    return [str(t) for (t,) in conn.execute(query("ui_worker_types")).fetchall()]


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """One page of one status's tasks, in that status's order, after ``cursor``."""

    status: str
    type: str | None = None
    since: datetime | None = None  # pending: due, processing: started, else finished
    until: datetime | None = None
    cursor: Cursor | None = None
    limit: int = 50

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")
        if not 1 <= self.limit <= 500:
            raise ValueError(f"limit must be between 1 and 500, got {self.limit}")


@dataclass(frozen=True, slots=True)
class TaskPage:
    tasks: list[dict[str, Any]]
    next_cursor: Cursor | None  # None: nothing after this page
    budget_spent: bool = False  # the page looked at LIST_BUDGET rows before it filled
    looked_at: int = field(default=0)


def list_tasks(
    conn: psycopg.Connection[Any], task_query: TaskQuery, budget: int = LIST_BUDGET
) -> TaskPage:
    """A page of tasks and the cursor of the next one, looking at <= ``budget`` rows."""
    name, params = _listing(task_query)
    params |= {
        "type": task_query.type,
        "since": task_query.since or "-infinity",
        "until": task_query.until or "infinity",
        "budget": budget,
        "limit": task_query.limit,
    }
    with conn.transaction():
        conn.execute(query("ui_prefer_index_order"))
        rows = _dicts(conn.execute(query(name), params))
    return _page(rows, task_query, budget)


def _listing(task_query: TaskQuery) -> tuple[str, dict[str, Any]]:
    status, cursor = task_query.status, task_query.cursor
    if status == "pending":
        priority, run_at, task_id = cursor or (_TOP_PRIORITY, "-infinity", _FIRST_UUID)
        return "ui_tasks_pending", {"priority": priority, "run_at": run_at, "id": task_id}
    if status == "processing":
        started_at, task_id = cursor or ("-infinity", _FIRST_UUID)
        return "ui_tasks_processing", {"started_at": started_at, "id": task_id}
    completed_at, task_id = cursor or ("infinity", _LAST_UUID)
    return "ui_tasks_finished", {"status": status, "completed_at": completed_at, "id": task_id}


def cursor_of(status: str, row: dict[str, Any]) -> Cursor:
    """The keyset position of ``row`` in ``status``'s order."""
    if status == "pending":
        return (row["priority"], row["run_at"], row["id"])
    if status == "processing":
        return (row["started_at"], row["id"])
    return (row["completed_at"], row["id"])


def _page(rows: list[dict[str, Any]], task_query: TaskQuery, budget: int) -> TaskPage:
    matches = [r for r in rows if r["match"]]
    end = next((r for r in rows if r["n"] == budget), None)
    looked_at = rows[-1]["n"] if rows else 0
    for row in rows:
        del row["n"], row["match"]
    status, limit = task_query.status, task_query.limit
    if len(matches) > limit:
        return TaskPage(matches[:limit], cursor_of(status, matches[limit - 1]), False, looked_at)
    if end is not None:  # looked at the whole budget: go on after the last row looked at
        return TaskPage(matches, cursor_of(status, end), True, looked_at)
    return TaskPage(matches, None, False, looked_at)


def tasks_by_dedupe_key(
    conn: psycopg.Connection[Any], dedupe_key: str, limit: int = 50
) -> list[dict[str, Any]]:
    """The unfinished task holding ``dedupe_key``, then finished ones, newest first."""
    params = {"dedupe_key": dedupe_key, "limit": limit}
    return _dicts(conn.execute(query("ui_tasks_by_dedupe_key"), params))[:limit]


def task(
    conn: psycopg.Connection[Any], task_id: uuid.UUID, *, with_payload: bool = False
) -> dict[str, Any] | None:
    """One task; its payload only with ``with_payload``, else only the keys' shapes."""
    rows = _dicts(conn.execute(query("ui_task"), {"id": task_id, "with_payload": with_payload}))
    if not rows:
        return None
    row = rows[0]
    row["payload_keys"] = [
        {"key": key, "kind": kind, "size": size} for key, kind, size in row["payload_keys"]
    ]
    if not with_payload:
        del row["payload"]
    return row


def _dicts(cur: psycopg.Cursor[Any]) -> list[dict[str, Any]]:
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
