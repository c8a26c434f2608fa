"""The engine's SQL: claim, write outcomes, heartbeat, rescue, reconcile, worker registry.

Every write after the claim names the claim it belongs to -- (task id, claim token) --
and reports per task whether it was written, skipped because the row was locked, or
refused because the task is not this claim's any more.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, sql

from listener.sqlfiles import query

Conn = AsyncConnection[Any]
Key = tuple[uuid.UUID, uuid.UUID]  # (task id, claim token)


@dataclass(frozen=True, slots=True)
class Written:
    """What became of one write: done, to retry (row locked), or refused (not ours)."""

    key: Key
    written: bool
    ours: bool
    due_in_s: float | None = None  # for a retry: seconds until it is due again


@dataclass(frozen=True, slots=True)
class Finish:
    """One outcome to write, as the finish statement takes it."""

    key: Key
    action: str  # complete, fail, retry, retry_uncounted, release
    delay_s: float = 0.0
    error: str | None = None


async def claim(
    conn: Conn,
    worker_id: str,
    token: uuid.UUID,
    limit: int,
    attempt_limits: dict[str, int],
    lease_s: float,
) -> list[tuple[Any, ...]]:
    """Claim up to ``limit`` due tasks of these types under ``token``; claim_batch rows."""
    params = {
        "worker_id": worker_id, "token": token, "limit": limit,
        "types": list(attempt_limits), "attempt_limits": list(attempt_limits.values()),
        "lease_s": lease_s,
    }  # fmt: skip
    # Binary rows: cheaper to send for the server (no timestamp formatting) and to read.
    cur = await conn.execute(query("claim_batch"), params, binary=True)
    return await cur.fetchall()


async def finish(conn: Conn, outcomes: Sequence[Finish]) -> list[Written]:
    """Write many outcomes in one statement."""
    params = {
        "ids": [o.key[0] for o in outcomes],
        "tokens": [o.key[1] for o in outcomes],
        "actions": [o.action for o in outcomes],
        "delays_s": [o.delay_s for o in outcomes],
        "errors": [o.error for o in outcomes],
    }
    cur = await conn.execute(query("finish_tasks"), params)
    return [Written((i, t), w, o, d) for i, t, w, d, o in await cur.fetchall()]


async def complete_claim(conn: Conn, key: Key) -> bool:
    """Complete one claim inside the caller's transaction; False if it isn't ours."""
    cur = await conn.execute(query("complete_claim"), {"id": key[0], "token": key[1]})
    return await cur.fetchone() is not None


async def heartbeat(
    conn: Conn,
    presence: dict[str, Any],
    keys: Sequence[Key],
    lease_s: float,
) -> list[Written]:
    """Refresh this worker's row and renew the leases of ``keys``."""
    params = {
        **presence,
        "ids": [k[0] for k in keys],
        "tokens": [k[1] for k in keys],
        "lease_s": lease_s,
    }
    cur = await conn.execute(query("heartbeat"), params)
    return [Written((i, t), renewed, ours) for i, t, renewed, ours in await cur.fetchall()]


async def reconcile(conn: Conn, worker_id: str, held: Sequence[Key]) -> list[tuple[Any, ...]]:
    """Put back rows claimed under ``worker_id`` that it does not hold; (id, type) rows."""
    params = {
        "worker_id": worker_id,
        "ids": [k[0] for k in held],
        "tokens": [k[1] for k in held],
    }
    cur = await conn.execute(query("reconcile_claims"), params)
    return list(await cur.fetchall())


async def rescue_expired(
    conn: Conn,
    max_attempts_by_type: dict[str, int],
    default_max_attempts: int,
    limit: int,
    margin_s: float,
) -> list[tuple[uuid.UUID, str, str, int]]:
    """Return expired tasks to pending (or fail them); rows are (id, type, status, attempts)."""
    params = {
        "types": list(max_attempts_by_type),
        "max_attempts": list(max_attempts_by_type.values()),
        "default_max_attempts": default_max_attempts,
        "limit": limit,
        "margin_s": margin_s,
    }
    cur = await conn.execute(query("rescue_expired"), params)
    return [tuple(row) for row in await cur.fetchall()]


async def next_due_in(conn: Conn, types: Sequence[str]) -> float | None:
    """Seconds (database clock) until the next scheduled task of ``types`` is due."""
    cur = await conn.execute(query("next_due_in"), {"types": list(types)})
    row = await cur.fetchone()
    return row[0] if row else None


async def notify_workers(conn: Conn) -> None:
    await conn.execute(query("notify_workers"))


async def listen(conn: Conn, channel: str) -> None:
    """LISTEN on ``channel`` (an identifier, quoted safely)."""
    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))


async def probe(conn: Conn) -> None:
    await conn.execute(query("probe"))


async def delete_worker(conn: Conn, worker_id: str) -> None:
    await conn.execute(query("delete_worker"), {"id": worker_id})


async def delete_stale_workers(conn: Conn, stale_s: float) -> None:
    await conn.execute(query("delete_stale_workers"), {"stale_s": stale_s})
