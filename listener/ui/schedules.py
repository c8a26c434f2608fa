"""The schedules and limits page and ``GET /api/schedules``: one shape for both.

The numbers are `listener status`'s (listener.store.schedules computes them for
both); the page adds the pending tasks of each limited type, when a throttled
type's next slot opens, and the status of each schedule's last task.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from listener.schedules import from_description
from listener.store import ui as store
from listener.store.schedules import LimitStatus, ScheduleStatus
from listener.ui.app import state_of
from listener.ui.pages import render
from listener.ui.views import json_value

PER_WINDOW = {1: "second", 60: "minute", 3600: "hour"}


def routes() -> list[BaseRoute]:
    return [
        Route("/schedules", page, name="schedules"),
        Route("/api/schedules", api, name="api_schedules"),
    ]


async def page(request: Request) -> Response:
    data = await _read(request)
    return render(request, "schedules.html", {"data": data, "now": data["now"], "per": PER_WINDOW})


async def api(request: Request) -> Response:
    return JSONResponse(await _read(request))


async def _read(request: Request) -> dict[str, Any]:
    found = await state_of(request).database.run(store.read_schedules_and_limits)
    return schedules_and_limits(found)


def schedules_and_limits(found: store.SchedulesAndLimits) -> dict[str, Any]:
    """The page's data, JSON-ready (also what the template renders)."""
    return {
        "now": found.now.isoformat(),
        "schedules": [_schedule(s, found.last_run_status) for s in found.schedules],
        "limits": [_limit(limit, found.pending.get(limit.type, (0, 0))) for limit in found.limits],
    }


def _schedule(s: ScheduleStatus, last_run_status: dict[Any, str]) -> dict[str, Any]:
    """`listener status --json`'s keys for a schedule, and what the page adds."""
    parsed = from_description(s.schedule)
    cron = parsed.cron if parsed else None
    return {
        **s.as_json(),
        "cron": cron,
        "every_s": parsed.every_s if parsed else None,
        "time_zone": parsed.tz if parsed and cron is not None else None,
        # None: no last task, or it was pruned since
        "last_task_status": last_run_status.get(s.last_task_id) if s.last_task_id else None,
        "workers": list(s.workers),
    }


def _limit(limit: LimitStatus, pending: tuple[int, int]) -> dict[str, Any]:
    """`listener status --json`'s keys for a limited type, and what the page adds."""
    return {
        **limit.as_json(),
        "at_concurrency_limit": limit.global_concurrency is not None
        and limit.running >= limit.global_concurrency,
        "throttled": limit.next_slot_at is not None,
        "next_slot_at": json_value(limit.next_slot_at),
        "pending": pending[0],
        "pending_due": pending[1],
    }
