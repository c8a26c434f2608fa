"""Schedules with real worker processes: one task per instant fleet-wide, missed runs, --types.

Handlers: tests/schedule_handlers.py. Uniqueness is read from the database: every
instant's task carries ``{"scheduled_for": ISO}`` and must appear exactly once.
"""

from __future__ import annotations

import glob
import itertools
import json
import signal
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from listener import create_task
from tests.integration.engine_support import ROOT, WorkerProcess, free_port, wait_until
from tests.integration.support import run_cli
from tests.integration.test_readme_commands import _readme_block
from tests.tools import require_tool

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HANDLERS = ("--handlers", "tests.schedule_handlers")


def _db_now(conn: psycopg.Connection[Any]) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def _instants(conn: psycopg.Connection[Any], task_type: str) -> list[tuple[datetime, int]]:
    """(scheduled_for, how many tasks carry it), oldest first."""
    rows = conn.execute(
        "SELECT (payload->>'scheduled_for')::timestamptz, count(*) FROM tasks "
        "WHERE type = %s GROUP BY 1 ORDER BY 1",
        (task_type,),
    ).fetchall()
    return [(when, int(n)) for when, n in rows]


def _started(dsn: str, count: int, *args: str, **kw: Any) -> list[WorkerProcess]:
    workers = [WorkerProcess(dsn, *HANDLERS, *args, **kw) for _ in range(count)]
    for w in workers:
        w.wait_started()
    for w in workers:  # registered, published, missed runs caught up
        wait_until(partial(_has_started_scheduling, w), timeout_s=20)
    return workers


def _has_started_scheduling(worker: WorkerProcess) -> bool:
    return b'"scheduler.started"' in worker.log()


def _stop(workers: list[WorkerProcess]) -> None:
    for w in workers:
        w.signal(signal.SIGTERM)
    for w in workers:
        assert w.wait(30) == 0, w.log().decode()
        w.stop()


@pytest.fixture
def processes() -> Iterator[list[WorkerProcess]]:
    """Worker processes a test started; killed at the end if still running."""
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.stop()


def _log_events(worker: WorkerProcess, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith(b"{")]
    return [line for line in lines if line.get("event") == event]


def test_every_second_with_three_workers_enqueues_each_instant_exactly_once(
    dsn: str, conn: psycopg.Connection[Any], processes: list[WorkerProcess]
) -> None:
    processes += _started(dsn, 3, "--types", "every_second")
    begin = _db_now(conn)
    wait_until(lambda: _db_now(conn) >= begin + timedelta(seconds=6), timeout_s=15)
    end = _db_now(conn)
    wait_until(  # they ran like any task
        lambda: conn.execute(
            "SELECT bool_and(status = 'completed') FROM tasks WHERE type = 'every_second' "
            "AND (payload->>'scheduled_for')::timestamptz <= %s", (end,),
        ).fetchone() == (True,),
        timeout_s=10,
    )  # fmt: skip
    _stop(processes)

    instants = _instants(conn, "every_second")
    assert [when for when, n in instants if n > 1] == []  # never two tasks for one instant
    during = [when for when, _ in instants if begin < when <= end]
    assert 5 <= len(during) <= 7, during
    # One per whole second, none missing in between: each instant, exactly once.
    assert [b - a for a, b in itertools.pairwise(during)] == [timedelta(seconds=1)] * (
        len(during) - 1
    )
    assert all(when.microsecond == 0 for when in during)


def test_restarting_every_worker_enqueues_no_instant_twice(
    dsn: str, conn: psycopg.Connection[Any], processes: list[WorkerProcess]
) -> None:
    first = _started(dsn, 3, "--types", "every_second")
    processes += first
    wait_until(lambda: len(_instants(conn, "every_second")) >= 2, timeout_s=10)
    _stop(first)
    before = _instants(conn, "every_second")

    second = _started(dsn, 3, "--types", "every_second")
    processes += second
    last_before = before[-1][0]
    wait_until(
        lambda: len([w for w, _ in _instants(conn, "every_second") if w > last_before]) >= 3,
        timeout_s=15,
    )
    _stop(second)
    after = _instants(conn, "every_second")
    assert [when for when, n in after if n > 1] == []
    assert after[: len(before)] == before  # nothing re-enqueued from before the restart


def _schedule_row(conn: psycopg.Connection[Any], task_type: str, last: datetime) -> None:
    conn.execute(
        "INSERT INTO listener.schedules (type, schedule, registered_at, last_enqueued_for) "
        "VALUES (%s, 'cron 0 0 1 1 * (UTC)', %s, %s)",
        (task_type, last - timedelta(days=1), last),
    )


def test_a_missed_run_is_enqueued_once_on_start_and_older_ones_are_skipped_and_logged(
    dsn: str, conn: psycopg.Connection[Any], processes: list[WorkerProcess]
) -> None:
    # new_year fires at 00:00 UTC on January 1st. It last ran three years ago and no
    # worker ran since: this year's run is less than one interval (a year) late,
    # the two before it are more than a year late.
    year = _db_now(conn).year
    _schedule_row(conn, "new_year", datetime(year - 3, 1, 1, tzinfo=UTC))

    (worker,) = _started(dsn, 1, "--types", "new_year")
    processes.append(worker)
    wait_until(lambda: _instants(conn, "new_year"), timeout_s=10)
    assert _instants(conn, "new_year") == [(datetime(year, 1, 1, tzinfo=UTC), 1)]
    (skipped,) = _log_events(worker, "schedule.missed_runs_skipped")
    assert skipped["type"] == "new_year"
    assert skipped["first_skipped"] == datetime(year - 2, 1, 1, tzinfo=UTC).isoformat()
    assert skipped["last_skipped"] == datetime(year - 1, 1, 1, tzinfo=UTC).isoformat()
    (enqueued,) = _log_events(worker, "schedule.enqueued")
    assert enqueued["scheduled_for"] == datetime(year, 1, 1, tzinfo=UTC).isoformat()

    _stop([worker])  # a worker starting later finds this year's run done
    (again,) = _started(dsn, 1, "--types", "new_year")
    processes.append(again)
    assert _instants(conn, "new_year") == [(datetime(year, 1, 1, tzinfo=UTC), 1)]
    assert _log_events(again, "schedule.enqueued") == []
    assert _log_events(again, "schedule.missed_runs_skipped") == []


def test_a_new_schedule_does_not_run_the_instant_before_it_was_registered(
    dsn: str, conn: psycopg.Connection[Any], processes: list[WorkerProcess]
) -> None:
    processes += _started(dsn, 1, "--types", "new_year")
    assert _instants(conn, "new_year") == []
    row = conn.execute(
        "SELECT schedule, last_enqueued_for, next_run_at FROM listener.schedules "
        "WHERE type = 'new_year'"
    ).fetchone()
    year = _db_now(conn).year
    assert row == ("cron 0 0 1 1 * (UTC)", None, datetime(year + 1, 1, 1, tzinfo=UTC))


def test_a_worker_without_the_type_does_not_schedule_it_and_an_unrun_schedule_stops(
    dsn: str, conn: psycopg.Connection[Any], processes: list[WorkerProcess]
) -> None:
    (scheduling,) = _started(dsn, 1, "--types", "every_second")
    processes.append(scheduling)
    other = WorkerProcess(dsn, *HANDLERS, "--types", "noop")
    processes.append(other)
    other.wait_started()
    wait_until(lambda: len(_instants(conn, "every_second")) >= 2, timeout_s=10)

    _stop([scheduling])
    stopped_at = _db_now(conn)
    # Absence takes a wait: three of its instants pass with only `other` running.
    wait_until(lambda: _db_now(conn) >= stopped_at + timedelta(seconds=3), timeout_s=10)
    assert [w for w, _ in _instants(conn, "every_second") if w > stopped_at] == []
    assert _log_events(other, "scheduler.started") == []
    published = conn.execute(
        "SELECT limits, schedules FROM listener.workers WHERE pid = %s", (other.proc.pid,)
    ).fetchone()
    assert published == ({}, {})

    status = json.loads(run_cli("status", "--json", "--dsn", dsn).stdout)
    (every_second,) = [s for s in status["schedules"] if s["type"] == "every_second"]
    assert (every_second["active"], every_second["next_run"]) == (False, None)
    assert every_second["last_run"] is not None


def test_a_retried_scheduled_task_keeps_its_instant_and_no_instant_is_doubled(
    dsn: str, conn: psycopg.Connection[Any], processes: list[WorkerProcess]
) -> None:
    failing = _started(dsn, 1, "--types", "every_second", env={"SCHEDULE_TEST_FAIL": "1"})
    processes += failing
    wait_until(
        lambda: conn.execute(
            "SELECT count(*) >= 2 FROM tasks WHERE type = 'every_second' AND status = 'failed'"
        ).fetchone() == (True,),
        timeout_s=10,
    )  # fmt: skip
    _stop(failing)
    failed = dict(
        conn.execute(
            "SELECT id, payload->>'scheduled_for' FROM tasks "
            "WHERE type = 'every_second' AND status = 'failed'"
        ).fetchall()
    )
    retried = run_cli("retry", "--type", "every_second", "--dsn", dsn)
    assert retried.returncode == 0, retried.stderr

    processes += _started(dsn, 1, "--types", "every_second")
    wait_until(
        lambda: conn.execute(
            "SELECT bool_and(status = 'completed') FROM tasks WHERE id = ANY(%s)", (list(failed),)
        ).fetchone() == (True,),
        timeout_s=15,
    )  # fmt: skip
    rerun = dict(
        conn.execute(
            "SELECT id, payload->>'scheduled_for' FROM tasks WHERE id = ANY(%s)", (list(failed),)
        ).fetchall()
    )
    assert rerun == failed  # the same tasks, the same instants
    assert [when for when, n in _instants(conn, "every_second") if n > 1] == []


def _metric(port: int, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return None


def test_scheduler_survives_database_errors_and_resumes(
    dsn: str, conn: psycopg.Connection[Any], processes: list[WorkerProcess]
) -> None:
    port = free_port()
    (worker,) = _started(dsn, 1, "--types", "every_second", "noop", "--metrics-port", str(port))
    processes.append(worker)
    wait_until(lambda: _instants(conn, "every_second"), timeout_s=10)
    conn.execute("ALTER TABLE listener.schedules RENAME TO schedules_away")
    wait_until(lambda: len(_log_events(worker, "scheduler.failed")) >= 2, timeout_s=15)
    broken_at = _db_now(conn)

    task_id = create_task("noop", {}, conn=conn)  # the worker still works
    wait_until(
        lambda: (
            conn.execute("SELECT status FROM tasks WHERE id = %s", (task_id,)).fetchone()
            == ("completed",)
        ),
        timeout_s=10,
    )
    conn.execute("ALTER TABLE listener.schedules_away RENAME TO schedules")
    wait_until(
        lambda: [w for w, _ in _instants(conn, "every_second") if w > broken_at], timeout_s=40
    )
    assert worker.proc.poll() is None
    (failure, *_) = _log_events(worker, "scheduler.failed")
    assert failure["error"].startswith("UndefinedTable: ")
    errors = _metric(port, "listener_scheduler_errors_total")
    assert errors is not None
    assert errors >= 2
    next_run = _metric(port, 'listener_schedule_next_run_timestamp_seconds{type="every_second"}')
    assert next_run is not None
    assert next_run > broken_at.timestamp()
    assert [when for when, n in _instants(conn, "every_second") if n > 1] == []


def test_workers_publish_effective_limits_and_schedules_for_status(
    dsn: str, conn: psycopg.Connection[Any], processes: list[WorkerProcess]
) -> None:
    processes += _started(
        dsn, 1, "--types", "limited", "every_second", "--limit", "limited=global:3"
    )
    wait_until(lambda: _instants(conn, "every_second"), timeout_s=10)
    result = run_cli("status", "--json", "--dsn", dsn)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    (limited,) = status["limits"]
    assert limited["type"] == "limited"
    assert (limited["global_concurrency"], limited["rate_limit"]) == (3, "5/s")  # flag, decorator
    (every_second,) = status["schedules"]
    assert every_second["schedule"] == "every 1s"
    assert every_second["active"] is True
    assert every_second["last_run"] < every_second["next_run"]
    text = run_cli("status", "--dsn", dsn).stdout
    assert "limited  running 0/3  rate " in text
    assert "every_second  every 1s  last " in text


def _libfaketime() -> str:
    require_tool("faketime")
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    assert found, "faketime is installed but libfaketime.so.1 is not where Debian puts it"
    return found[0]


def test_a_worker_whose_clock_is_ahead_fires_on_the_database_clock(
    dsn: str, conn: psycopg.Connection[Any], processes: list[WorkerProcess]
) -> None:
    # libfaketime sets the worker's wall clock 20 s ahead (its monotonic clock, which
    # anyio sleeps on, is left alone). Instants still come from the database's clock:
    # each task is enqueued just after its instant, never 20 s early.
    env = {"LD_PRELOAD": _libfaketime(), "FAKETIME": "+20s", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    (worker,) = _started(dsn, 1, "--types", "every_second", env=env)
    processes.append(worker)
    (started,) = _log_events(worker, "scheduler.started")
    skew = datetime.fromisoformat(started["timestamp"]) - _db_now(conn)
    assert timedelta(seconds=15) < skew < timedelta(seconds=25)  # the worker's clock is off
    wait_until(lambda: len(_instants(conn, "every_second")) >= 3, timeout_s=10)
    late_s = [
        float(late)
        for (late,) in conn.execute(
            "SELECT extract(epoch FROM created_at - run_at) FROM tasks WHERE type = 'every_second'"
        )
    ]
    assert all(0 <= late < 0.5 for late in late_s), late_s


def _readme_module(tmp_path: Path, key: str) -> str:
    """Write the README's snippet headed ``# myapp/NAME.py`` as a module; its name."""
    source = _readme_block(key)
    path = tmp_path / key.removeprefix("# ")
    path.parent.mkdir(exist_ok=True)
    (path.parent / "__init__.py").write_text("")
    path.write_text(source)
    return ".".join(path.relative_to(tmp_path).with_suffix("").parts)


def test_readme_schedules_example_registers_both_schedules_in_a_real_worker(
    dsn: str, conn: psycopg.Connection[Any], processes: list[WorkerProcess], tmp_path: Path
) -> None:
    module = _readme_module(tmp_path, "# myapp/periodic.py")
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    processes += _started(dsn, 1, "--handlers", module, "--types", "nightly_digest",
                          "heartbeat_ping", env=env)  # fmt: skip
    rows = conn.execute(
        "SELECT type, schedule, next_run_at FROM listener.schedules ORDER BY type"
    ).fetchall()
    assert [(t, s) for t, s, _ in rows] == [
        ("heartbeat_ping", "every 15s"), ("nightly_digest", "cron 0 8 * * * (Europe/Berlin)"),
    ]  # fmt: skip
    ping_next, digest_next = (next_run for _, _, next_run in rows)
    assert ping_next.second % 15 == 0
    assert ping_next.microsecond == 0
    assert digest_next.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M") == "08:00"


def test_readme_limits_example_is_published_by_a_real_worker(
    dsn: str, conn: psycopg.Connection[Any], processes: list[WorkerProcess], tmp_path: Path
) -> None:
    module = _readme_module(tmp_path, "# myapp/llm_tasks.py")
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    processes += _started(dsn, 1, "--handlers", module, "--types", "summarise", env=env)
    (limit,) = json.loads(run_cli("status", "--json", "--dsn", dsn).stdout)["limits"]
    assert (limit["type"], limit["global_concurrency"], limit["rate_limit"]) == (
        "summarise", 4, "30/m",
    )  # fmt: skip
