"""Enqueue tasks from Python: ``create_task`` (sync), ``create_task_async``, bulk forms.

Plain SQL (``INSERT INTO tasks (type, payload) VALUES (...)``) is just as good a
producer; this module adds validation with clear errors and connection reuse.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from listener import pools
from listener.config import MAX_PAYLOAD_BYTES, MAX_PAYLOAD_DEPTH
from listener.errors import InvalidTaskError
from listener.registry import validate_task_type
from listener.store import enqueue as store

SMALLINT_MIN, SMALLINT_MAX = -32768, 32767


@dataclass(frozen=True, slots=True)
class NewTask:
    """A validated task, ready to insert."""

    type: str
    payload_json: str
    run_at: datetime | None = None
    priority: int = 0
    max_attempts: int | None = None
    dedupe_key: str | None = None


def new_task(
    type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    run_at: datetime | timedelta | None = None,
    priority: int = 0,
    max_attempts: int | None = None,
    dedupe_key: str | None = None,
) -> NewTask:
    """Validate one task's fields; raise InvalidTaskError naming the first problem."""
    try:
        validate_task_type(type)
    except ValueError as exc:
        raise InvalidTaskError(str(exc)) from None
    return NewTask(
        type=type,
        payload_json=_payload_json(payload),
        run_at=_run_at(run_at),
        priority=_bounded_int("priority", priority, SMALLINT_MIN, SMALLINT_MAX),
        max_attempts=None
        if max_attempts is None
        else _bounded_int("max_attempts", max_attempts, 1, 1000),
        dedupe_key=_dedupe_key(dedupe_key),
    )


def create_task(
    type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    conn: psycopg.Connection[Any] | None = None,
    run_at: datetime | timedelta | None = None,
    priority: int = 0,
    max_attempts: int | None = None,
    dedupe_key: str | None = None,
) -> uuid.UUID:
    """Enqueue a task and return its id.

    With ``conn`` the insert joins the caller's transaction; without it a pooled
    connection to ``DATABASE_URL`` commits it at once. A ``dedupe_key`` already
    held by an unfinished task returns that task's id instead of a new one.
    """
    task = new_task(
        type,
        payload,
        run_at=run_at,
        priority=priority,
        max_attempts=max_attempts,
        dedupe_key=dedupe_key,
    )
    if conn is not None:
        return store.insert_task(conn, task)
    with pools.connection() as pooled:
        return store.insert_task(pooled, task)


async def create_task_async(
    type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    conn: psycopg.AsyncConnection[Any] | None = None,
    run_at: datetime | timedelta | None = None,
    priority: int = 0,
    max_attempts: int | None = None,
    dedupe_key: str | None = None,
) -> uuid.UUID:
    """Async ``create_task``: same arguments, an ``AsyncConnection`` for ``conn``."""
    task = new_task(
        type,
        payload,
        run_at=run_at,
        priority=priority,
        max_attempts=max_attempts,
        dedupe_key=dedupe_key,
    )
    if conn is not None:
        return await store.ainsert_task(conn, task)
    async with pools.aconnection() as pooled:
        return await store.ainsert_task(pooled, task)


def create_tasks(
    tasks: Iterable[NewTask], *, conn: psycopg.Connection[Any] | None = None
) -> list[uuid.UUID]:
    """Enqueue many tasks (built with ``new_task``) in one statement; ids in input order."""
    batch = _checked_batch(tasks)
    if conn is not None:
        return store.insert_tasks(conn, batch)
    with pools.connection() as pooled:
        return store.insert_tasks(pooled, batch)


async def create_tasks_async(
    tasks: Iterable[NewTask], *, conn: psycopg.AsyncConnection[Any] | None = None
) -> list[uuid.UUID]:
    """Async ``create_tasks``."""
    batch = _checked_batch(tasks)
    if conn is not None:
        return await store.ainsert_tasks(conn, batch)
    async with pools.aconnection() as pooled:
        return await store.ainsert_tasks(pooled, batch)


# -- validation ---------------------------------------------------------------


def _checked_batch(tasks: Iterable[NewTask]) -> list[NewTask]:
    batch = list(tasks)
    for position, task in enumerate(batch):
        if not isinstance(task, NewTask):
            raise InvalidTaskError(
                f"task {position} is a {type(task).__name__}: build each task with new_task(...)"
            )
    return batch


def _payload_json(payload: Mapping[str, Any] | None) -> str:
    if payload is None:
        return "{}"
    if not isinstance(payload, Mapping):
        raise InvalidTaskError(
            f"payload must be a JSON object (a dict), got {type(payload).__name__}"
        )
    try:
        text = json.dumps(payload, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidTaskError(f"payload is not JSON-serialisable: {exc}") from None
    except RecursionError:
        raise InvalidTaskError(
            f"payload is nested deeper than {MAX_PAYLOAD_DEPTH} levels (or refers to itself)"
        ) from None
    if "\\u0000" in text:
        raise InvalidTaskError("payload contains a NUL character, which PostgreSQL cannot store")
    size = len(text.encode())
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidTaskError(
            f"payload is {size} bytes as JSON, over the {MAX_PAYLOAD_BYTES}-byte limit"
        )
    return text


def _run_at(run_at: datetime | timedelta | None) -> datetime | None:
    if run_at is None:
        return None
    if isinstance(run_at, timedelta):
        return datetime.now().astimezone() + run_at
    if not isinstance(run_at, datetime):
        raise InvalidTaskError(
            f"run_at must be a datetime or timedelta, got {type(run_at).__name__}"
        )
    if run_at.tzinfo is None:
        raise InvalidTaskError("run_at must be timezone-aware (e.g. datetime.now(UTC))")
    return run_at


def _bounded_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTaskError(f"{name} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidTaskError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _dedupe_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= 256:
        raise InvalidTaskError("dedupe_key must be a string of 1 to 256 characters")
    return key


def close_pools() -> None:
    """Close the producer's pooled connections (tests, and apps that fork)."""
    pools.close()


async def aclose_pools() -> None:
    """Close the async producer pools of the running event loop."""
    await pools.aclose()


__all__ = [
    "NewTask",
    "aclose_pools",
    "close_pools",
    "create_task",
    "create_task_async",
    "create_tasks",
    "create_tasks_async",
    "new_task",
]
