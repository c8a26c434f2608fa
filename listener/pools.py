"""Connection pools for producers that pass no connection of their own.

One pool per DSN (and per event loop, for async pools), opened on first use.
A pool is only created after one direct connection succeeded, so a wrong or
unreachable ``DATABASE_URL`` fails at once with libpq's reason instead of a
pool timeout thirty seconds later.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from listener import config, db
from listener.errors import DatabaseUnavailableError

POOL_MAX_SIZE = 4
POOL_TIMEOUT_S = 10.0

_lock = threading.Lock()
_sync_pools: dict[str, ConnectionPool[Any]] = {}
_async_pools: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, AsyncConnectionPool[Any]]
] = weakref.WeakKeyDictionary()
_embedded_dsn: dict[str, str] = {}


def default_dsn() -> str:
    """``DATABASE_URL``, else the embedded server (started and announced once)."""
    target = config.explicit_dsn()
    if target is not None:
        return target.dsn
    with _lock:
        if "embedded" not in _embedded_dsn:
            _embedded_dsn["embedded"] = db.resolve_dsn().dsn
        return _embedded_dsn["embedded"]


def _pool_kwargs(name: str) -> dict[str, Any]:
    # Opened waiting for the first connection: a first caller that found none ready
    # made the pool open a second one for it.
    return {
        "min_size": 1,
        "max_size": POOL_MAX_SIZE,
        "timeout": POOL_TIMEOUT_S,
        "kwargs": db.connect_kwargs(),
        "open": False,
        "name": name,
    }


def _exhausted(dsn: str) -> DatabaseUnavailableError:
    return DatabaseUnavailableError(
        f"cannot connect to postgres at {db.describe_target(dsn)}: "
        f"no pooled connection within {POOL_TIMEOUT_S:g}s"
    )


@contextlib.contextmanager
def connection() -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection to the default DSN; commits on success, rolls back on error."""
    dsn = default_dsn()
    with _lock:
        pool = _sync_pools.get(dsn)
        if pool is None:
            db.connect(dsn).close()  # fail fast, with libpq's reason
            pool = ConnectionPool(dsn, **_pool_kwargs("listener-producer"))
            try:
                pool.open(wait=True, timeout=POOL_TIMEOUT_S)  # see _pool_kwargs
            except PoolTimeout:
                pool.close()
                raise _exhausted(dsn) from None
            _sync_pools[dsn] = pool
    try:
        with pool.connection() as conn:
            yield conn
    except PoolTimeout:
        raise _exhausted(dsn) from None


@contextlib.asynccontextmanager
async def aconnection() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """Async ``connection``; an async pool belongs to the event loop that opened it."""
    dsn = await anyio.to_thread.run_sync(default_dsn)
    loop_pools = _async_pools.setdefault(asyncio.get_running_loop(), {})
    pool = loop_pools.get(dsn)
    if pool is None:
        await (await db.aconnect(dsn)).close()  # fail fast, with libpq's reason
        created = AsyncConnectionPool(dsn, **_pool_kwargs("listener-producer-async"))
        try:
            await created.open(wait=True, timeout=POOL_TIMEOUT_S)  # see _pool_kwargs
        except PoolTimeout:
            await created.close()
            raise _exhausted(dsn) from None
        # Another task of this loop may have made one meanwhile: keep the first.
        pool = loop_pools.setdefault(dsn, created)
        if pool is not created:
            await created.close()
    try:
        async with pool.connection() as conn:
            yield conn
    except PoolTimeout:
        raise _exhausted(dsn) from None


def close() -> None:
    """Close the sync pools (tests, and apps that fork)."""
    with _lock:
        pools = list(_sync_pools.values())
        _sync_pools.clear()
        _embedded_dsn.clear()
    for pool in pools:
        pool.close()


async def aclose() -> None:
    """Close the async pools of the running event loop."""
    loop_pools = _async_pools.pop(asyncio.get_running_loop(), {})
    for pool in loop_pools.values():
        await pool.close()
