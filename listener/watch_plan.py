"""When a worker watches its task types: a pure function of its claims' outcomes.

Watching (holding the types' watch locks, docs/notify.md) is wanted once tasks
arrive faster than ``watch_rate`` per second, counted over the claims of the last
``window_s`` (a rate, not the size of one claim: at 200 tasks/s two tasks often land
in one claim, and a 5 ms poll would then serve every later task slower than its
NOTIFY), or when a claim follows straight on one that filled every free slot (a
backlog: the claims run back to back). Above that rate producers' commits overlap,
which is when NOTIFY is expensive (each notifying commit waits for the one before);
a slower trickle keeps notifying, which costs it little. Watching ends after
``idle_after`` lean claims in a row: the rate below ``watch_rate`` with slots to
spare. A watcher whose slots stay full cannot claim what producers stop announcing,
so every ``full_for_s`` while they stay full it hands off: one NOTIFY, for workers
with room. Times are on one monotonic clock, passed in.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field


@dataclass
class WatchPlan:
    idle_after: int  # lean claims in a row before going idle
    full_for_s: float  # slots full this long (so no claim): hand off with a NOTIFY
    watch_rate: float  # tasks per second found ...
    window_s: float  # ... by the claims of this window (listener/watcher.py sets both)
    wanted: bool = False
    stopped: bool = False
    lean_claims: int = 0  # in a row: below the rate, with slots to spare
    full_since: float | None = None
    _found: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)
    _found_in_window: int = 0

    def claimed(self, count: int, free_slots: int, now: float, *, backlog: bool = False) -> None:
        """A claim returned ``count`` tasks and left ``free_slots`` slots free.

        ``backlog``: it followed a claim that came back full, with no wait between.
        """
        if self.stopped:
            return
        fast = self._count(count, now) >= self.watch_rate * self.window_s
        if self.wanted:
            lean = not fast and free_slots > 0 and not backlog
            self.lean_claims = self.lean_claims + 1 if lean else 0
            if self.lean_claims >= self.idle_after:
                self.wanted, self.lean_claims = False, 0
        if count == 0:
            self.full_since = None
            return
        if not self.wanted and not fast and not backlog:
            return  # a trickle, served sooner by its NOTIFY than by a poll
        self.wanted = True
        if free_slots > 0:
            self.full_since = None
        elif self.full_since is None:
            self.full_since = now

    def _count(self, count: int, now: float) -> int:
        """Tasks found by the claims of the last ``window_s``, this one included."""
        if count:
            self._found.append((now, count))
            self._found_in_window += count
        while self._found and self._found[0][0] <= now - self.window_s:
            self._found_in_window -= self._found.popleft()[1]
        return self._found_in_window

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
