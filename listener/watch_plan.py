"""When a worker watches its task types: a pure function of its claims' outcomes.

Watching (holding the types' watch locks, docs/notify.md) is wanted once tasks
arrive faster than one per wake-up: a claim finds two or more, finds one less than
``start_gap_s`` after the last claim that found one, or follows straight on a claim
that filled every free slot (a backlog: the claims run back to back). Their producers' commits
then overlap, which is when NOTIFY is expensive (each notifying commit waits for the
one before); a slower trickle keeps notifying, which costs it little. Watching ends
after ``idle_after`` lean claims in a row: empty, or one task with slots to spare (a
trickle of one task per poll, ~200/s, which a NOTIFY serves faster than a poll). A
watcher whose slots stay full cannot claim what producers stop announcing, so every
``full_for_s`` while they stay full it hands off: one NOTIFY, for workers with room.
Times are on one monotonic clock, passed in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WatchPlan:
    idle_after: int  # empty claims in a row before going idle
    full_for_s: float  # slots full this long (so no claim): hand off with a NOTIFY
    start_gap_s: float = 0.002  # a claim that finds a task this soon after the last
    wanted: bool = False
    stopped: bool = False
    lean_claims: int = 0  # in a row: empty, or one task with slots to spare
    full_since: float | None = None
    last_found_at: float | None = None

    def claimed(self, count: int, free_slots: int, now: float, *, backlog: bool = False) -> None:
        """A claim returned ``count`` tasks and left ``free_slots`` slots free.

        ``backlog``: it followed a claim that came back full, with no wait between.
        """
        if self.stopped:
            return
        if self.wanted:
            lean = count < 2 and free_slots > 0 and not backlog
            self.lean_claims = self.lean_claims + 1 if lean else 0
            if self.lean_claims >= self.idle_after:
                self.wanted, self.lean_claims = False, 0
        if count == 0:
            self.full_since = None
            return
        previous, self.last_found_at = self.last_found_at, now
        soon = previous is not None and now - previous < self.start_gap_s
        if not self.wanted and count < 2 and not soon and not backlog:
            return  # one task per wake-up, and not in a hurry: NOTIFY is cheap here
        self.wanted = True
        if free_slots > 0:
            self.full_since = None
        elif self.full_since is None:
            self.full_since = now

    def handoff_due_s(self, now: float) -> float | None:
        """Seconds until the next hand-off (None: the slots are not full)."""
        if not self.wanted or self.full_since is None:
            return None
        return max(0.0, self.full_since + self.full_for_s - now)

    def handed_off(self, now: float) -> None:
        """A hand-off was sent; the next one is due a full period later."""
        self.full_since = now

    def stop(self) -> None:
        self.stopped, self.wanted, self.full_since = True, False, None
