"""Scheduled and limited handlers for the dashboard's schedules and limits tests
(`listener run --handlers tests.ui_schedule_handlers`)."""

from __future__ import annotations

import anyio

from listener import Task, handler


@handler("ui_digest", cron="0 8 * * *", cron_tz="Europe/Berlin")
async def ui_digest(task: Task) -> None:
    """A cron schedule in a time zone."""


@handler("ui_daily", every="24h")
async def ui_daily(task: Task) -> None:
    """A fixed interval."""


@handler("ui_yearly", cron="0 0 1 1 *")
async def ui_yearly(task: Task) -> None:
    """Once a year: a test registers it long ago, so this year's run is enqueued on start
    (and the next one is months away whenever the test runs)."""


@handler("ui_llm", global_concurrency=1, rate_limit="1/h")
async def ui_llm(task: Task) -> None:
    """Limited fleet-wide; runs until its worker is stopped, holding its slot."""
    await anyio.sleep_forever()
