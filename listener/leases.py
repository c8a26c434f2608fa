"""Leases: the heartbeat that keeps running tasks ours, and the rescuer of lost ones.

A claimed task carries ``lease_expires_at``; while its handler runs the worker
extends it every ``lease_s / 3``. If a worker dies or freezes, its leases run
out and any worker's rescuer (safe to run concurrently: SKIP LOCKED) puts the
task back to pending — counting the attempt — or fails it when none are left.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import psycopg
from psycopg_pool import AsyncConnectionPool

from listener.logs import get_logger
from listener.metrics import Metrics
from listener.store import engine as store

log = get_logger("listener.leases")


class Heartbeat:
    """Extends the leases of this worker's running tasks; reports the ones it lost."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        worker_id: str,
        lease_s: float,
        running: Callable[[], list[uuid.UUID]],
    ) -> None:
        self.pool = pool
        self.worker_id = worker_id
        self.lease_s = lease_s
        self.running = running
        self.lost: set[uuid.UUID] = set()

    async def run(self) -> None:
        while True:
            await anyio.sleep(self.lease_s / 3)
            await self.beat()

    async def beat(self) -> None:
        ids = [i for i in self.running() if i not in self.lost]
        if not ids:
            return
        try:
            async with self.pool.connection() as conn:
                kept = await store.extend_leases(conn, ids, self.worker_id, self.lease_s)
        except psycopg.OperationalError as exc:
            log.warning("lease.extend_failed", error=str(exc).strip().splitlines()[0])
            return
        for task_id in set(ids) - kept:
            # Finished meanwhile, or rescued/taken by someone else: the final
            # acknowledgement is guarded and will change nothing if it isn't ours.
            if task_id in self.running():
                self.lost.add(task_id)
                log.warning("task.lease_lost", task_id=str(task_id))


class Rescuer:
    """Returns tasks with expired leases to pending (or fails them), periodically."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        metrics: Metrics,
        max_attempts_by_type: dict[str, int],
        default_max_attempts: int,
        interval_s: float,
        on_rescued: Callable[[], None],
        batch: int = 1000,
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.max_attempts_by_type = max_attempts_by_type
        self.default_max_attempts = default_max_attempts
        self.interval_s = interval_s
        self.on_rescued = on_rescued
        self.batch = batch

    async def run(self) -> None:
        while True:
            await anyio.sleep(self.interval_s * random.uniform(0.5, 1.5))
            try:
                await self.rescue_once()
            except psycopg.OperationalError as exc:
                log.warning("rescuer.failed", error=str(exc).strip().splitlines()[0])

    async def rescue_once(self) -> int:
        """One rescue pass; returns how many tasks it moved."""
        async with self.pool.connection() as conn:
            rows = await store.rescue_expired(
                conn, self.max_attempts_by_type, self.default_max_attempts, self.batch
            )
            if any(status == "pending" for _, _, status, _ in rows):
                await store.notify_workers(conn)
        for task_id, task_type, status, attempts in rows:
            self.metrics.finished(task_type, "rescued")
            log.warning(
                "task.rescued", task_id=str(task_id), type=task_type,
                attempt=attempts, now=status,
            )  # fmt: skip
        if rows:
            self.on_rescued()
        return len(rows)
