"""The race the protocol exists for: producers committing while the worker goes idle.

Many producers insert in rounds against one worker that polls every 60 s; each round
ends only when every task of the round has been picked up, so a lost wake-up is not
hidden by the next round's NOTIFY: the round waits, and fails. Producers hold some
transactions open after their INSERT, so commits land while the worker passes the
gate. The worker is made to go idle after one lean claim (instead of three), and to
watch from two tasks within 2 ms, so that it goes idle thousands of times in the time
CI can give this test; the protocol is the same (the claims before the last one only
delay it).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import anyio
import psycopg
import pytest

from listener import watcher as watcher_module
from tests.integration.engine_support import running_worker
from tests.integration.wake_support import (
    Rounds,
    noop_registry,
    p99,
    pickup_delays_s,
    race,
    sample,
    watch_from_two_tasks,
    watch_idle_cycles,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PRODUCERS = 8
# CI runs the full race once, in the pass with the tool tests, and a short one in the
# other pass; it stops early once the worker has gone idle TARGET_IDLE_CYCLES times.
FULL = os.environ.get("LISTENER_TEST_TOOLS") != "0"
SECONDS = float(os.environ.get("LISTENER_TEST_RACE_S", "40" if FULL else "8"))
TARGET_IDLE_CYCLES = 2000
MIN_IDLE_CYCLES = 1000 if FULL else 150  # what a loaded 2-core machine still reaches


async def test_no_wake_up_is_lost_while_producers_race_a_worker_going_idle(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watcher_module, "IDLE_AFTER_LEAN_CLAIMS", 1)
    watch_from_two_tasks(monkeypatch)
    seen: set[uuid.UUID] = set()
    rounds = Rounds(dsn, PRODUCERS)
    for thread in rounds.threads:
        thread.start()
    async with running_worker(dsn, noop_registry("t", seen=seen), poll_interval_s=60.0) as w:
        try:
            played = await race(w, rounds, seen, SECONDS, stop_after_idle=TARGET_IDLE_CYCLES)
        finally:
            await anyio.to_thread.run_sync(rounds.close)
        idle_cycles = watch_idle_cycles(w)
        caught = sample(w, "listener_watch_final_claimed_total")
        notified = sample(w, "listener_notifications_total")
    delays = pickup_delays_s(conn, rounds.committed)
    summary = (
        f"{played} rounds, {len(delays)} tasks, {idle_cycles:.0f} idle cycles, "
        f"{caught:.0f} tasks found by the claim after a gate, {notified:.0f} notifications, "
        f"pickup p99 {p99(delays) * 1000:.1f} ms, max {delays[-1] * 1000:.1f} ms"
    )
    print(summary)
    assert idle_cycles >= MIN_IDLE_CYCLES, summary
    assert caught > 0, summary  # commits did land while the worker went idle
    assert p99(delays) < 0.05, summary
