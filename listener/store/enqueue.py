"""Inserting tasks (the producer side), sync and async."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import psycopg

from listener.errors import InvalidTaskError
from listener.sqlfiles import query

if TYPE_CHECKING:
    from listener.producer import NewTask


# What a CHECK constraint on public.tasks means for the producer who broke it.
_CONSTRAINT_PROBLEMS = {
    "tasks_payload_size": "payload is over the database's 1 MiB limit once stored as jsonb "
    "(arrays of many small numbers grow several-fold)",
    "tasks_payload_logical_size": "payload is over the database's 1 MiB limit as JSON text",
    "tasks_payload_depth": "payload is nested deeper than 64 levels",
}


@contextlib.contextmanager
def _rejections_as_invalid_task() -> Iterator[None]:
    """A CHECK violation is bad input the Python-side checks missed: say which rule."""
    try:
        yield
    except psycopg.errors.CheckViolation as exc:
        name = exc.diag.constraint_name or "?"
        problem = _CONSTRAINT_PROBLEMS.get(name, f"the database rejected the task ({name})")
        raise InvalidTaskError(problem) from None


def _insert_params(task: NewTask) -> dict[str, Any]:
    return {
        "type": task.type,
        "payload": task.payload_json,
        "run_at": task.run_at,
        "priority": task.priority,
        "max_attempts": task.max_attempts,
        "dedupe_key": task.dedupe_key,
    }


def _bulk_params(tasks: Sequence[NewTask]) -> tuple[list[uuid.UUID], dict[str, Any]]:
    ids = [uuid.uuid4() for _ in tasks]
    return ids, {
        "ids": ids,
        "types": [t.type for t in tasks],
        "payloads": [t.payload_json for t in tasks],
        "run_ats": [t.run_at for t in tasks],
        "priorities": [t.priority for t in tasks],
        "max_attempts": [t.max_attempts for t in tasks],
        "dedupe_keys": [t.dedupe_key for t in tasks],
    }


def _resolve_bulk_ids(
    tasks: Sequence[NewTask],
    ids: list[uuid.UUID],
    inserted: set[uuid.UUID],
    existing: dict[str, uuid.UUID],
) -> list[uuid.UUID]:
    """Ids in input order: the new row's, or the unfinished task holding its dedupe key."""
    resolved = []
    for task, new_id in zip(tasks, ids, strict=True):
        if new_id in inserted or task.dedupe_key is None:
            resolved.append(new_id)
        else:
            resolved.append(existing[task.dedupe_key])
    return resolved


# -- producer (sync) --------------------------------------------------------------


def insert_task(conn: psycopg.Connection[Any], task: NewTask) -> uuid.UUID:
    """Insert one task; with a dedupe key already taken, return the holder's id."""
    params = _insert_params(task)
    # A savepoint-free retry loop: the holder may finish between our two queries.
    for _ in range(10):
        with _rejections_as_invalid_task():
            row = conn.execute(query("insert_task"), params).fetchone()
        if row is not None:
            return row[0]  # type: ignore[no-any-return]
        row = conn.execute(query("unfinished_task_by_dedupe_key"), params).fetchone()
        if row is not None:
            return row[0]  # type: ignore[no-any-return]
    raise RuntimeError(f"dedupe key {task.dedupe_key!r} kept changing hands; gave up")


def insert_tasks(conn: psycopg.Connection[Any], tasks: Sequence[NewTask]) -> list[uuid.UUID]:
    """Insert many tasks in one statement (one NOTIFY); ids in input order."""
    if not tasks:
        return []
    ids, params = _bulk_params(tasks)
    with _rejections_as_invalid_task():
        inserted = {r[0] for r in conn.execute(query("insert_tasks"), params).fetchall()}
    keys = [t.dedupe_key for t, i in zip(tasks, ids, strict=True) if i not in inserted]
    existing: dict[str, uuid.UUID] = {}
    if keys:
        rows = conn.execute(query("unfinished_tasks_by_dedupe_keys"), {"dedupe_keys": keys})
        existing = dict(rows.fetchall())
    return _resolve_bulk_ids(tasks, ids, inserted, existing)


# -- producer (async) -------------------------------------------------------------


async def ainsert_task(conn: psycopg.AsyncConnection[Any], task: NewTask) -> uuid.UUID:
    """Async ``insert_task``."""
    params = _insert_params(task)
    for _ in range(10):
        with _rejections_as_invalid_task():
            cur = await conn.execute(query("insert_task"), params)
        row = await cur.fetchone()
        if row is not None:
            return row[0]  # type: ignore[no-any-return]
        cur = await conn.execute(query("unfinished_task_by_dedupe_key"), params)
        row = await cur.fetchone()
        if row is not None:
            return row[0]  # type: ignore[no-any-return]
    raise RuntimeError(f"dedupe key {task.dedupe_key!r} kept changing hands; gave up")


async def ainsert_tasks(
    conn: psycopg.AsyncConnection[Any], tasks: Sequence[NewTask]
) -> list[uuid.UUID]:
    """Async ``insert_tasks``."""
    if not tasks:
        return []
    ids, params = _bulk_params(tasks)
    with _rejections_as_invalid_task():
        cur = await conn.execute(query("insert_tasks"), params)
    inserted = {r[0] for r in await cur.fetchall()}
    keys = [t.dedupe_key for t, i in zip(tasks, ids, strict=True) if i not in inserted]
    existing: dict[str, uuid.UUID] = {}
    if keys:
        cur = await conn.execute(query("unfinished_tasks_by_dedupe_keys"), {"dedupe_keys": keys})
        existing = dict(await cur.fetchall())
    return _resolve_bulk_ids(tasks, ids, inserted, existing)
