"""Claim into free slots whenever woken, and feed claimed tasks to long-lived slots.

Woken by NOTIFY, by freed slots (when the last claim filled every slot), by the
timer for the next scheduled run_at, and by a jittered fallback poll. Each wake
claims in batches until a claim comes back short or the slots are full.

Claimed tasks wait in a queue. Idle slots are woken one at a time: a slot that
takes a task wakes the next idle slot only if more tasks are queued, so handlers
that finish without waiting run back to back in one slot (two wake-ups per batch,
not one per task), while handlers that wait fan out over as many slots as needed.
"""

from __future__ import annotations

import collections
import random
import uuid
from datetime import datetime
from typing import Any

import anyio
import anyio.lowlevel
import psycopg
from psycopg_pool import AsyncConnectionPool

from listener.executor import Executor, task_from_row
from listener.logs import get_logger
from listener.metrics import Metrics
from listener.models import Task
from listener.registry import Registry
from listener.store import engine as store
from listener.wakeup import Wakeup
from listener.watcher import NO_WATCH, ClaimObserver

log = get_logger("listener.dispatcher")

# A slot running handlers that never wait yields to the event loop this often,
# so the claim loop, the completer and the heartbeat keep their turns.
YIELD_EVERY = 64


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
        # The wake-up protocol (listener/watcher.py): told of every claim's outcome.
        self.watch: ClaimObserver = NO_WATCH
        # Claimed and not yet finished (id -> type); what shutdown releases.
        self.running: dict[uuid.UUID, str] = {}
        self.stopping = False
        self._idle = anyio.Event()
        self._idle.set()
        self._slots_scope: anyio.CancelScope | None = None
        self._queued: collections.deque[Task] = collections.deque()  # claimed, not started
        # One event per slot waiting for work.
        self._idle_slots: collections.deque[anyio.Event] = collections.deque()
        self._slot_waking = False  # a slot was woken and has not taken its task yet
        self._closed = False
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
        async with anyio.create_task_group() as slots:
            self._slots_scope = slots.cancel_scope
            for _ in range(self.concurrency):
                slots.start_soon(self._slot)
            try:
                await self._claim_loop()
            finally:
                # Each slot exits after the task it is running; queued tasks stay
                # in ``running`` for shutdown to release.
                self._closed = True
                while self._idle_slots:
                    self._idle_slots.popleft().set()

    def stop_claiming(self) -> dict[uuid.UUID, str]:
        """Claim nothing more; hand back the tasks claimed but not started (id -> type).

        They leave ``running``, so the grace period waits only for started handlers.
        """
        self.stopping = True
        self.watch.stop()  # wake-up protocol: claiming has stopped
        self.wakeup.kick()
        unstarted = {task.id: task.type for task in self._queued}
        self._queued.clear()
        for task_id in unstarted:
            self.running.pop(task_id, None)
        if not self.running:
            self._idle.set()
        return unstarted

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

    async def _claim_loop(self) -> None:
        while not self.stopping:
            await self.wakeup.wait(self._sleep_s())
            if self.stopping:
                return
            try:
                await self._claim_until_empty()
            except psycopg.OperationalError as exc:
                log.warning("dispatcher.claim_failed", error=str(exc).strip().splitlines()[0])
                self.watch.after_claim(0, self.free_slots)  # wake-up protocol: found nothing
                await anyio.sleep(random.uniform(0.1, 0.5))
                self.wakeup.kick()  # try again soon: the notifier may not have noticed

    def _sleep_s(self) -> float:
        """The fallback poll (jittered), or sooner when a scheduled task falls due."""
        sleep_s = self.poll_interval_s * random.uniform(0.8, 1.2)
        watch_s = self.watch.poll_s()  # wake-up protocol: a watcher claims this often
        if watch_s is not None:
            sleep_s = min(sleep_s, watch_s)
        if self._next_run_at is not None:
            until_due = (self._next_run_at - datetime.now(self._next_run_at.tzinfo)).total_seconds()
            sleep_s = min(sleep_s, max(until_due, 0.0) + 0.005)
        return sleep_s

    async def _claim_until_empty(self) -> None:
        while not self.stopping and self.free_slots > 0:
            want = min(self.free_slots, self.claim_batch)
            async with self.pool.connection() as conn:
                rows = await store.claim(conn, self.worker_id, want, self.types, self.lease_s)
                if rows:
                    self._enqueue(rows)
                self.watch.after_claim(len(rows), self.free_slots)  # wake-up protocol
                self._more_waiting = len(rows) == want
                if len(rows) < want:
                    # The queue is drained: arm the timer for the next scheduled task,
                    # once the slots have started what we just claimed.
                    await anyio.lowlevel.checkpoint()
                    self._next_run_at = await store.next_run_at(conn, self.types)
                    return

    def _enqueue(self, rows: list[tuple[Any, ...]]) -> None:
        """Queue a claim's rows for the slots (they start at our next await)."""
        if not self.running:
            self._idle = anyio.Event()
        claimed: collections.Counter[str] = collections.Counter()
        for row in rows:
            task = self._task(row)
            claimed[task.type] += 1
            if task.id in self.running:
                # Our lease lapsed (a stall) and we claimed it back while our own run
                # goes on: that run completes it; a second one would only duplicate.
                log.warning("task.reclaimed_while_running", task_id=str(task.id))
                continue
            self.running[task.id] = task.type
            self._queued.append(task)
        for task_type, count in claimed.items():
            self.metrics.claimed_batch(task_type, count)
        self._wake_a_slot()

    def _task(self, row: tuple[Any, ...]) -> Task:
        spec = self.registry.get(row[1])
        default_max = (spec.options.max_attempts if spec else None) or self.default_max_attempts
        task, pickup_delay_s = task_from_row(row, default_max)
        self.metrics.picked_up(task.type, pickup_delay_s)
        return task

    def _wake_a_slot(self) -> None:
        if self._queued and self._idle_slots and not self._slot_waking:
            self._slot_waking = True
            self._idle_slots.popleft().set()

    async def _slot(self) -> None:
        ran = 0
        while True:
            if not self._queued or self.stopping:
                if self._closed:
                    return
                woken = anyio.Event()
                self._idle_slots.append(woken)
                await woken.wait()
                self._slot_waking = False
                ran = 0
                continue
            task = self._queued.popleft()
            self._wake_a_slot()  # more queued: the next idle slot takes the next task
            spec = self.registry.get(task.type)
            try:
                if spec is not None:
                    await self.executor.execute(spec, task)
            except Exception:
                # An engine bug, not a handler error: the lease expires and the
                # task is rescued; this slot keeps serving.
                log.exception("task.engine_error", task_id=str(task.id))
            self._finished(task.id)
            ran += 1
            if ran % YIELD_EVERY == 0:
                await anyio.lowlevel.checkpoint()

    def _finished(self, task_id: uuid.UUID) -> None:
        """The handler is done (its outcome written or queued); free the slot."""
        self.running.pop(task_id, None)
        if not self.running:
            self._idle.set()
        if self._more_waiting and self.free_slots >= self._refill_at and not self.stopping:
            self.wakeup.kick()
