"""The schedules' SQL and the scheduler's pass: an instant is enqueued once however many
workers race for it, the scheduler sleeps until the next instant, and `listener status`
reads limits and schedules from what workers publish."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool

from listener.metrics import Metrics
from listener.models import Task
from listener.registry import Registry, handler
from listener.scheduler import MAX_SLEEP_S, WAKE_AFTER_S, Scheduler
from listener.store import schedules as store
from tests.integration.support import run_cli

pytestmark = pytest.mark.integration

INSTANT = datetime(2030, 1, 1, 8, tzinfo=UTC)


def _register(conn: psycopg.Connection[Any], task_type: str = "digest") -> None:
    conn.execute(
        "INSERT INTO listener.schedules (type, schedule, registered_at) "
        "VALUES (%s, 'cron 0 8 * * * (UTC)', %s)",
        (task_type, INSTANT - timedelta(days=3)),
    )


def _tasks(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT type, payload, run_at FROM tasks ORDER BY run_at").fetchall()


@pytest.mark.anyio
async def test_a_worker_racing_for_an_enqueued_instant_waits_then_inserts_nothing(
    dsn: str, conn: psycopg.Connection[Any], anyio_backend: str
) -> None:
    _register(conn)
    following = INSTANT + timedelta(days=1)
    first = await psycopg.AsyncConnection.connect(dsn)
    second = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    results: list[Any] = []

    async def race() -> None:
        results.append(await store.enqueue_instant(second, "digest", INSTANT, following))

    async with first, second, anyio.create_task_group() as tg:
        won = await store.enqueue_instant(first, "digest", INSTANT, following)  # not committed
        tg.start_soon(race)
        await anyio.sleep(0.3)
        assert results == []  # the second worker waits on the schedule's row...
        await first.commit()
    assert won is not None
    assert won[1] == INSTANT - timedelta(days=3)  # the baseline: when it was registered
    assert results == [None]  # ...then finds the instant taken
    assert _tasks(conn) == [("digest", {"scheduled_for": "2030-01-01T08:00:00+00:00"}, INSTANT)]


@pytest.mark.anyio
async def test_an_instant_older_than_the_last_enqueued_is_never_enqueued(
    dsn: str, conn: psycopg.Connection[Any], anyio_backend: str
) -> None:
    _register(conn)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
        later = INSTANT + timedelta(days=1)
        assert await store.enqueue_instant(aconn, "digest", later, later + timedelta(days=1))
        assert await store.enqueue_instant(aconn, "digest", INSTANT, later) is None
        assert await store.enqueue_instant(aconn, "digest", later, later) is None
        assert await store.enqueue_instant(aconn, "unregistered", later, later) is None
    assert [run_at for _, _, run_at in _tasks(conn)] == [later]
    row = conn.execute(
        "SELECT last_enqueued_for, next_run_at FROM listener.schedules WHERE type = 'digest'"
    ).fetchone()
    assert row == (later, later + timedelta(days=1))


def _worker(conn: psycopg.Connection[Any], name: str, limits: Any, schedules: Any) -> None:
    conn.execute(
        "INSERT INTO listener.workers (id, hostname, pid, types, concurrency, limits, schedules) "
        "VALUES (%s, 'h', 1, '{}', 10, %s, %s)",
        (name, json.dumps(limits), json.dumps(schedules)),
    )


def _task(conn: psycopg.Connection[Any], status: str, started: str | None, **ago: str) -> None:
    """An ``llm`` task in ``status``, started ``started`` ago (an interval; None: never)."""
    conn.execute(
        "INSERT INTO tasks (type, status, started_at, lease_expires_at, completed_at, run_at) "
        "VALUES ('llm', %s, now() - %s::interval, now() + %s::interval, "
        "now() - %s::interval, now() + coalesce(%s::interval, '0s'))",
        (status, started, ago.get("lease"), ago.get("completed"), ago.get("run_at")),
    )


def test_status_shows_running_against_the_limit_and_starts_in_the_rate_window(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    limits = {"llm": {"global_concurrency": 4, "rate_limit": {"count": 30, "window_s": 60}}}
    _worker(conn, "w1", limits, {})
    _worker(conn, "w2", limits, {})
    _task(conn, "processing", "5s", lease="20s")  # running
    _task(conn, "processing", "50s", lease="10s")  # running
    _task(conn, "processing", "90s", lease="-30s")  # lease expired: not running, not in window
    _task(conn, "processing", "10s", lease="-1s")  # lease expired: not running, in window
    _task(conn, "completed", "30s", completed="29s")  # started in the window
    _task(conn, "completed", "2 min", completed="119s")  # before the window
    _task(conn, "pending", "20s", run_at="1 min")  # retrying: started in the window
    _task(conn, "pending", None)  # never started

    status = json.loads(run_cli("status", "--json", "--dsn", dsn).stdout)
    assert status["limits"] == [
        {
            "type": "llm", "running": 2, "global_concurrency": 4,
            "global_concurrency_varies": False, "rate_limit": "30/m", "rate_limit_count": 30,
            "rate_limit_window_s": 60, "rate_limit_varies": False, "started_in_window": 5,
        }
    ]  # fmt: skip
    text = run_cli("status", "--dsn", dsn).stdout
    assert (
        "limits (fleet-wide, as live workers run them):\n  llm  running 2/4  rate 5/30 per minute"
        in text
    )


def test_status_shows_the_strictest_limit_when_live_workers_disagree(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    _worker(conn, "old", {"llm": {"global_concurrency": 8, "rate_limit": None}}, {})
    _worker(
        conn, "new",
        {"llm": {"global_concurrency": 4, "rate_limit": {"count": 1, "window_s": 1}}}, {},
    )  # fmt: skip
    conn.execute(
        "INSERT INTO listener.workers (id, hostname, pid, types, concurrency, limits, last_seen_at)"
        " VALUES ('gone', 'h', 1, '{}', 1, '{\"llm\": {\"global_concurrency\": 1}}', "
        "now() - interval '1 hour')"
    )  # a dead worker's limits don't count
    (limit,) = json.loads(run_cli("status", "--json", "--dsn", dsn).stdout)["limits"]
    assert (limit["global_concurrency"], limit["global_concurrency_varies"]) == (4, True)
    assert (limit["rate_limit"], limit["rate_limit_varies"]) == ("1/s", False)
    text = run_cli("status", "--dsn", dsn).stdout
    assert "running 0/4 (workers disagree: the strictest shown)  rate 0/1 per second" in text


def test_status_shows_each_schedules_last_and_next_run_and_whether_it_still_runs(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(
        "INSERT INTO listener.schedules (type, schedule, last_enqueued_for, next_run_at) VALUES "
        "('digest', 'cron 0 8 * * * (Europe/Berlin)', '2030-01-01 07:00+00', "
        "'2030-01-02 07:00+00'), ('old_ping', 'every 15s', NULL, '2029-01-01 00:00+00')"
    )
    _worker(conn, "w1", {}, {"digest": {"cron": "0 8 * * *", "tz": "Europe/Berlin"}})
    status = json.loads(run_cli("status", "--json", "--dsn", dsn).stdout)
    assert [
        (s["type"], s["active"], s["last_run"], s["next_run"]) for s in status["schedules"]
    ] == [
        ("digest", True, "2030-01-01T07:00:00+00:00", "2030-01-02T07:00:00+00:00"),
        ("old_ping", False, None, None),
    ]
    text = run_cli("status", "--dsn", dsn).stdout
    assert (
        "schedules:\n"
        "  digest    cron 0 8 * * * (Europe/Berlin)  last 2030-01-01 07:00:00Z  "
        "next 2030-01-02 07:00:00Z\n"
        "  old_ping  every 15s                       last never  next none: no live worker runs it"
    ) in text


def test_status_of_a_fleet_without_limits_or_schedules_says_nothing_about_them(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    _worker(conn, "w1", {}, {})
    status = json.loads(run_cli("status", "--json", "--dsn", dsn).stdout)
    assert (status["limits"], status["schedules"]) == ([], [])
    text = run_cli("status", "--dsn", dsn).stdout
    assert "limits" not in text
    assert "schedules" not in text


def _scheduler(pool: AsyncConnectionPool[Any], **options: Any) -> Scheduler:
    registry = Registry()

    @handler("scheduled", registry=registry, **options)
    async def scheduled(task: Task) -> None:
        return None

    spec = registry.get("scheduled")
    assert spec is not None
    return Scheduler(pool, "w1", [spec], Metrics(CollectorRegistry()))


@pytest.mark.anyio
async def test_scheduler_sleeps_until_the_next_instant_by_the_database_clock(
    dsn: str, conn: psycopg.Connection[Any], anyio_backend: str
) -> None:
    async with AsyncConnectionPool(dsn, kwargs={"autocommit": True}, min_size=1) as pool:
        yearly = _scheduler(pool, cron="0 0 1 1 *")
        assert await yearly.run_once() == MAX_SLEEP_S  # nothing for weeks: re-check in 30 s
        conn.execute("DELETE FROM listener.schedules")

        every_second = _scheduler(pool, every="1s")
        delay_s = await every_second.run_once()
        woke_at = _db_now_s(conn) + delay_s
        assert 0 < delay_s <= 1 + WAKE_AFTER_S
        assert woke_at % 1 < 0.25  # just after a whole second of the database's clock
        await anyio.sleep(delay_s)
        assert await every_second.run_once() <= 1 + WAKE_AFTER_S
    (count,) = conn.execute("SELECT count(*) FROM tasks").fetchone() or (0,)
    assert count == 1  # the instant it woke for, once


def _db_now_s(conn: psycopg.Connection[Any]) -> float:
    row = conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
    assert row is not None
    return float(row[0])
