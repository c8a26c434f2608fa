"""The wake-up protocol's SQL (docs/notify.md): watch locks and the gate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from listener.sqlfiles import query

Conn = AsyncConnection[Any]


async def setup_listen_session(conn: Conn) -> int:
    """Server-side keepalives for the LISTEN session; returns its backend pid."""
    cur = await conn.execute(query("listen_session_setup"))
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def acquire_watch(conn: Conn, pid: int, types: Sequence[str]) -> set[str]:
    """Try to watch ``types`` on the session of backend ``pid``; the types granted."""
    cur = await conn.execute(query("watch_acquire"), {"types": list(types), "pid": pid})
    return {row[0] for row in await cur.fetchall()}


async def release_watch(conn: Conn, pid: int, types: Sequence[str]) -> set[str]:
    """Stop watching ``types``; the types this session really held."""
    cur = await conn.execute(query("watch_release"), {"types": list(types), "pid": pid})
    return {row[0] for row in await cur.fetchall()}


async def pass_gate(conn: Conn, types: Sequence[str], *, notify: bool) -> None:
    """Wait until every producer of ``types`` that may have skipped NOTIFY has ended."""
    await conn.execute(query("wake_gate_pass"), {"types": list(types), "notify": notify})


async def hand_off(conn: Conn) -> None:
    """NOTIFY every listening worker (a watcher whose slots stay full)."""
    await conn.execute(query("wake_hand_off"))
