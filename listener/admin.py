"""Operator actions on tasks: retry failed ones, cancel pending ones, prune, list.

Each action says exactly what it changed (counts per type), supports a dry run,
and refuses an ambiguous selection instead of guessing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from listener.sqlfiles import query

DEFAULT_PRUNE_BATCH = 1000


class SelectionError(ValueError):
    """The operator's choice of tasks is missing or ambiguous; nothing was changed."""


@dataclass(frozen=True, slots=True)
class Selection:
    """Which tasks an action applies to: named ids, whole types, or all of them."""

    ids: tuple[uuid.UUID, ...] = ()
    types: tuple[str, ...] = ()
    all: bool = False

    def __post_init__(self) -> None:
        given = [name for name, on in (("--id", self.ids), ("--type", self.types)) if on]
        if self.all and given:
            raise SelectionError(f"--all cannot be combined with {' or '.join(given)}")
        if len(given) > 1:
            raise SelectionError("choose tasks by --id or by --type, not both")
        if not self.all and not given:
            raise SelectionError("say which tasks: --id ID (repeatable), --type TYPE, or --all")

    def params(self) -> dict[str, Any]:
        return {"all": self.all, "ids": list(self.ids), "types": list(self.types)}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an action changed (or, in a dry run, would change)."""

    by_type: dict[str, int]
    dry_run: bool
    blocked: int = 0  # failed tasks left alone: their dedupe key is taken again
    skipped: list[tuple[uuid.UUID, str]] = field(default_factory=list)  # named ids left alone

    @property
    def total(self) -> int:
        return sum(self.by_type.values())


@dataclass(frozen=True, slots=True)
class PruneOutcome:
    by_status: dict[str, int]
    cutoff: datetime
    batches: int
    dry_run: bool

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


def retry(conn: psycopg.Connection[Any], selection: Selection, *, dry_run: bool = False) -> Outcome:
    """Move failed tasks back to pending with fresh attempts, and wake the workers."""
    params = selection.params()
    with conn.transaction():
        preview = conn.execute(query("admin_retry_preview"), params).fetchall()
        blocked = sum(int(row[3]) for row in preview)
        rows = [row[:3] for row in preview] if dry_run else _run(conn, "admin_retry_apply", params)
        by_type, named = _tally(rows)
        if by_type and not dry_run:
            conn.execute(query("notify_workers"))  # delivered at commit
        skipped = _skipped(conn, selection, named, "failed")
    return Outcome(by_type, dry_run, blocked, skipped)


def cancel(
    conn: psycopg.Connection[Any], selection: Selection, *, dry_run: bool = False
) -> Outcome:
    """Mark pending tasks cancelled so no worker runs them."""
    name = "admin_cancel_preview" if dry_run else "admin_cancel_apply"
    with conn.transaction():
        by_type, named = _tally(_run(conn, name, selection.params()))
        skipped = _skipped(conn, selection, named, "pending")
    return Outcome(by_type, dry_run, 0, skipped)


def prune_once(
    conn: psycopg.Connection[Any],
    older_than: timedelta,
    batch_size: int = DEFAULT_PRUNE_BATCH,
) -> PruneOutcome:
    """Delete finished tasks older than ``older_than``, one short transaction per batch.

    Pass a connection with no transaction open (autocommit is best), so each
    batch commits and releases its locks before the next one starts.
    """
    _check_batch_size(batch_size)
    cutoff = _cutoff(conn, older_than)
    by_status: dict[str, int] = {}
    batches = 0
    while True:
        with conn.transaction():
            deleted = _counts(conn, "admin_prune_batch", _prune_params(cutoff, batch_size))
        batches += 1
        for status, n in deleted.items():
            by_status[status] = by_status.get(status, 0) + n
        if sum(deleted.values()) < batch_size:
            return PruneOutcome(by_status, cutoff, batches, dry_run=False)


def prune_preview(conn: psycopg.Connection[Any], older_than: timedelta) -> PruneOutcome:
    """What ``prune_once`` would delete now, without deleting anything."""
    cutoff = _cutoff(conn, older_than)
    by_status = _counts(conn, "admin_prune_preview", {"cutoff": cutoff})
    return PruneOutcome(by_status, cutoff, 0, dry_run=True)


async def aprune_once(
    conn: psycopg.AsyncConnection[Any],
    older_than: timedelta,
    batch_size: int = DEFAULT_PRUNE_BATCH,
) -> int:
    """Async ``prune_once`` for the worker's periodic retention; returns rows deleted."""
    _check_batch_size(batch_size)
    _check_older_than(older_than)
    cur = await conn.execute(query("admin_cutoff"), {"older_than": older_than})
    row = await cur.fetchone()
    assert row is not None
    params = _prune_params(row[0], batch_size)
    total = 0
    while True:
        async with conn.transaction():
            cur = await conn.execute(query("admin_prune_batch"), params)
            deleted = sum(int(n) for _, n in await cur.fetchall())
        total += deleted
        if deleted < batch_size:
            return total


@dataclass(frozen=True, slots=True)
class TaskFilter:
    statuses: Sequence[str] | None = None
    types: Sequence[str] | None = None
    older_than: timedelta | None = None
    newer_than: timedelta | None = None
    limit: int = 50
    with_payload: bool = False

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise SelectionError(f"--limit must be at least 1, got {self.limit}")
        older, newer = self.older_than, self.newer_than
        if older is not None and newer is not None and newer <= older:
            raise SelectionError(
                "--newer-than must be longer than --older-than, or no task can match"
            )


def list_tasks(conn: psycopg.Connection[Any], task_filter: TaskFilter) -> list[dict[str, Any]]:
    """Tasks matching the filter, newest first; payloads only when asked for."""
    f = task_filter
    params = {
        "statuses": list(f.statuses) if f.statuses else None,
        "types": list(f.types) if f.types else None,
        "older_than": f.older_than,
        "newer_than": f.newer_than,
        "limit": f.limit,
        "with_payload": f.with_payload,
    }
    cur = conn.execute(query("admin_list_tasks"), params)
    names = [d.name for d in cur.description or ()]
    rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    if not f.with_payload:
        for row in rows:
            del row["payload"]
    return rows


def _counts(conn: psycopg.Connection[Any], name: str, params: dict[str, Any]) -> dict[str, int]:
    return {str(k): int(n) for k, n in conn.execute(query(name), params).fetchall()}


def _run(conn: psycopg.Connection[Any], name: str, params: dict[str, Any]) -> list[Any]:
    return conn.execute(query(name), params).fetchall()


def _tally(rows: list[Any]) -> tuple[dict[str, int], set[uuid.UUID]]:
    """(type, count, named ids) rows -> counts per type, and the named ids among them."""
    by_type = {str(t): int(n) for t, n, _ in rows if n}
    return by_type, {i for _, _, ids in rows for i in ids}


def _skipped(
    conn: psycopg.Connection[Any],
    selection: Selection,
    changed: set[uuid.UUID],
    wanted: str,
) -> list[tuple[uuid.UUID, str]]:
    """Named ids the action did not touch, each with the reason, in the order given."""
    left = [i for i in dict.fromkeys(selection.ids) if i not in changed]
    if not left:
        return []
    found: dict[uuid.UUID, str] = dict(_run(conn, "admin_task_statuses", {"ids": left}))
    skipped = []
    for task_id in left:
        status = found.get(task_id)
        if status is None:
            skipped.append((task_id, "no such task"))
        elif status != wanted:
            skipped.append((task_id, f"is {status}, not {wanted}"))
        elif wanted == "failed":
            skipped.append((task_id, "stays failed: another unfinished task holds its dedupe key"))
        else:
            skipped.append((task_id, f"was not {wanted} when we tried; run the command again"))
    return skipped


def _check_older_than(older_than: timedelta) -> None:
    if older_than < timedelta(0):
        raise SelectionError("--older-than must not be negative")


def _cutoff(conn: psycopg.Connection[Any], older_than: timedelta) -> datetime:
    _check_older_than(older_than)
    row = conn.execute(query("admin_cutoff"), {"older_than": older_than}).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def _prune_params(cutoff: datetime, batch_size: int) -> dict[str, Any]:
    return {"cutoff": cutoff, "batch_size": batch_size}


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise SelectionError(f"--batch-size must be at least 1, got {batch_size}")
