"""Acknowledgements: complete (group-committed), retry, fail, release.

Completions don't hold a slot: a finished task's id is queued and the completer
writes whatever is queued in one UPDATE, then the next batch — an idle worker
acks at once, a busy one makes one round trip for many tasks. Until its batch
commits the task stays ``processing`` under a lease the heartbeat keeps renewing,
so a crash in between means the task is rescued and run again (at-least-once).

Every ack runs in a shielded scope with a deadline; connection errors are
retried with tenacity; cancellation is never retried.
"""

from __future__ import annotations

import collections
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import anyio
import psycopg
import tenacity
from psycopg_pool import AsyncConnectionPool

from listener.logs import get_logger
from listener.metrics import Metrics
from listener.store import engine as store

log = get_logger("listener.acks")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Finished:
    """A task whose handler returned, waiting for its completion to commit."""

    task_id: uuid.UUID
    type: str
    attempt: int
    duration_s: float


def _fields(item: Finished) -> dict[str, Any]:
    return {
        "task_id": str(item.task_id), "type": item.type, "attempt": item.attempt,
        "duration_s": round(item.duration_s, 6),
    }  # fmt: skip


class Acks:
    """Writes task outcomes, guarded by owner, with retries on connection errors."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        worker_id: str,
        metrics: Metrics,
        *,
        deadline_s: float = 30.0,
    ) -> None:
        self.pool = pool
        self.worker_id = worker_id
        self.metrics = metrics
        self.deadline_s = deadline_s
        self._queued: dict[uuid.UUID, Finished] = {}
        self._flushing: dict[uuid.UUID, Finished] = {}
        self._wake = anyio.Event()
        self._drained = anyio.Event()
        self._drained.set()

    def complete_later(self, finished: Finished) -> None:
        """Queue a completion; the completer commits it with the next batch."""
        self._queued[finished.task_id] = finished
        self._drained = anyio.Event() if self._drained.is_set() else self._drained
        self._wake.set()

    def unflushed(self) -> list[uuid.UUID]:
        """Ids whose completion has not committed yet (their leases must be kept)."""
        return [*self._queued, *self._flushing]

    async def flush(self) -> None:
        """Wait until every queued completion has been written (or given up)."""
        await self._drained.wait()

    async def run_completer(self) -> None:
        """Write queued completions, one statement per batch, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            while self._queued:
                self._flushing, self._queued = self._queued, {}
                done = await self._complete_batch(list(self._flushing))
                self._report(self._flushing, done)
                self._flushing = {}
            self._drained.set()

    def _report(self, batch: dict[uuid.UUID, Finished], done: set[uuid.UUID] | None) -> None:
        log_completions = log.is_enabled_for(logging.INFO)
        completed: collections.Counter[str] = collections.Counter()
        for task_id, item in batch.items():
            if done is not None and task_id in done:
                completed[item.type] += 1
                self.metrics.task_duration.observe(item.type, item.duration_s)
                if log_completions:
                    log.info("task.completed", **_fields(item))
            else:
                log.warning("task.ack_ignored", outcome="completed", **_fields(item))
        for task_type, count in completed.items():
            self.metrics.finished_batch(task_type, "completed", count)

    async def _complete_batch(self, ids: list[uuid.UUID]) -> set[uuid.UUID] | None:
        async def call(conn: psycopg.AsyncConnection[Any]) -> set[uuid.UUID]:
            return await store.complete(conn, ids, self.worker_id)

        return await self._with_retry("complete", call)

    async def retry(
        self, task_id: uuid.UUID, delay_s: float, error: str, *, counted: bool
    ) -> datetime | None:
        """The task's new run_at, or None if it isn't ours (or the ack was lost)."""

        async def call(conn: psycopg.AsyncConnection[Any]) -> datetime | None:
            return await store.retry(conn, task_id, self.worker_id, delay_s, error, counted)

        return await self._with_retry("retry", call)

    async def fail(self, task_id: uuid.UUID, error: str) -> bool:
        async def call(conn: psycopg.AsyncConnection[Any]) -> bool:
            return await store.fail(conn, task_id, self.worker_id, error)

        return bool(await self._with_retry("fail", call))

    async def release(self, ids: list[uuid.UUID]) -> set[uuid.UUID]:
        if not ids:
            return set()

        async def call(conn: psycopg.AsyncConnection[Any]) -> set[uuid.UUID]:
            return await store.release(conn, ids, self.worker_id)

        return await self._with_retry("release", call) or set()

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
