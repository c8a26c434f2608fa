"""Acknowledgements: complete (batched), retry, fail, release — retried, shielded.

Completions are group-committed: whatever finished while the previous batch was
in flight goes out in the next single UPDATE, so an idle worker acks at once and
a busy one makes one round trip for many tasks. Each ack runs in a shielded
scope with a deadline; connection errors are retried with tenacity; cancellation
is never retried. A task whose ack is lost is rescued after its lease expires.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import anyio
import psycopg
import tenacity
from psycopg_pool import AsyncConnectionPool

from listener.logs import get_logger
from listener.store import engine as store

log = get_logger("listener.acks")
T = TypeVar("T")

Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]


class Acks:
    """Writes task outcomes, guarded by owner, with retries on connection errors."""

    def __init__(self, pool: Pool, worker_id: str, *, deadline_s: float = 30.0) -> None:
        self.pool = pool
        self.worker_id = worker_id
        self.deadline_s = deadline_s
        self._pending: dict[uuid.UUID, anyio.Event] = {}
        self._results: dict[uuid.UUID, bool] = {}
        self._wake = anyio.Event()

    async def run_completer(self) -> None:
        """Flush completions as they come, one statement per batch, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            while self._pending:
                batch = dict(self._pending)
                self._pending.clear()
                done = await self._complete_batch(list(batch))
                for task_id, event in batch.items():
                    self._results[task_id] = done is not None and task_id in done
                    event.set()

    async def _complete_batch(self, ids: list[uuid.UUID]) -> set[uuid.UUID] | None:
        async def call(conn: psycopg.AsyncConnection[Any]) -> set[uuid.UUID]:
            return await store.complete(conn, ids, self.worker_id)

        return await self._with_retry("complete", call)

    async def complete(self, task_id: uuid.UUID) -> bool:
        """Queue a completion and wait for its batch; False if we no longer own the task."""
        event = anyio.Event()
        self._pending[task_id] = event
        self._wake.set()
        with anyio.CancelScope(shield=True):
            await event.wait()
        return self._results.pop(task_id)

    async def retry(
        self, task_id: uuid.UUID, delay_s: float, error: str, *, counted: bool
    ) -> datetime | None:
        """The task's new run_at, or None if it isn't ours (or the ack was lost)."""

        async def call(conn: psycopg.AsyncConnection[Any]) -> datetime | None:
            return await store.retry(conn, task_id, self.worker_id, delay_s, error, counted)

        return await self._with_retry("retry", call)

    async def fail(self, task_id: uuid.UUID, error: str) -> bool:
        result = await self._with_retry(
            "fail", lambda c: store.fail(c, task_id, self.worker_id, error)
        )
        return bool(result)

    async def release(self, ids: list[uuid.UUID]) -> set[uuid.UUID]:
        if not ids:
            return set()
        result = await self._with_retry("release", lambda c: store.release(c, ids, self.worker_id))
        return result or set()

    async def _with_retry(
        self, what: str, call: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]
    ) -> T | None:
        """Run ``call`` on a pooled connection; None if it could not be done in time."""
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(psycopg.OperationalError),
            wait=tenacity.wait_random_exponential(multiplier=0.05, max=2.0),
            reraise=True,
        )
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.deadline_s):
            try:
                async for attempt in retrying:
                    with attempt:
                        async with self.pool.connection() as conn:
                            return await call(conn)
            except psycopg.Error as exc:
                log.error("task.ack_failed", ack=what, error=f"{type(exc).__name__}: {exc}")
                return None
        log.error("task.ack_timed_out", ack=what, deadline_s=self.deadline_s)
        return None
