"""The engine's SQL: claim, acknowledge, extend leases, rescue, worker registry.

Every state change after the claim names the status and owner it expects and
returns the ids it changed: a missing id means someone else got there first.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql

from listener.sqlfiles import query

Conn = AsyncConnection[Any]


async def claim(
    conn: Conn, worker_id: str, limit: int, types: Sequence[str] | None, lease_s: float
) -> list[tuple[Any, ...]]:
    """Claim up to ``limit`` due tasks; rows as in the ``claim_tasks`` query."""
    params = {"worker_id": worker_id, "limit": limit, "types": types, "lease_s": lease_s}
    # Binary rows: cheaper to send for the server (no timestamp formatting) and to read.
    cur = await conn.execute(query("claim_tasks"), params, binary=True)
    return await cur.fetchall()


async def complete(conn: Conn, ids: Sequence[uuid.UUID], worker_id: str) -> set[uuid.UUID]:
    cur = await conn.execute(query("complete_tasks"), {"ids": list(ids), "worker_id": worker_id})
    return {row[0] for row in await cur.fetchall()}


async def retry(
    conn: Conn, task_id: uuid.UUID, worker_id: str, delay_s: float, error: str, counted: bool
) -> datetime | None:
    """Schedule another attempt; the new run_at, or None if the task isn't ours."""
    params = {
        "id": task_id, "worker_id": worker_id, "delay_s": delay_s,
        "error": error, "counted": counted,
    }  # fmt: skip
    cur = await conn.execute(query("retry_task"), params)
    row = await cur.fetchone()
    return row[1] if row else None


async def fail(conn: Conn, task_id: uuid.UUID, worker_id: str, error: str) -> bool:
    params = {"id": task_id, "worker_id": worker_id, "error": error}
    cur = await conn.execute(query("fail_task"), params)
    return await cur.fetchone() is not None


async def release(conn: Conn, ids: Sequence[uuid.UUID], worker_id: str) -> set[uuid.UUID]:
    cur = await conn.execute(query("release_tasks"), {"ids": list(ids), "worker_id": worker_id})
    return {row[0] for row in await cur.fetchall()}


async def extend_leases(
    conn: Conn, ids: Sequence[uuid.UUID], worker_id: str, lease_s: float
) -> set[uuid.UUID]:
    params = {"ids": list(ids), "worker_id": worker_id, "lease_s": lease_s}
    cur = await conn.execute(query("extend_leases"), params)
    return {row[0] for row in await cur.fetchall()}


async def rescue_expired(
    conn: Conn, max_attempts_by_type: dict[str, int], default_max_attempts: int, limit: int
) -> list[tuple[uuid.UUID, str, str, int]]:
    """Return expired tasks to pending (or fail them); rows are (id, type, status, attempts)."""
    params = {
        "types": list(max_attempts_by_type),
        "max_attempts": list(max_attempts_by_type.values()),
        "default_max_attempts": default_max_attempts,
        "limit": limit,
    }
    cur = await conn.execute(query("rescue_expired"), params)
    return [tuple(row) for row in await cur.fetchall()]


async def next_run_at(conn: Conn, types: Sequence[str] | None) -> datetime | None:
    cur = await conn.execute(query("next_run_at"), {"types": types})
    row = await cur.fetchone()
    return row[0] if row else None


async def notify_workers(conn: Conn) -> None:
    await conn.execute(query("notify_workers"))


async def listen(conn: Conn, channel: str) -> None:
    """LISTEN on ``channel`` (an identifier, quoted safely)."""
    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))


async def probe(conn: Conn) -> None:
    await conn.execute(query("probe"))


async def upsert_worker(
    conn: Conn, worker_id: str, hostname: str, pid: int, types: Sequence[str], concurrency: int
) -> None:
    params = {
        "id": worker_id, "hostname": hostname, "pid": pid,
        "types": list(types), "concurrency": concurrency,
    }  # fmt: skip
    await conn.execute(query("upsert_worker"), params)


async def delete_worker(conn: Conn, worker_id: str) -> None:
    await conn.execute(query("delete_worker"), {"id": worker_id})


async def delete_stale_workers(conn: Conn, stale_s: float) -> None:
    await conn.execute(query("delete_stale_workers"), {"stale_s": stale_s})
