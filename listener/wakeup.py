"""A level-triggered wake-up signal: many kicks before a wait count as one."""

from __future__ import annotations

import anyio


class Wakeup:
    """The dispatcher sleeps on this; notifications, freed slots and timers kick it."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def kick(self) -> None:
        self._event.set()

    async def wait(self, timeout_s: float | None) -> bool:
        """Wait for a kick (True) or the timeout (False); consumes the kick."""
        if not self._event.is_set():
            with anyio.move_on_after(timeout_s):
                await self._event.wait()
        kicked = self._event.is_set()
        if kicked:
            self._event = anyio.Event()
        return kicked
