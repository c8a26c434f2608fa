"""The dashboard's connection pool: a few autocommit sessions with short timeouts.

Store functions are synchronous (``listener.admin`` is); they run in worker
threads so the event loop keeps serving while a query waits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from listener import db
from listener.store import ui as store

T = TypeVar("T")
APPLICATION_NAME = "listener:ui"


class DatabaseProblem(Exception):
    """The database cannot answer now: one line saying why (a 503 for the browser)."""


class Database:
    """Runs store functions on pooled connections, in threads."""

    def __init__(
        self,
        dsn: str,
        limits: store.SessionLimits,
        *,
        max_size: int = 4,
        pool_timeout_s: float = 5.0,
        connect_kwargs: dict[str, Any] | None = None,
    ) -> None:
        kwargs = db.connect_kwargs(
            application_name=APPLICATION_NAME,
            autocommit=True,
            # Planned with the real values every time: a generic plan for a
            # listing cannot know its LIMIT or which status it reads.
            prepare_threshold=None,
            connect_timeout=max(1, round(pool_timeout_s)),
            **(connect_kwargs or {}),
        )
        self.dsn = dsn
        self.pool: ConnectionPool[Any] = ConnectionPool(
            dsn,
            min_size=1,
            max_size=max_size,
            timeout=pool_timeout_s,
            kwargs=kwargs,
            configure=lambda conn: store.configure_session(conn, limits),
            check=ConnectionPool.check_connection,
            open=False,
            name="listener-ui",
        )

    def open(self) -> None:
        self.pool.open(wait=False)

    def close(self) -> None:
        self.pool.close()

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(conn, *args, **kwargs)`` on a pooled connection, in a thread."""
        return await anyio.to_thread.run_sync(lambda: self._call(fn, args, kwargs))

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        try:
            with self.pool.connection() as conn:
                return fn(conn, *args, **kwargs)
        except PoolTimeout:
            where = db.describe_target(self.dsn)
            raise DatabaseProblem(
                f"no connection to postgres at {where} within the timeout"
            ) from None
        except psycopg.errors.QueryCanceled:
            raise DatabaseProblem(
                "the database did not answer within the statement timeout"
            ) from None
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            raise DatabaseProblem("the database is not migrated: run `listener migrate`") from None
        except psycopg.OperationalError as exc:
            raise DatabaseProblem(
                f"database error: {db.connection_failure_reason(str(exc))}"
            ) from None
