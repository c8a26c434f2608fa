"""Claim into free slots whenever woken, and feed claimed tasks to long-lived slots.

Woken by NOTIFY, by freed slots (when the last claim filled every slot), by the timer
for the next scheduled task (on the database's clock), and by a jittered fallback
poll. Each wake claims in batches until a claim comes back short or the slots are
full; wakes that keep claiming nothing (a storm of notifications other workers
answer) are followed by the next claim no sooner than a floor that doubles with
each, up to ``QUIET_FLOOR_S``. The first empty claim has none: it is most often a
notification for a task the claim before already took, and the next task's must
not wait behind it.

Under a backlog (the last claim came back full), claims go on their way without the
claim loop waiting for them, up to ``CLAIMS_IN_FLIGHT`` at once, each for a batch: the
database works on one while this process runs the tasks of another. Each reserves
the room it asked for until it returns. A claim's error stops the sending; the claims
already sent return (cancelled, the server could still commit them unseen), then the
loop restarts, and its reconcile puts back whatever a lost claim took.

Claimed tasks wait in the registry's run queue. Idle slots are woken one at a time: a
slot that takes a task wakes the next idle slot only if more tasks are queued, so
handlers that finish without waiting run back to back in one slot (two wake-ups per
batch, not one per task), while handlers that wait fan out over as many slots as needed.
"""

from __future__ import annotations

import collections
import contextlib
import math
import random
import time
import uuid
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import psycopg
from psycopg_pool import AsyncConnectionPool

from listener import policy
from listener.acks import Acks
from listener.executor import Executor, LeaseLost, task_from_row
from listener.inflight import Claim, InFlight
from listener.logs import get_logger
from listener.metrics import Metrics
from listener.registry import Registry
from listener.store import engine as store
from listener.supervise import Failures, supervised
from listener.wakeup import Wakeup
from listener.watcher import NO_WATCH, ClaimObserver

log = get_logger("listener.dispatcher")

# A slot running handlers that never wait yields to the event loop this often,
# so the claim loop, the writer of outcomes and the heartbeat keep their turns.
YIELD_EVERY = 64
QUIET_FLOOR_S = 0.01
QUIET_FIRST_S = 0.001  # the floor after the second empty wake in a row
OUTCOME_BACKLOG_MIN = 100
# Claim ahead: under a backlog of fast tasks, claim what the slots will finish while the
# next claims are on their way, so that they never wait for them (and each commit
# carries many outcomes). Beyond the slots, at most AHEAD_FACTOR x the slots that are
# moving and MAX_CLAIM; never more than MAX_CLAIM per claim. Slow tasks are claimed
# only as slots free up.
AHEAD_FACTOR = 100
MAX_CLAIM = 1000
# Under a backlog, up to this many claims are on their way at once, each for a batch
# of what the slots and the claim-ahead hold (a third of it with two): the database
# writes one batch's outcomes and claims the next while this process runs handlers.
# With one claim at a time each side waited for the other, and a default worker used
# one of two cores.
CLAIMS_IN_FLIGHT = 2
STUCK_AFTER_CLAIMS = 10  # a slot busy this many claim round trips is not moving ...
STUCK_AFTER_TASKS = 20  # ... nor one busy this many average handler runs
STALE_QUEUE_S = 2.0  # tasks claimed ahead that waited this long for a slot go back
_EWMA = 0.1


class Dispatcher:
    """Owns the worker's slots and what is claimed into them."""

    def __init__(
        self,
        *,
        pool: AsyncConnectionPool[Any],
        registry: Registry,
        inflight: InFlight,
        executor: Executor,
        acks: Acks,
        metrics: Metrics,
        failures: Failures,
        worker_id: str,
        claim_spec: store.ClaimSpec,
        concurrency: int,
        claim_batch: int | None,
        lease_s: float,
        poll_interval_s: float,
    ) -> None:
        self.pool = pool
        self.registry = registry
        self.inflight = inflight
        self.executor = executor
        self.acks = acks
        self.metrics = metrics
        self.failures = failures
        self.worker_id = worker_id
        self.claim_spec = claim_spec
        self.types = claim_spec.types
        # A task of such a type ending frees a fleet-wide slot: claim again.
        self._fleet_limited = {
            t for t, n in zip(claim_spec.types, claim_spec.concurrency, strict=True) if n
        }
        self._attempt_limits = dict(zip(claim_spec.types, claim_spec.attempt_limits, strict=True))
        self.concurrency = concurrency
        self.claim_batch = claim_batch  # None: as many as there is room for (MAX_CLAIM)
        self.lease_s = lease_s
        self.poll_interval_s = poll_interval_s
        self.wakeup = Wakeup()
        # The wake-up protocol (listener/watcher.py): told of every claim's outcome.
        self.watch: ClaimObserver = NO_WATCH
        self.stopping = False
        self._slots_scope: anyio.CancelScope | None = None
        self._idle_slots: collections.deque[anyio.Event] = collections.deque()
        self._slot_waking = False  # a slot was woken and has not taken its task yet
        self._closed = False
        self._more_waiting = False
        self.ahead = 0  # tasks held claimed beyond the slots (see _plan_ahead)
        self._task_s: float | None = None  # a handler's run, on average (moving)
        self._claim_s: float | None = None  # a claim's round trip, on average (moving)
        self._next_due_at: float | None = None  # anyio clock
        self._quiet_until = 0.0  # anyio clock: no claim before, after empty wakes
        self._empty_wakes = 0  # in a row
        self._waiting_for_slot = False
        self._held_by_outcomes = False
        self._claims: anyio.abc.TaskGroup | None = None  # claims sent under a backlog
        self._claims_in_flight = 0
        self._requested = 0  # tasks those claims asked for
        self._claim_error: Exception | None = None
        self._claims_back = anyio.Event()  # set while no claim is on its way
        self._claims_back.set()
        self._stop_waking: anyio.CancelScope | None = None
        self._claim_conn: psycopg.AsyncConnection[Any] | None = None  # held by the loop
        self._stuck = False  # the queue went back behind stuck slots; none freed since

    @property
    def free_slots(self) -> int:
        return self.concurrency - self.inflight.occupying

    def _plan_ahead(self) -> None:
        """How many tasks to hold claimed beyond the slots: what the slots that are
        moving finish during one claim. A slot busy for longer than a claim's round
        trip many times over is not moving: the tasks queued behind it would wait."""
        self.ahead = 0
        if self.stopping or not self._more_waiting or not self._task_s or not self._claim_s:
            return
        stuck_after_s = max(STUCK_AFTER_CLAIMS * self._claim_s, STUCK_AFTER_TASKS * self._task_s)
        moving = self.concurrency - self.inflight.running_longer_than(stuck_after_s)
        wanted = math.ceil(moving * self._claim_s / self._task_s)
        self.ahead = min(wanted, AHEAD_FACTOR * moving, MAX_CLAIM)

    @property
    def room(self) -> int:
        """How many more tasks this worker may claim now."""
        return self.concurrency + self.ahead - self.inflight.occupying - self._requested

    def _refill_at(self) -> int:
        # With a backlog, refill in batches, not one claim per finished task.
        return max(1, (self.concurrency + self.ahead) // (CLAIMS_IN_FLIGHT + 1))

    def _until_queue_stale(self) -> float | None:
        """Seconds until the oldest queued task has waited STALE_QUEUE_S behind slots
        that are all busy (0: it has; None: nothing queued, or a slot is free)."""
        runnable = self.inflight.runnable
        if not runnable or self.free_slots > 0:
            return None
        return max(STALE_QUEUE_S - (time.monotonic() - runnable[0].queued_at), 0.0)

    def _release_stale_queue(self) -> None:
        """Claimed ahead, then stuck behind slots that stopped moving: put them back
        (attempt given back) for workers with room, and claim ahead no more for now."""
        stale_in_s = self._until_queue_stale()
        # Once the slots were found stuck, what claims on their way bring back goes
        # back at once, until a slot frees up.
        if stale_in_s is None or (stale_in_s > 0 and not self._stuck):
            return
        self._stuck = True
        self.ahead = 0
        stale = self.inflight.take_unstarted()
        for claim in stale:
            self.inflight.decide(claim, policy.RELEASE)
        self.acks.wake()
        log.info("dispatcher.queue_released", tasks=len(stale), waited_s=STALE_QUEUE_S)

    @property
    def outcomes_backlogged(self) -> bool:
        """Too many outcomes could not be written (a database refusing writes): claim
        nothing that could not be acknowledged either, until the writer catches up.
        (Outcomes merely waiting for the next claim to carry them don't count.)"""
        if len(self.inflight) - self.inflight.occupying <= OUTCOME_BACKLOG_MIN:
            return False
        failing = sum(1 for c in self.inflight.acking() if c.ack_failures)
        return failing > max(OUTCOME_BACKLOG_MIN, 2 * self.concurrency)

    def outcomes_written(self) -> None:
        """The writer committed a batch: claim again if the backlog held us back."""
        self._wake_a_slot()  # a written outcome may have let a held claim of its task go
        if self._held_by_outcomes and not self.outcomes_backlogged:
            self._held_by_outcomes = False
            self.wakeup.kick()

    async def run(self) -> None:
        """Claim and run tasks until ``stopping``; returns when every slot has exited."""
        async with anyio.create_task_group() as slots:
            self._slots_scope = slots.cancel_scope
            for _ in range(self.concurrency):
                slots.start_soon(self._slot)
            try:
                await supervised("claims", self._claim_loop, self.failures)
            finally:
                # Each slot exits after the task it is running; what is still queued
                # stays in the registry for shutdown to put back.
                self._closed = True
                while self._idle_slots:
                    self._idle_slots.popleft().set()

    def stop_claiming(self) -> int:
        """Claim nothing more; put back at once what never started (how many)."""
        self.stopping = True
        self.watch.stop()  # wake-up protocol: claiming has stopped
        self.wakeup.kick()
        unstarted = self.inflight.take_unstarted()
        for claim in unstarted:
            self.inflight.decide(claim, policy.RELEASE)
        self.acks.wake()
        return len(unstarted)

    def cancel_running(self) -> None:
        """Interrupt every running handler (the grace period is over)."""
        if self._slots_scope is not None:
            self._slots_scope.cancel()

    async def wait_until_idle(self) -> None:
        """Wait until no handler runs or waits for a slot."""
        await self.inflight.wait_idle()

    def schedule_in(self, delay_s: float) -> None:
        """Make sure the dispatcher is awake when a task falls due in ``delay_s``."""
        due_at = anyio.current_time() + max(delay_s, 0.0)
        if self._next_due_at is None or due_at < self._next_due_at:
            self._next_due_at = due_at
            self.wakeup.kick()  # re-arm the timer with the earlier time

    async def _claim_loop(self) -> None:
        # At start, and after any claim error: a claim may have committed without its
        # reply reaching us; those rows are ours in the database but unknown here.
        await self.reconcile()
        self.wakeup.kick()
        self._claim_error = None
        # Nothing raises inside the group (errors are kept and raised after it), so a
        # claim's error leaves as itself. A failed claim stops only the sending: the
        # claims already sent are not cancelled (the server would commit them anyway,
        # after the restart's reconcile had looked) but return and are held as usual.
        # The loop's own claims use one connection it holds while it runs: the pool
        # hands out the connection used least recently, whose server process is the
        # coldest (a trickle's claim took ~60 us longer through it). Any error ends the
        # loop and gives the connection back; the pool discards a broken one.
        async with (
            self.pool.connection() as self._claim_conn,
            anyio.create_task_group() as self._claims,
        ):
            with anyio.CancelScope() as self._stop_waking:
                try:
                    await self._claim_on_wake()
                except Exception as exc:
                    self._claims_failed(exc)
        self._claims = self._stop_waking = self._claim_conn = None
        if self._claim_error is not None:
            raise self._claim_error

    def _claims_failed(self, exc: Exception) -> None:
        """A claim failed: send no more until the loop restarts (and reconciles)."""
        self.watch.after_claim(0, self.free_slots)  # wake-up protocol: found nothing
        if self._claim_error is None:
            self._claim_error = exc
        if self._stop_waking is not None:
            self._stop_waking.cancel()

    async def claims_returned(self) -> None:
        """Wait until no claim is on its way (its rows are then held, or put back)."""
        await self._claims_back.wait()

    async def _claim_on_wake(self) -> None:
        while not self.stopping:
            await self.wakeup.wait(self._sleep_s())
            if self.stopping:
                return
            wait_s = self._quiet_until - anyio.current_time()
            if wait_s > 0:
                await anyio.sleep(wait_s)
            self._release_stale_queue()
            claimed = await self._claim_until_empty()
            if claimed == 0:  # claims were sent and found nothing (not: no slot was free)
                self._empty_wakes += 1
                self._quiet_until = anyio.current_time() + quiet_floor_s(self._empty_wakes)
            elif claimed:
                self._empty_wakes = 0

    def _sleep_s(self) -> float | None:
        """The fallback poll (jittered), or sooner when a scheduled task falls due; with
        no room, until a freed slot kicks us or the queue behind the slots goes stale."""
        self._waiting_for_slot = self.room <= 0
        if self._waiting_for_slot:
            return self._until_queue_stale()
        sleep_s = self.poll_interval_s * random.uniform(0.8, 1.2)
        watch_s = self.watch.poll_s()  # wake-up protocol: a watcher claims this often
        if watch_s is not None:
            sleep_s = min(sleep_s, watch_s)
        if self._next_due_at is not None:
            sleep_s = min(sleep_s, max(self._next_due_at - anyio.current_time(), 0.0))
        return sleep_s

    async def _claim_until_empty(self) -> int | None:
        """Claim until a claim comes back short or the slots are full: how many tasks
        were claimed here, or None when no claim was awaited (every slot busy, or the
        claims went on their way under a backlog)."""
        claimed: int | None = None
        self._plan_ahead()
        while not self.stopping and self.room > 0:
            if self.outcomes_backlogged:
                self._held_by_outcomes = True
                return claimed
            backlog = self._more_waiting  # the claim before this one came back full
            if self._claims_in_flight and not self._may_send_another(backlog):
                return claimed  # each claim kicks the wake-up when it returns
            want = min(self.room, self.claim_batch or MAX_CLAIM, MAX_CLAIM)
            if backlog and CLAIMS_IN_FLIGHT > 1 and self._claims is not None:
                want = min(want, self._refill_at())
                if not self._claims_in_flight:
                    self._claims_back = anyio.Event()
                self._claims_in_flight += 1
                self._requested += want
                self._claims.start_soon(self._claim_on_its_way, want)
                continue
            rows, outlook, token = await self._claim(want)
            claimed = (claimed or 0) + len(rows)
            if not self._took(rows, outlook, token, backlog=backlog):
                if rows:  # the slots start them before this loop's bookkeeping and sleep
                    await anyio.lowlevel.checkpoint()
                return claimed
        return claimed

    def _may_send_another(self, backlog: bool) -> bool:
        """Beside the claims on their way: only under a backlog, and a whole batch."""
        return (
            backlog and self._claims_in_flight < CLAIMS_IN_FLIGHT and self.room >= self._refill_at()
        )

    async def _claim_on_its_way(self, want: int) -> None:
        try:
            try:
                rows, outlook, token = await self._claim(want, on_its_way=True)
            finally:
                self._claims_in_flight -= 1
                self._requested -= want
                if not self._claims_in_flight:
                    self._claims_back.set()
            self._took(rows, outlook, token, backlog=True)
        except Exception as exc:
            self._claims_failed(exc)
            return
        self.wakeup.kick()  # room, or the end of the backlog: the loop looks again

    def _took(
        self,
        rows: list[tuple[Any, ...]],
        outlook: store.Outlook | None,
        token: uuid.UUID,
        *,
        backlog: bool,
    ) -> bool:
        """Take in what a claim returned; whether it came back full (a backlog waits)."""
        self._admit(rows, token)
        self.watch.after_claim(len(rows), self.free_slots, backlog=backlog)
        self.metrics.claimed_rows(len(rows))
        self._more_waiting = outlook is None
        if outlook is not None:  # drained, or held back by a limit
            self._look_again(outlook)
        return self._more_waiting

    async def _claim(
        self, want: int, *, on_its_way: bool = False
    ) -> tuple[list[tuple[Any, ...]], store.Outlook | None, uuid.UUID]:
        """Claim up to ``want`` tasks, writing the outcomes that wait in the same transaction."""
        token = uuid.uuid4()
        outcomes = self.acks.take()
        began = anyio.current_time()
        try:
            async with self._connection(on_its_way) as conn:
                if not outcomes:
                    rows, outlook = await store.claim(
                        conn, self.worker_id, token, want, self.claim_spec, self.lease_s
                    )
                    self._claim_s = _moving(self._claim_s, anyio.current_time() - began)
                    return rows, outlook, token
                written, rows, outlook = await store.finish_and_claim(
                    conn, self.acks.finishes(outcomes), self.worker_id, token, want,
                    self.claim_spec, self.lease_s,
                )  # fmt: skip
        except Exception as exc:
            if outcomes:
                self.acks.failed(outcomes, exc)  # they wait and are written later
            raise
        except BaseException:  # cancelled: shutdown writes them
            for claim in outcomes:
                claim.writing = False
            raise
        self.acks.settle(outcomes, written)
        self._claim_s = _moving(self._claim_s, anyio.current_time() - began)
        return rows, outlook, token

    def _connection(
        self, on_its_way: bool
    ) -> contextlib.AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        """The loop's own connection for its claims; a pooled one for those on their way
        (they run beside the loop's, each on a connection of its own)."""
        if on_its_way or self._claim_conn is None:
            return self.pool.connection()
        return contextlib.nullcontext(self._claim_conn)

    def will_claim_soon(self) -> bool:
        """A backlog waits: the next claim, as slots free up, carries the waiting outcomes."""
        return self._more_waiting and not self.stopping

    def _look_again(self, outlook: store.Outlook) -> None:
        """Arm the timer for the next scheduled task, or the next slot a rate limit opens."""
        due = [outlook.next_due_in_s]
        for task_type, held in outlook.throttled.items():
            self.metrics.throttled(task_type, held["reason"])
            due.append(held.get("reopens_in_s"))
        soonest = min((d for d in due if d is not None), default=None)
        self._next_due_at = None if soonest is None else anyio.current_time() + soonest

    async def reconcile(self) -> None:
        """Put back rows claimed under our id that the registry does not hold."""
        async with self.pool.connection() as conn:
            rows = await store.reconcile(conn, self.worker_id, [c.key for c in self.inflight])
        for task_id, task_type in rows:
            self.metrics.finished(task_type, "released")
            log.warning("task.reconciled", task_id=str(task_id), type=task_type)

    def _admit(self, rows: list[tuple[Any, ...]], token: uuid.UUID) -> None:
        """Register a claim's rows; they start at our next await, in claim order."""
        if not rows:
            return
        claimed: collections.Counter[str] = collections.Counter()
        decided = False
        default_max_attempts = policy.RetryPolicy().max_attempts
        for row in rows:
            task, pickup_delay_s, payload_error = task_from_row(
                row, self._attempt_limits.get(row[1], default_max_attempts)
            )
            claimed[task.type] += 1
            self.metrics.picked_up(task.type, pickup_delay_s)
            claim = Claim(task, token)
            if self.stopping:  # the claim was in flight when the stop came: put it back
                self.inflight.add_decided(claim, policy.RELEASE)
                decided = True
            elif payload_error is not None:  # fails alone; its claim-mates run
                outcome = policy.Outcome("fail", error=policy.describe_error(payload_error))
                self.inflight.add_decided(claim, outcome)
                decided = True
            else:
                self.inflight.add(claim)
        for task_type, count in claimed.items():
            self.metrics.claimed_batch(task_type, count)
        if decided:
            self.acks.wake()
        self._wake_a_slot()

    def _wake_a_slot(self) -> None:
        if self.inflight.runnable and self._idle_slots and not self._slot_waking:
            self._slot_waking = True
            self._idle_slots.popleft().set()

    async def _slot(self) -> None:
        ran = 0
        while not self._closed:
            # One cancel scope per slot, not per task (a scope costs more than a no-op
            # handler): the heartbeat cancels it to stop a task whose lease was lost.
            with anyio.CancelScope() as scope:
                ran = await self._serve(scope, ran)
            if scope.cancelled_caught:
                ran = 0

    async def _serve(self, scope: anyio.CancelScope, ran: int) -> int:
        """Run queued claims until the slots close; returns when a lost lease cancels."""
        runnable = self.inflight.runnable
        while True:
            if not runnable or self.stopping:
                if self._closed:
                    return ran
                woken = anyio.Event()
                self._idle_slots.append(woken)
                await woken.wait()
                self._slot_waking = False
                ran = 0
                continue
            claim = runnable.popleft()
            self._wake_a_slot()  # more queued: the next idle slot takes the next claim
            claim.scope = scope
            try:
                await self._run(claim)
            finally:
                claim.scope = None
            ran += 1
            if ran % YIELD_EVERY == 0:
                await anyio.lowlevel.checkpoint()

    async def _run(self, claim: Claim) -> None:
        spec = self.registry.get(claim.task.type)
        try:
            assert spec is not None, "the claim asks only for registered types"
            outcome = await self.executor.execute(spec, claim)
        except LeaseLost:
            self._lost(claim)
            return
        except anyio.get_cancelled_exc_class():
            if claim.lease_lost:
                self._lost(claim)
            raise
        except Exception as exc:
            # A bug of ours, not the handler's: this attempt fails, the slot goes on.
            log.exception("task.engine_error", task_id=str(claim.task.id))
            outcome = policy.decide(claim.task.attempt, policy.RetryPolicy(), exc)
        self._task_s = _moving(self._task_s, claim.duration_s)
        if outcome is None:  # a transactional handler's completion, already committed
            self.inflight.decide(claim, policy.COMPLETE)
            self.inflight.remove(claim)
            self.acks.report([claim])
        else:
            self.inflight.decide(claim, outcome)
            self.acks.wake()
        self._finished(claim.task.type)

    def _lost(self, claim: Claim) -> None:
        """Not ours any more: nothing of this attempt is written."""
        log.warning("task.lease_lost", task_id=str(claim.task.id), state="ended")
        self.inflight.remove(claim)
        self._finished()

    def _finished(self, task_type: str | None = None) -> None:
        """A handler is done: free its slot, claim more if a backlog waits."""
        self._stuck = False
        if self.stopping:
            return
        if task_type in self._fleet_limited:
            self.wakeup.kick()  # one of the fleet's slots for this type is free again
        elif self._more_waiting:  # a backlog: refill in batches, not one claim per task
            if self.room >= self._refill_at():
                self.wakeup.kick()
        elif self._waiting_for_slot:  # the claim loop sleeps without a timer: re-arm it
            self._waiting_for_slot = False
            self.wakeup.kick()


def quiet_floor_s(empty_wakes: int) -> float:
    """How long to wait before the next claim after ``empty_wakes`` empty ones in a row."""
    if empty_wakes < 2:
        return 0.0
    doublings = min(empty_wakes - 2, 16)  # past the floor long before; no overflow
    return min(QUIET_FLOOR_S, QUIET_FIRST_S * (1 << doublings))


def _moving(average: float | None, sample: float) -> float:
    """An exponentially weighted moving average (the first sample starts it)."""
    return sample if average is None else average + _EWMA * (sample - average)
