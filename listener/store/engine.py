"""The engine's SQL: claim, write outcomes, heartbeat, rescue, reconcile, worker registry.

Every write after the claim names the claim it belongs to -- (task id, claim token) --
and reports per task whether it was written, skipped because the row was locked, or
refused because the task is not this claim's any more.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class ClaimSpec:
    """What a worker claims: its types, each with its attempt limit and fleet-wide limits."""

    types: list[str]
    attempt_limits: list[int]
    concurrency: list[int | None]  # at most this many processing, fleet-wide
    rate_counts: list[int | None]  # at most this many starts ...
    rate_windows_s: list[int | None]  # ... in any window of this many seconds

    def params(self) -> dict[str, Any]:
        return {
            "types": self.types, "attempt_limits": self.attempt_limits,
            "concurrency": self.concurrency, "rate_counts": self.rate_counts,
            "rate_windows_s": self.rate_windows_s,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Outlook:
    """What a short claim says about later: when to look again, what limits held back."""

    next_due_in_s: float | None = None  # the next scheduled task, database clock
    throttled: dict[str, dict[str, Any]] = field(default_factory=dict)  # type -> reason, ...


NOTHING_TO_SAY = Outlook()  # short: nothing scheduled, nothing held back


async def claim(
    conn: Conn,
    worker_id: str,
    token: uuid.UUID,
    limit: int,
    spec: ClaimSpec,
    lease_s: float,
) -> tuple[list[tuple[Any, ...]], Outlook | None]:
    """Claim up to ``limit`` due tasks under ``token``: the rows, and the outlook if short."""
    params = {"worker_id": worker_id, "token": token, "limit": limit, "lease_s": lease_s}
    # Binary rows: cheaper to send for the server (no timestamp formatting) and to read.
    cur = await conn.execute(query("claim_batch"), {**params, **spec.params()}, binary=True)
    return _claimed(await cur.fetchall(), limit)


def _claimed(
    rows: list[tuple[Any, ...]], limit: int
) -> tuple[list[tuple[Any, ...]], Outlook | None]:
    """Claimed rows, and the outlook of a short claim (None: it came back full).

    A short claim ends with an outlook row when it has something to say; one that took
    tasks and has nothing to say has none (migration 0013): short by its size alone.
    """
    if rows and rows[-1][0] is None:
        outlook = rows.pop()[-1] or {}
        return rows, Outlook(outlook.get("next_due_in_s"), outlook.get("throttled") or {})
    return rows, (NOTHING_TO_SAY if len(rows) < limit else None)


async def finish_and_claim(
    conn: Conn,
    outcomes: Sequence[Finish],
    worker_id: str,
    token: uuid.UUID,
    limit: int,
    spec: ClaimSpec,
    lease_s: float,
) -> tuple[list[Written], list[tuple[Any, ...]], Outlook | None]:
    """Write outcomes and claim the next tasks in one transaction and one round trip."""
    params = {"worker_id": worker_id, "token": token, "limit": limit, "lease_s": lease_s}
    async with conn.pipeline(), conn.transaction():
        finished = await conn.execute(query("finish_tasks"), _finish_params(outcomes))
        claimed = await conn.execute(query("claim_batch"), {**params, **spec.params()}, binary=True)
    written = _written(await finished.fetchall())
    rows, outlook = _claimed(await claimed.fetchall(), limit)
    return written, rows, outlook


async def finish(conn: Conn, outcomes: Sequence[Finish]) -> list[Written]:
    """Write many outcomes in one statement."""
    cur = await conn.execute(query("finish_tasks"), _finish_params(outcomes))
    return _written(await cur.fetchall())


def _finish_params(outcomes: Sequence[Finish]) -> dict[str, Any]:
    return {
        "ids": [o.key[0] for o in outcomes],
        "tokens": [o.key[1] for o in outcomes],
        "actions": [o.action for o in outcomes],
        "delays_s": [o.delay_s for o in outcomes],
        "errors": [o.error for o in outcomes],
    }


def _written(rows: list[tuple[Any, ...]]) -> list[Written]:
    return [Written((i, t), w, o, d) for i, t, w, d, o in rows]


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
