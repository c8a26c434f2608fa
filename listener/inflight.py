"""The in-flight registry: every claim this worker holds, from its claim to its written outcome.

A claim is keyed by (task id, claim token): the token is written by the claim and named
by every later write, so the outcome of one attempt can never land on the next one.
States, and what moves a claim out of each:

    queued     claimed, waiting for a slot            -> running (a slot takes it), or
                                                         acking (shutdown puts it back)
    held       claimed while this worker still runs   -> queued, once that run has ended
               the same task under an older token
    running    its handler runs in a slot             -> acking (the handler ended), or
                                                         abandoned (a sync handler ran
                                                         past its timeout)
    abandoned  timed out, its thread still running:   -> acking, when the thread ends
               the lease is kept, so nobody runs the
               task beside it
    acking     outcome decided, not yet written       -> removed, once written or known
                                                         to be someone else's

Every claim here holds its lease: the heartbeat renews them all. Shutdown reads the
registry to write what was earned and put back the rest. Nothing else in the worker
keeps in-flight state.
"""

from __future__ import annotations

import collections
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import anyio

from listener.models import Task
from listener.policy import Outcome

State = Literal["queued", "held", "running", "abandoned", "acking"]
Key = tuple[uuid.UUID, uuid.UUID]  # (task id, claim token)
_IN_SLOT = ("running", "abandoned")


@dataclass(eq=False, slots=True)
class Claim:
    """One claimed attempt of one task."""

    task: Task
    token: uuid.UUID
    state: State = "queued"
    outcome: Outcome | None = None
    started: float | None = None  # time.monotonic() when its handler started
    duration_s: float = 0.0
    lease_lost: bool = False  # the database says the task is someone else's now
    ack_failures: int = 0
    writing: bool = False  # in a statement that writes its outcome right now
    decided_at: float = 0.0  # time.monotonic() when its outcome was decided
    queued_at: float = 0.0  # time.monotonic() when it joined the run queue
    write_alone: bool = False  # its last write failed on the data, not the connection
    not_before: float = 0.0  # monotonic: no write of the outcome before this
    scope: Any = None  # the slot's cancel scope while it runs (cancelled if the lease is lost)

    @property
    def key(self) -> Key:
        return (self.task.id, self.token)


class InFlight:
    """The registry. The dispatcher adds and starts claims; acks remove them."""

    def __init__(self) -> None:
        self._claims: dict[Key, Claim] = {}
        self._active: dict[uuid.UUID, Claim] = {}  # per task: the claim whose run counts
        self._held: dict[uuid.UUID, collections.deque[Claim]] = {}
        self._acking: dict[Key, Claim] = {}
        self.runnable: collections.deque[Claim] = collections.deque()
        self.occupying = 0  # claims that need or hold a slot: queued, held, running, abandoned
        self.abandoned = 0
        self._idle = anyio.Event()  # set while no claim is queued, held or running
        self._idle.set()

    def __len__(self) -> int:
        return len(self._claims)

    def __iter__(self) -> Iterator[Claim]:
        return iter(list(self._claims.values()))

    @property
    def busy(self) -> int:
        """Claims queued, held or running: what a draining worker waits for.

        Abandoned ones are not waited for: they ran past their timeout already.
        """
        return self.occupying - self.abandoned

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def _now_busy(self) -> None:
        if self._idle.is_set():
            self._idle = anyio.Event()

    def _maybe_idle(self) -> None:
        if self.occupying - self.abandoned == 0:
            self._idle.set()

    def add(self, claim: Claim) -> None:
        """Register a fresh claim; it waits behind a still-running older run of its task."""
        self._claims[claim.key] = claim
        self.occupying += 1
        self._now_busy()
        older = self._active.get(claim.task.id)
        if older is not None and older.state in ("queued", *_IN_SLOT):
            claim.state = "held"
            self._held.setdefault(claim.task.id, collections.deque()).append(claim)
            return
        self._active[claim.task.id] = claim
        claim.queued_at = time.monotonic()
        self.runnable.append(claim)

    def add_decided(self, claim: Claim, outcome: Outcome) -> None:
        """Register a claim whose outcome is known before it runs (a bad payload)."""
        self._claims[claim.key] = claim
        self.occupying += 1
        self.decide(claim, outcome)

    def start(self, claim: Claim) -> None:
        claim.state = "running"
        claim.started = time.monotonic()

    def abandon(self, claim: Claim) -> None:
        """A sync handler ran past its timeout; its thread still runs, the lease is kept."""
        claim.state = "abandoned"
        self.abandoned += 1
        self._maybe_idle()

    def _leave(self, claim: Claim) -> None:
        """``claim`` stops needing a slot."""
        if claim.state == "acking":
            return
        if claim.state == "abandoned":
            self.abandoned -= 1
        self.occupying -= 1
        self._maybe_idle()

    def decide(self, claim: Claim, outcome: Outcome) -> None:
        """The attempt is over: its outcome waits for the ack writer."""
        self._leave(claim)
        claim.state = "acking"
        claim.outcome = outcome
        claim.decided_at = time.monotonic()
        self._acking[claim.key] = claim
        self._release_next(claim)

    def remove(self, claim: Claim) -> None:
        """The outcome is written, or the task is not ours any more."""
        if self._claims.pop(claim.key, None) is None:
            return
        self._acking.pop(claim.key, None)
        self._leave(claim)
        self._release_next(claim)
        if self._active.get(claim.task.id) is claim:
            del self._active[claim.task.id]

    def _release_next(self, claim: Claim) -> None:
        """The run of ``claim`` is over: a held claim of the same task may start."""
        if self._active.get(claim.task.id) is not claim:
            return
        waiting = self._held.get(claim.task.id)
        if not waiting:
            return
        following = waiting.popleft()
        if not waiting:
            del self._held[claim.task.id]
        following.state = "queued"
        following.queued_at = time.monotonic()
        self._active[claim.task.id] = following
        self.runnable.append(following)

    def get(self, key: Key) -> Claim | None:
        return self._claims.get(key)

    def acking(self) -> list[Claim]:
        """Claims whose outcome waits to be written, oldest first."""
        return list(self._acking.values())

    def leased(self) -> list[Claim]:
        """Claims whose lease the heartbeat keeps: all but those known lost."""
        return [c for c in self._claims.values() if not c.lease_lost]

    def in_state(self, *states: State) -> list[Claim]:
        return [c for c in self._claims.values() if c.state in states]

    def take_unstarted(self) -> list[Claim]:
        """Every claim that never reached a slot (queued or held), out of the run queue."""
        self.runnable.clear()
        self._held.clear()
        return self.in_state("queued", "held")

    def running_longer_than(self, seconds: float) -> int:
        """How many handlers here have run for longer than ``seconds``."""
        since = time.monotonic() - seconds
        return sum(
            1
            for c in self._claims.values()
            if c.state in _IN_SLOT and c.started and c.started < since
        )

    def oldest_running_s(self) -> float:
        """How long the longest-running handler here has run (0 when none runs)."""
        starts = [c.started for c in self._claims.values() if c.state in _IN_SLOT and c.started]
        return time.monotonic() - min(starts) if starts else 0.0

    def count(self, state: State) -> int:
        return sum(1 for c in self._claims.values() if c.state == state)
