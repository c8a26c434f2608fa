"""Scheduled and limited handlers for the schedules tests (worker subprocesses load them)."""

from __future__ import annotations

import os

from listener import PermanentError, Task, handler


@handler("every_second", every="1s")
async def every_second(task: Task) -> None:
    """Fails at once while SCHEDULE_TEST_FAIL is set, so `listener retry` has work."""
    if os.environ.get("SCHEDULE_TEST_FAIL"):
        raise PermanentError(f"failing on purpose for {task.payload['scheduled_for']}")


@handler("new_year", cron="0 0 1 1 *")
async def new_year(task: Task) -> None:
    """Once a year: its missed runs are years apart, so a test can place them exactly."""


@handler("limited", global_concurrency=2, rate_limit="5/s")
async def limited(task: Task) -> None:
    """Limited fleet-wide by its decorator."""
