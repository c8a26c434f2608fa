"""Engine pieces that need no database: the wake-up signal, claimed rows, health."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import anyio
import anyio.lowlevel
import pytest

from listener.errors import ConfigError
from listener.executor import task_from_row
from listener.wakeup import Wakeup
from listener.worker import Health, WorkerSettings


@pytest.mark.anyio
async def test_kicks_before_a_wait_count_as_one_wakeup() -> None:
    wakeup = Wakeup()
    wakeup.kick()
    wakeup.kick()
    assert await wakeup.wait(0) is True
    assert await wakeup.wait(0) is False


@pytest.mark.anyio
async def test_wait_returns_on_kick_from_another_task() -> None:
    wakeup = Wakeup()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_kick_soon, wakeup)
        assert await wakeup.wait(5) is True


async def _kick_soon(wakeup: Wakeup) -> None:
    await anyio.lowlevel.checkpoint()
    wakeup.kick()


def test_claimed_row_becomes_task_with_the_attempt_limit_fixed_at_claim() -> None:
    task_id = uuid.uuid4()
    now = datetime.now(UTC)
    row = (task_id, "t", '{"a": 1}', 2, None, now, now, 0, None, now, "w", 0.004, 7)
    task, pickup_delay_s, error = task_from_row(row, default_max_attempts=5)
    assert (task.id, task.attempt, task.max_attempts, pickup_delay_s) == (task_id, 2, 7, 0.004)
    assert task.payload == {"a": 1}  # the claim sends payload as text
    assert error is None
    unlimited = task_from_row((*row[:12], None), default_max_attempts=5)[0]
    assert unlimited.max_attempts == 5


def test_health_is_not_ready_until_database_and_listener_are_up() -> None:
    health = Health()
    assert health.ready() == (False, "database unreachable")
    health.db_ok = True
    assert health.ready() == (False, "LISTEN connection down")
    health.listening = True
    assert health.ready() == (True, "ok")


def test_health_reports_an_unresponsive_event_loop() -> None:
    health = Health(stale_after_s=1.0)
    health.loop_tick = time.monotonic() - 5
    alive, reason = health.alive()
    assert not alive
    assert reason.startswith("event loop unresponsive")


@pytest.mark.parametrize(
    "bad", [{"concurrency": 0}, {"lease_s": 0}, {"poll_interval_s": -1}, {"grace_s": -1}]
)
def test_worker_settings_reject_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        WorkerSettings(dsn="x", **bad)  # type: ignore[arg-type]
