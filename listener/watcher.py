"""This worker's side of the wake-up protocol (docs/notify.md).

While a worker watches a type, it holds the type's watch lock on its LISTEN session
and claims at least every ``poll_s`` while it has a free slot; producers of that
type then skip their NOTIFY (the trigger in migration 0008). When to watch is the
pure ``WatchPlan``: once tasks arrive faster than one per wake-up, until a few empty
claims in a row; while the slots stay full, the watcher hands off with a NOTIFY now
and then, for workers with room. To stop watching it gives the locks back, passes
the gate (waits until every producer that may have skipped its NOTIFY has committed
or rolled back), then has the dispatcher claim once more; a stopping worker sends a
NOTIFY instead. If the LISTEN session drops, the locks go with it: the gate pass, a
NOTIFY and the claim follow as soon as the database answers.

The dispatcher calls ``after_claim`` after every claim, ``poll_s`` to bound its
sleep, and ``stop`` when it stops claiming; ``NO_WATCH`` does nothing (--no-listen).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio
import psycopg
from psycopg_pool import AsyncConnectionPool

from listener.logs import get_logger
from listener.metrics import Metrics
from listener.notifier import Notifier, SessionLost
from listener.store import wake as store
from listener.wakeup import Wakeup
from listener.watch_plan import WatchPlan

log = get_logger("listener.watcher")

# While watching, claim at least this often (the pickup latency of a skipped NOTIFY).
WATCH_POLL_S = 0.005
# Lean claims in a row (one every WATCH_POLL_S: the rate below WATCH_RATE, slots to
# spare) before a watcher goes idle.
IDLE_AFTER_LEAN_CLAIMS = 3
# Tasks per second, counted over the claims of the last WATCH_WINDOW_S, from which a
# worker watches: above ~500 tasks/s notifying commits queue up; below, a NOTIFY picks
# a task up sooner than a poll.
WATCH_RATE = 400.0
WATCH_WINDOW_S = 0.05
# While a watcher's slots stay full, it sends a NOTIFY every this many polls.
# A backlog a saturated watcher cannot take wakes the other workers within 100 ms; more
# often costs a notifying commit each time, for nothing when no other worker is idle.
FULL_FOR_POLLS = 20
GATE_RETRY_S = 0.2
# A type refused a watch is tried again at a claim at least this long after: a
# producer's shared look at W(type) refuses it for an instant, another worker's watch
# for as long as that lasts (a try is a statement on the LISTEN session).
WATCH_RETRY_S = 0.05
STOP_DEADLINE_S = 5.0  # for the last release and gate pass when the worker stops


class ClaimObserver(Protocol):
    """What the dispatcher calls: the whole interface between it and the protocol."""

    def after_claim(self, claimed: int, free_slots: int, *, backlog: bool = False) -> None:
        """A claim returned ``claimed`` tasks and left ``free_slots`` slots free.

        ``backlog``: it followed straight on a claim that came back full.
        """

    def poll_s(self) -> float | None:
        """Claim again within this many seconds (None: no bound beyond the poll)."""

    def stop(self) -> None:
        """The dispatcher claims nothing more."""


class _NoWatch:
    """For workers that don't listen: they never watch."""

    def after_claim(self, claimed: int, free_slots: int, *, backlog: bool = False) -> None:
        pass

    def poll_s(self) -> float | None:
        return None

    def stop(self) -> None:
        pass


NO_WATCH: ClaimObserver = _NoWatch()


class Watcher:
    """Takes and gives back this worker's watch locks as its claims say."""

    def __init__(
        self,
        notifier: Notifier,
        pool: AsyncConnectionPool[Any],
        types: list[str],
        kick: Callable[[], None],
        metrics: Metrics,
        *,
        poll_s: float | None = None,
        idle_after: int | None = None,
    ) -> None:
        self.notifier = notifier
        self.pool = pool
        self.types = sorted(set(types))
        self.kick = kick
        self.metrics = metrics
        self._poll_s = WATCH_POLL_S if poll_s is None else poll_s
        idle = IDLE_AFTER_LEAN_CLAIMS if idle_after is None else idle_after
        self.plan = WatchPlan(
            idle,
            full_for_s=FULL_FOR_POLLS * self._poll_s,
            watch_rate=WATCH_RATE,
            window_s=WATCH_WINDOW_S,
        )
        self.held: set[str] = set()  # watch locks held on the LISTEN session
        self.disabled = False  # the session turned out not to be one (a pooler)
        self._changed = Wakeup()
        self._attempt_due = False  # try to watch (once per wish, again per claim if refused)
        self._acquiring = False  # a try is in flight on the LISTEN session
        self._retry_at = 0.0  # when a refused type may be tried again
        self._owed: set[str] = set()  # given back or lost; the gate pass is owed
        self._owed_reason = "idle"
        self._final_claim = False  # the next claim is the one after a gate pass
        notifier.watch_session(self._session_changed)

    # The dispatcher's side (sync, on the event loop; never blocks).
    def after_claim(self, claimed: int, free_slots: int, *, backlog: bool = False) -> None:
        if self._final_claim:
            self._final_claim = False
            if claimed:
                self.metrics.watch_final_claimed.inc(claimed)
        wanted, full, now = self.plan.wanted, self.plan.full_since, anyio.current_time()
        self.plan.claimed(claimed, free_slots, now, backlog=backlog)
        if self.plan.wanted != wanted:
            self._attempt_due = self.plan.wanted
            self._changed.kick()
        elif (self.plan.full_since is None) != (full is None):
            self._changed.kick()  # arm or disarm the hand-off timer
        if self._retry_due(now):
            # The plan stays as it is while claims keep up the rate, so a refused type
            # would otherwise go unwatched until the next wish to watch.
            self._attempt_due = True
            self._changed.kick()

    def _retry_due(self, now: float) -> bool:
        """Wanted, a type was refused long enough ago, and no try is due or in flight."""
        if not self.plan.wanted or self.disabled or self._attempt_due or self._acquiring:
            return False
        return len(self.held) < len(self.types) and now >= self._retry_at

    def poll_s(self) -> float | None:
        return self._poll_s if self.held and self.plan.wanted else None

    def stop(self) -> None:
        self.plan.stop()
        self._changed.kick()

    @property
    def idle(self) -> bool:
        """Not watching nor about to, and nothing owed: no gate pass, nor the claim after one."""
        trying = (self._attempt_due or self._acquiring) and self.plan.wanted and not self.disabled
        return not (self.held or trying or self._owed or self._final_claim)

    async def run(self) -> None:
        """Follow the plan until cancelled."""
        while True:
            due_s = self.plan.handoff_due_s(anyio.current_time()) if self.held else None
            await self._changed.wait(due_s)
            if self.plan.stopped:
                # The last release and gate pass must happen even as the worker exits.
                with anyio.CancelScope(shield=True), anyio.move_on_after(STOP_DEADLINE_S):
                    await self._settle()
            else:
                await self._settle()

    async def _settle(self) -> None:
        while True:
            if self.held and not self.plan.wanted:
                await self._stop_watching()
            elif self._owed:
                await self._pass_gate()
            elif self._attempt_due and self.plan.wanted and not self.disabled:
                self._attempt_due = False
                await self._start_watching()
            elif self.held and self.plan.handoff_due_s(anyio.current_time()) == 0.0:
                await self._hand_off()
            else:
                return

    async def _start_watching(self) -> None:
        # Never a type already held: session locks stack, and one release would leave
        # the lock held, silencing that type's producers for the session's lifetime.
        types = [t for t in self.types if t not in self.held]
        if not types:
            return

        async def acquire(conn: psycopg.AsyncConnection[Any], pid: int) -> tuple[set[str], int]:
            return await store.acquire_watch(conn, pid, types), self.notifier.session

        self._acquiring = True
        self._retry_at = anyio.current_time() + WATCH_RETRY_S  # for any type refused
        try:
            granted, session = await self.notifier.on_session(acquire)
        except SessionLost:
            return
        except psycopg.Error as exc:
            log.warning("watch.failed", step="acquire", error=_one_line(exc))
            return
        finally:
            self._acquiring = False
        if session != self.notifier.session or not self.notifier.listening:
            self._owe(granted, "lost")  # that session is gone, and its locks with it
        elif granted:
            self.held |= granted
            self.metrics.watching.set(1)
            log.debug("watch.started", types=sorted(granted))
            # The dispatcher may be asleep for the whole poll interval: from now on it
            # must claim every poll_s, so wake it to take up that pace.
            self.kick()

    async def _stop_watching(self) -> None:
        types = sorted(self.held)

        async def release(conn: psycopg.AsyncConnection[Any], pid: int) -> set[str]:
            return await store.release_watch(conn, pid, types)

        try:
            released = await self.notifier.on_session(release)
        except SessionLost:
            return  # the locks went with the session (_session_changed owes the gate)
        except psycopg.Error as exc:
            log.warning("watch.failed", step="release", error=_one_line(exc))
            released = set()
        if released != set(types):
            # Taken on this session's backend, not given back by it: statements are not
            # reaching one session (a transaction-mode pooler, which LISTEN can't work
            # through either). Watch no more; the lock goes when that backend does.
            self.disabled = True
            log.error("watch.disabled", types=types, released=sorted(released))
        self._owe(set(types), "stopping" if self.plan.stopped else "idle")

    async def _pass_gate(self) -> None:
        """Wait out the producers that may have skipped, then claim (or wake others)."""
        types, reason = sorted(self._owed), self._owed_reason
        notify = reason in ("stopping", "lost")  # others may have to claim what we skip
        await self._until_done("gate", lambda conn: store.pass_gate(conn, types, notify=notify))
        self._owed.difference_update(types)
        self.metrics.watch_releases.labels(reason).inc()
        log.debug("watch.stopped", types=types, reason=reason)
        self._final_claim = True
        self.kick()

    async def _hand_off(self) -> None:
        """The slots stay full: wake the workers that have room (the watch is kept)."""
        self.plan.handed_off(anyio.current_time())
        await self._until_done("hand-off", store.hand_off)
        self.metrics.watch_handoffs.inc()

    async def _until_done(
        self, step: str, statement: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]
    ) -> None:
        """Run ``statement`` on a pooled connection, retrying until the database answers."""
        while True:
            try:
                async with self.pool.connection() as conn:
                    await statement(conn)
                return
            except psycopg.Error as exc:
                log.warning("watch.failed", step=step, error=_one_line(exc))
                await anyio.sleep(GATE_RETRY_S)

    def _owe(self, types: set[str], reason: str) -> None:
        """``types`` are no longer watched: their gate pass is owed."""
        self.held -= types
        if not self.held:
            self.metrics.watching.set(0)
        if types:
            self._owed |= types
            self._owed_reason = reason

    def _session_changed(self, up: bool) -> None:
        if not up:
            self._owe(set(self.held), "lost")
        self._attempt_due = self._attempt_due or (up and self.plan.wanted)
        self._changed.kick()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
