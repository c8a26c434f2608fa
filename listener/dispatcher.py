"""Claim into free slots whenever woken, and start an executor for each claimed task.

Woken by NOTIFY, by a freed slot (when the last claim filled every slot), by the
timer for the next scheduled run_at, and by a jittered fallback poll. Each wake
claims in batches until the claim comes back short or the slots are full.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime
from typing import Any

import anyio
import psycopg
from anyio.abc import TaskGroup
from psycopg_pool import AsyncConnectionPool

from listener.executor import Executor, task_from_row
from listener.logs import get_logger
from listener.metrics import Metrics
from listener.models import Task
from listener.registry import Registry
from listener.store import engine as store
from listener.wakeup import Wakeup

log = get_logger("listener.dispatcher")


class Dispatcher:
    """Owns the worker's slots and the tasks running in them."""

    def __init__(
        self,
        *,
        pool: AsyncConnectionPool[Any],
        registry: Registry,
        executor: Executor,
        metrics: Metrics,
        worker_id: str,
        types: list[str],
        concurrency: int,
        claim_batch: int,
        lease_s: float,
        poll_interval_s: float,
        default_max_attempts: int,
    ) -> None:
        self.pool = pool
        self.registry = registry
        self.executor = executor
        self.metrics = metrics
        self.worker_id = worker_id
        self.types = types
        self.concurrency = concurrency
        self.claim_batch = claim_batch
        self.lease_s = lease_s
        self.poll_interval_s = poll_interval_s
        self.default_max_attempts = default_max_attempts
        self.wakeup = Wakeup()
        self.running: dict[uuid.UUID, anyio.CancelScope] = {}
        self.running_types: dict[uuid.UUID, str] = {}
        self.stopping = False
        self._idle = anyio.Event()
        self._more_waiting = False
        # With a backlog, refill slots in batches, not one claim per finished task.
        self._refill_at = max(1, min(claim_batch, concurrency) // 2)
        self._next_run_at: datetime | None = None
        executor.on_scheduled = self.schedule_wakeup

    @property
    def free_slots(self) -> int:
        return self.concurrency - len(self.running)

    async def run(self, tasks: TaskGroup) -> None:
        """Claim and start tasks until ``stopping`` is set."""
        while not self.stopping:
            await self.wakeup.wait(await self._sleep_s())
            if self.stopping:
                return
            try:
                await self._claim_until_empty(tasks)
            except psycopg.OperationalError as exc:
                log.warning("dispatcher.claim_failed", error=str(exc).strip().splitlines()[0])
                await anyio.sleep(random.uniform(0.1, 0.5))
                self.wakeup.kick()  # try again soon: the notifier may not have noticed

    def schedule_wakeup(self, run_at: datetime) -> None:
        """Make sure the dispatcher is awake when ``run_at`` comes."""
        if self._next_run_at is None or run_at < self._next_run_at:
            self._next_run_at = run_at
            self.wakeup.kick()  # re-arm the timer with the earlier time

    async def _sleep_s(self) -> float:
        """The fallback poll (jittered), or sooner when a scheduled task falls due."""
        sleep_s = self.poll_interval_s * random.uniform(0.8, 1.2)
        if self._next_run_at is not None:
            until_due = (self._next_run_at - datetime.now(self._next_run_at.tzinfo)).total_seconds()
            sleep_s = min(sleep_s, max(until_due, 0.0) + 0.005)
        return sleep_s

    async def _claim_until_empty(self, tasks: TaskGroup) -> None:
        while not self.stopping and self.free_slots > 0:
            want = min(self.free_slots, self.claim_batch)
            async with self.pool.connection() as conn:
                rows = await store.claim(conn, self.worker_id, want, self.types, self.lease_s)
                if len(rows) < want:
                    self._next_run_at = await store.next_run_at(conn, self.types)
            for row in rows:
                self._start(tasks, row)
            self._more_waiting = len(rows) == want
            if len(rows) < want:
                return

    def _start(self, tasks: TaskGroup, row: tuple[Any, ...]) -> None:
        spec = self.registry.get(row[1])
        default_max = (spec.options.max_attempts if spec else None) or self.default_max_attempts
        task, pickup_delay_s = task_from_row(row, default_max)
        self.metrics.claimed(task.type, pickup_delay_s)
        scope = anyio.CancelScope()
        if not self.running:
            self._idle = anyio.Event()
        self.running[task.id] = scope
        self.running_types[task.id] = task.type
        self.metrics.in_flight.inc()
        tasks.start_soon(self._run_one, task, scope, name=f"task {task.id}")

    async def _run_one(self, task: Task, scope: anyio.CancelScope) -> None:
        try:
            with scope:
                spec = self.registry.get(task.type)
                if spec is None:  # only if the registry changed under us
                    await self.executor.acks.release([task.id])
                    return
                await self.executor.execute(spec, task)
        finally:
            del self.running[task.id]
            del self.running_types[task.id]
            if not self.running:
                self._idle.set()
            self.metrics.in_flight.dec()
            if self._more_waiting and self.free_slots >= self._refill_at and not self.stopping:
                self.wakeup.kick()

    async def wait_until_idle(self, timeout_s: float | None = None) -> bool:
        """Wait until no task runs (True), or the timeout passes (False)."""
        if not self.running:
            return True
        with anyio.move_on_after(timeout_s):
            await self._idle.wait()
        return not self.running

    def in_flight(self) -> list[uuid.UUID]:
        return list(self.running)
