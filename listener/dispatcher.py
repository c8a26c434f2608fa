"""Claim into free slots whenever woken, and feed claimed tasks to long-lived slots.

Woken by NOTIFY, by freed slots (when the last claim filled every slot), by the
timer for the next scheduled run_at, and by a jittered fallback poll. Each wake
claims in batches until a claim comes back short or the slots are full.
"""

from __future__ import annotations

import math
import random
import uuid
from datetime import datetime
from typing import Any

import anyio
import psycopg
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
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
    """Owns the worker's slots and the tasks claimed into them."""

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
        # Claimed and not yet finished (id -> type); what shutdown releases.
        self.running: dict[uuid.UUID, str] = {}
        self.stopping = False
        self._idle = anyio.Event()
        self._idle.set()
        self._slots_scope: anyio.CancelScope | None = None
        self._more_waiting = False
        # With a backlog, refill slots in batches, not one claim per finished task.
        self._refill_at = max(1, min(claim_batch, concurrency) // 2)
        self._next_run_at: datetime | None = None
        executor.on_scheduled = self.schedule_wakeup

    @property
    def free_slots(self) -> int:
        return self.concurrency - len(self.running)

    async def run(self) -> None:
        """Claim and run tasks until ``stopping``; returns when every slot has exited."""
        send: MemoryObjectSendStream[Task]
        receive: MemoryObjectReceiveStream[Task]
        send, receive = anyio.create_memory_object_stream[Task](math.inf)
        async with anyio.create_task_group() as slots:
            self._slots_scope = slots.cancel_scope
            with receive:
                for _ in range(self.concurrency):
                    slots.start_soon(self._slot, receive.clone())
            with send:
                await self._claim_loop(send)
            # The stream is closed: each slot exits after the task it is running.

    def cancel_running(self) -> None:
        """Interrupt every running handler (the grace period is over)."""
        if self._slots_scope is not None:
            self._slots_scope.cancel()

    async def wait_until_idle(self, timeout_s: float | None = None) -> bool:
        """Wait until no claimed task is unfinished (True), or the timeout passes."""
        with anyio.move_on_after(timeout_s):
            await self._idle.wait()
        return not self.running

    def schedule_wakeup(self, run_at: datetime) -> None:
        """Make sure the dispatcher is awake when ``run_at`` comes."""
        if self._next_run_at is None or run_at < self._next_run_at:
            self._next_run_at = run_at
            self.wakeup.kick()  # re-arm the timer with the earlier time

    async def _claim_loop(self, send: MemoryObjectSendStream[Task]) -> None:
        while not self.stopping:
            await self.wakeup.wait(self._sleep_s())
            if self.stopping:
                return
            try:
                await self._claim_until_empty(send)
            except psycopg.OperationalError as exc:
                log.warning("dispatcher.claim_failed", error=str(exc).strip().splitlines()[0])
                await anyio.sleep(random.uniform(0.1, 0.5))
                self.wakeup.kick()  # try again soon: the notifier may not have noticed

    def _sleep_s(self) -> float:
        """The fallback poll (jittered), or sooner when a scheduled task falls due."""
        sleep_s = self.poll_interval_s * random.uniform(0.8, 1.2)
        if self._next_run_at is not None:
            until_due = (self._next_run_at - datetime.now(self._next_run_at.tzinfo)).total_seconds()
            sleep_s = min(sleep_s, max(until_due, 0.0) + 0.005)
        return sleep_s

    async def _claim_until_empty(self, send: MemoryObjectSendStream[Task]) -> None:
        while not self.stopping and self.free_slots > 0:
            want = min(self.free_slots, self.claim_batch)
            async with self.pool.connection() as conn:
                rows = await store.claim(conn, self.worker_id, want, self.types, self.lease_s)
                for row in rows:  # slots start on these at our next await
                    send.send_nowait(self._claimed(row))
                self._more_waiting = len(rows) == want
                if len(rows) < want:
                    # The queue is drained: arm the timer for the next scheduled task.
                    self._next_run_at = await store.next_run_at(conn, self.types)
                    return

    def _claimed(self, row: tuple[Any, ...]) -> Task:
        spec = self.registry.get(row[1])
        default_max = (spec.options.max_attempts if spec else None) or self.default_max_attempts
        task, pickup_delay_s = task_from_row(row, default_max)
        self.metrics.claimed(task.type, pickup_delay_s)
        if not self.running:
            self._idle = anyio.Event()
        self.running[task.id] = task.type
        self.metrics.in_flight.inc()
        return task

    async def _slot(self, receive: MemoryObjectReceiveStream[Task]) -> None:
        with receive:
            while True:
                try:
                    # Take what is buffered without a checkpoint per task; await
                    # (and so yield to the loop) only when the buffer is empty.
                    task = receive.receive_nowait()
                except anyio.WouldBlock:
                    try:
                        task = await receive.receive()
                    except anyio.EndOfStream:
                        return
                except anyio.EndOfStream:
                    return
                if self.stopping:
                    continue  # not started: shutdown releases it
                spec = self.registry.get(task.type)
                try:
                    if spec is not None:
                        await self.executor.execute(spec, task)
                except Exception:
                    # An engine bug, not a handler error: the lease expires and the
                    # task is rescued; this slot keeps serving.
                    log.exception("task.engine_error", task_id=str(task.id))
                self._finished(task.id)

    def _finished(self, task_id: uuid.UUID) -> None:
        """The handler is done (its outcome written or queued); free the slot."""
        del self.running[task_id]
        self.metrics.in_flight.dec()
        if not self.running:
            self._idle.set()
        if self._more_waiting and self.free_slots >= self._refill_at and not self.stopping:
            self.wakeup.kick()
