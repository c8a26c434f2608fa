"""The scheduler: enqueues one task per scheduled instant, fleet-wide, on the database clock.

Every worker runs one for the scheduled types it handles (``--types`` included). It
sleeps until the next instant by the database's ``clock_timestamp()``, not its own
clock, then enqueues that instant's task unless another worker already did
(store.schedules.enqueue_instant moves the schedule's last instant forward in the
statement that inserts the task). A run missed while no worker was up is enqueued
once on start when it is less than one interval late; older ones are skipped and
logged. It also publishes this worker's limits and schedules for ``listener status``.
Database errors are logged, counted and retried with backoff: never fatal.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import anyio
from psycopg_pool import AsyncConnectionPool

from listener.logs import get_logger
from listener.metrics import Metrics
from listener.registry import HandlerSpec
from listener.schedules import Schedule
from listener.store import schedules as store

log = get_logger("listener.scheduler")

# Woken this long after an instant, so the database clock has surely passed it.
WAKE_AFTER_S = 0.002
# Even with nothing due for a day: wake to re-read the database clock and re-publish.
MAX_SLEEP_S = 30.0
# Re-published this often: the presence loop re-creates a swept row with defaults.
PUBLISH_INTERVAL_S = 10.0
BACKOFF_BASE_S, BACKOFF_MAX_S = 0.5, 30.0


class Scheduler:
    """Fire this worker's schedules; publish its limits and schedules. ``await run()``."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        worker_id: str,
        specs: Sequence[HandlerSpec],
        metrics: Metrics,
    ) -> None:
        self._pool = pool
        self._worker_id = worker_id
        self._metrics = metrics
        self.schedules: dict[str, Schedule] = {
            s.type: s.options.schedule for s in specs if s.options.schedule is not None
        }
        self.limits = {s.type: _limits_json(s) for s in specs if _limits_json(s)}
        self._baselines: dict[str, datetime] | None = None  # None: not registered yet
        self._failures = 0
        self._publish_due = 0.0
        self._started = False

    async def run(self) -> None:
        if not self.schedules and not self.limits:
            return
        while True:
            try:
                delay_s = await self.run_once()
                self._failures = 0
            except Exception as exc:  # never take the worker down; cancellation passes
                delay_s = self._backoff_s()
                self._metrics.scheduler_failed()
                log.warning("scheduler.failed", error=_one_line(exc), retry_in_s=round(delay_s, 3))
            await anyio.sleep(delay_s)

    async def run_once(self) -> float:
        """One pass: publish, enqueue what is due; return the seconds to sleep."""
        async with self._pool.connection() as conn:
            now = await store.database_now(conn)
            if self._baselines is None:
                self._baselines = await self._register(conn, now)
            if anyio.current_time() >= self._publish_due:
                await store.publish_worker(
                    conn, self._worker_id, self.limits,
                    {t: s.as_json() for t, s in self.schedules.items()},
                )  # fmt: skip
                self._publish_due = anyio.current_time() + PUBLISH_INTERVAL_S
            for task_type, schedule in self.schedules.items():
                await self._enqueue_due(conn, task_type, schedule, now)
        if not self._started:  # registered, published, missed runs caught up
            self._started = True
            described = {t: s.description for t, s in self.schedules.items()}
            log.info("scheduler.started", schedules=described, limits=self.limits)
        upcoming = {t: s.next_after(now) for t, s in self.schedules.items()}
        for task_type, instant in upcoming.items():
            self._metrics.schedule_next_run(task_type, instant.timestamp())
        if not upcoming:
            return MAX_SLEEP_S
        return min((min(upcoming.values()) - now).total_seconds() + WAKE_AFTER_S, MAX_SLEEP_S)

    async def _register(self, conn: store.Conn, now: datetime) -> dict[str, datetime]:
        """Create or refresh this worker's schedules' rows; their baselines."""
        await store.register_schedules(
            conn,
            {t: s.description for t, s in self.schedules.items()},
            {t: s.next_after(now) for t, s in self.schedules.items()},
        )
        return await store.baselines(conn, list(self.schedules))

    async def _enqueue_due(
        self, conn: store.Conn, task_type: str, schedule: Schedule, now: datetime
    ) -> None:
        assert self._baselines is not None
        baseline = self._baselines.get(task_type)
        # The latest instant at or before now is less than one interval late (the
        # next one is still ahead): it runs, however late. Any older one not yet
        # enqueued is a whole interval late or more: skipped, and logged below.
        instant = schedule.latest_at_or_before(now)
        if baseline is not None and instant <= baseline:
            return  # this instant (or a later one) was enqueued already
        following = schedule.next_after(instant)
        enqueued = await store.enqueue_instant(conn, task_type, instant, following)
        self._baselines[task_type] = instant
        if enqueued is None:
            log.debug(
                "schedule.already_enqueued", type=task_type, scheduled_for=instant.isoformat()
            )
            return
        task_id, previous = enqueued
        self._metrics.schedule_enqueued(task_type)
        log.info(
            "schedule.enqueued", type=task_type, task_id=str(task_id),
            scheduled_for=instant.isoformat(), late_s=round((now - instant).total_seconds(), 3),
        )  # fmt: skip
        older = schedule.latest_at_or_before(instant - timedelta(microseconds=1))
        if older > previous:  # runs between the last one and this were never enqueued
            first = schedule.next_after(previous)
            self._skipped(task_type, first, older, now)

    def _skipped(self, task_type: str, first: datetime, last: datetime, now: datetime) -> None:
        self._metrics.schedule_skipped(task_type)
        log.warning(
            "schedule.missed_runs_skipped", type=task_type,
            first_skipped=first.isoformat(), last_skipped=last.isoformat(),
            late_s=round((now - last).total_seconds(), 3),
        )  # fmt: skip

    def _backoff_s(self) -> float:
        self._failures += 1
        ceiling = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** (self._failures - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def _limits_json(spec: HandlerSpec) -> dict[str, Any]:
    options = spec.options
    if options.global_concurrency is None and options.rate_limit is None:
        return {}
    rate = options.rate_limit
    return {
        "global_concurrency": options.global_concurrency,
        "rate_limit": None if rate is None else rate.as_json(),
    }


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
