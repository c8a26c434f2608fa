"""The schedules and limits page and GET /api/schedules, on a real database: with real
worker processes that publish schedules and limits (tests/ui_schedule_handlers.py),
with rows placed exactly (the rate window's next slot), and with nothing to show."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import psycopg
import pytest

from tests.integration.engine_support import WorkerProcess, wait_until
from tests.integration.support import run_cli
from tests.integration.ui_support import add_task, client, status_of

pytestmark = pytest.mark.integration

HANDLERS = ("--handlers", "tests.ui_schedule_handlers")


@pytest.fixture
def processes() -> Iterator[list[WorkerProcess]]:
    """Worker processes a test started; killed at the end."""
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.stop()


def _scheduling(dsn: str, *args: str) -> WorkerProcess:
    """A worker that has registered and published its schedules and limits."""
    worker = WorkerProcess(dsn, *HANDLERS, *args)
    worker.wait_started()
    wait_until(partial(_has_published, worker), timeout_s=20)
    return worker


def _has_published(worker: WorkerProcess) -> bool:
    assert worker.proc.poll() is None, worker.log().decode()
    return b'"scheduler.started"' in worker.log()


def _status(dsn: str) -> dict[str, Any]:
    done = run_cli("status", "--json", "--dsn", dsn)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _worker_id(conn: psycopg.Connection[Any], worker: WorkerProcess) -> str:
    row = conn.execute(
        "SELECT id FROM listener.workers WHERE pid = %s", (worker.proc.pid,)
    ).fetchone()
    assert row is not None
    return str(row[0])


def _one(conn: psycopg.Connection[Any], sql: str, *params: Any) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def test_schedules_api_shows_what_live_workers_run_with_listener_status_numbers(
    dsn: str, conn: psycopg.Connection[Any], processes: list[WorkerProcess]
) -> None:
    # ui_yearly (January 1st, 00:00 UTC) was registered two years ago: this year's run
    # is enqueued when a worker starts. retired_report is run by no live worker, and
    # its last task was pruned since.
    conn.execute(
        "INSERT INTO listener.schedules (type, schedule, registered_at) "
        "VALUES ('ui_yearly', 'cron 0 0 1 1 * (UTC)', now() - interval '2 years')"
    )
    pruned = uuid.uuid4()
    conn.execute(
        "INSERT INTO listener.schedules (type, schedule, last_enqueued_for, last_task_id) "
        "VALUES ('retired_report', 'cron 0 6 * * 1 (UTC)', now() - interval '3 days', %s)",
        (pruned,),
    )
    everything = _scheduling(dsn)
    processes.append(everything)
    yearly_only = _scheduling(dsn, "--types", "ui_yearly")
    processes.append(yearly_only)
    ids = sorted([_worker_id(conn, everything), _worker_id(conn, yearly_only)])

    # ui_llm: one task runs (1 of global_concurrency=1, the only start allowed per
    # hour); then one is due and held back by both limits, two are due later.
    running = add_task(conn, "ui_llm")
    wait_until(lambda: status_of(conn, running) == "processing", timeout_s=20)
    held = add_task(conn, "ui_llm")
    for _ in range(2):
        add_task(conn, "ui_llm", run_at=_one(conn, "SELECT now() + interval '1 hour'"))
    yearly_task = wait_until(
        lambda: _one(conn, "SELECT last_task_id FROM listener.schedules WHERE type = 'ui_yearly'"),
        timeout_s=20,
    )
    wait_until(lambda: status_of(conn, yearly_task) == "completed", timeout_s=20)

    with client(dsn) as http:
        response = http.get("/api/schedules")
    assert response.status_code == 200, response.text
    data = response.json()
    status = _status(dsn)

    # Every key `listener status --json` has, with its value: the same numbers.
    assert [{k: s[k] for k in expected} for s, expected in zip(
        data["schedules"], status["schedules"], strict=True
    )] == status["schedules"]  # fmt: skip
    assert [{k: lim[k] for k in expected} for lim, expected in zip(
        data["limits"], status["limits"], strict=True
    )] == status["limits"]  # fmt: skip

    by_type = {s["type"]: s for s in data["schedules"]}
    assert sorted(by_type) == ["retired_report", "ui_daily", "ui_digest", "ui_yearly"]
    digest, daily, yearly = by_type["ui_digest"], by_type["ui_daily"], by_type["ui_yearly"]
    retired = by_type["retired_report"]
    assert (digest["cron"], digest["every_s"], digest["time_zone"]) == (
        "0 8 * * *", None, "Europe/Berlin",
    )  # fmt: skip
    assert (digest["last_run"], digest["last_task_id"]) == (None, None)
    assert digest["workers"] == [_worker_id(conn, everything)]  # --types left the other out
    assert (daily["cron"], daily["every_s"], daily["time_zone"]) == (None, 86400, None)
    assert daily["last_run"] is None
    assert data["now"] < daily["next_run"]
    assert (yearly["cron"], yearly["time_zone"]) == ("0 0 1 1 *", "UTC")
    assert (yearly["last_task_id"], yearly["last_task_status"]) == (str(yearly_task), "completed")
    assert yearly["last_run"] < data["now"] < yearly["next_run"]
    assert yearly["workers"] == ids
    assert (retired["active"], retired["next_run"], retired["workers"]) == (False, None, [])
    assert (retired["last_task_id"], retired["last_task_status"]) == (str(pruned), None)

    (llm,) = data["limits"]
    started_at = _one(conn, "SELECT started_at FROM tasks WHERE id = %s", running)
    assert llm == {
        **llm,
        "type": "ui_llm", "running": 1, "global_concurrency": 1, "at_concurrency_limit": True,
        "rate_limit": "1/h", "started_in_window": 1, "throttled": True,
        "next_slot_at": (started_at + timedelta(hours=1)).isoformat(),
        "pending": 3, "pending_due": 1,
    }  # fmt: skip
    assert status_of(conn, held) == "pending"


def _published(conn: psycopg.Connection[Any], limits: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO listener.workers (id, hostname, pid, types, concurrency, limits) "
        "VALUES ('w1', 'h', 1, '{llm}', 10, %s)",
        (json.dumps(limits),),
    )


def _starts(conn: psycopg.Connection[Any], *ago_s: float) -> None:
    """Starts of ``llm`` tasks this many seconds ago, as the claim records them."""
    conn.execute(
        "INSERT INTO listener.rate_starts (type, started_at) "
        "SELECT 'llm', now() - make_interval(secs => s) FROM unnest(%s::float8[]) AS s",
        (list(ago_s),),
    )


def test_a_used_up_rate_window_opens_its_next_slot_when_the_start_that_fills_it_leaves(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    _published(
        conn, {"llm": {"global_concurrency": None, "rate_limit": {"count": 3, "window_s": 60}}}
    )
    _starts(conn, 50, 40, 30, 90)  # the one 90 s ago is before the window
    with client(dsn) as http:
        (full,) = http.get("/api/schedules").json()["limits"]
    now = _one(conn, "SELECT now()")
    assert (full["started_in_window"], full["throttled"]) == (3, True)
    # The oldest of the three (50 s ago) leaves the 60 s window in about 10 s.
    assert abs((now + timedelta(seconds=10)).timestamp() - _ts(full["next_slot_at"])) < 2

    _starts(conn, 5)  # one more than the limit (say, it was lowered since): 4 of 3
    with client(dsn) as http:
        (over,) = http.get("/api/schedules").json()["limits"]
    assert over["started_in_window"] == 4
    # Two must leave before one may start: the 3rd newest is the one 40 s ago.
    assert abs((now + timedelta(seconds=20)).timestamp() - _ts(over["next_slot_at"])) < 2


def test_a_rate_window_with_room_left_is_not_throttled(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    _published(conn, {"llm": {"global_concurrency": 5, "rate_limit": {"count": 3, "window_s": 60}}})
    _starts(conn, 10, 5)
    add_task(conn, "llm", status="processing", started_at=_one(conn, "SELECT now()"))
    with client(dsn) as http:
        (limit,) = http.get("/api/schedules").json()["limits"]
        page = http.get("/schedules")
    assert (limit["started_in_window"], limit["throttled"], limit["next_slot_at"]) == (
        2, False, None,
    )  # fmt: skip
    assert (limit["running"], limit["at_concurrency_limit"]) == (1, False)
    assert page.status_code == 200
    assert "throttled" not in page.text.split('id="limits"')[1].split("<p")[0]


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_with_no_schedules_and_no_limits_the_page_says_so_and_the_api_answers_empty_lists(
    dsn: str, conn: psycopg.Connection[Any], processes: list[WorkerProcess]
) -> None:
    plain = WorkerProcess(dsn, "--handlers", "tests.ui_handlers")  # no schedule, no limit
    processes.append(plain)
    plain.wait_started()
    with client(dsn) as http:
        data = http.get("/api/schedules").json()
        page = http.get("/schedules")
    assert (data["schedules"], data["limits"]) == ([], [])
    assert page.status_code == 200
    assert "No schedules." in page.text
    assert "No limits." in page.text


def test_the_schedules_page_lists_a_schedule_and_a_limit_and_links_the_last_task(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    last = add_task(conn, "digest", status="completed", completed_at=_one(conn, "SELECT now()"))
    conn.execute(
        "INSERT INTO listener.schedules (type, schedule, last_enqueued_for, last_task_id, "
        "next_run_at) VALUES ('digest', 'cron 0 8 * * * (Europe/Berlin)', now(), %s, "
        "now() + interval '1 day')",
        (last,),
    )
    conn.execute(
        "INSERT INTO listener.workers (id, hostname, pid, types, concurrency, limits, schedules) "
        "VALUES ('w1', 'h', 1, '{digest,llm}', 10, %s, %s)",
        (
            json.dumps({"llm": {"global_concurrency": 4, "rate_limit": None}}),
            json.dumps({"digest": {"cron": "0 8 * * *", "tz": "Europe/Berlin"}}),
        ),
    )
    conn.execute(  # stopped an hour ago (and not swept yet: no live worker runs here)
        "INSERT INTO listener.workers (id, hostname, pid, types, concurrency, schedules, "
        "last_seen_at) VALUES ('gone', 'h', 2, '{digest}', 1, %s, now() - interval '1 hour')",
        (json.dumps({"digest": {"cron": "0 8 * * *", "tz": "Europe/Berlin"}}),),
    )
    add_task(conn, "llm")
    with client(dsn) as http:
        home = http.get("/")
        (digest,) = http.get("/api/schedules").json()["schedules"]
        page = http.get("/schedules")
    assert 'href="/schedules"' in home.text  # in the navigation
    assert page.status_code == 200
    schedules = page.text.split('id="schedules"')[1].split('id="limits"')[0]
    assert "<code>0 8 * * *</code>" in schedules
    assert "Europe/Berlin" in schedules
    assert f'href="/tasks/{last}"' in schedules
    assert "<code>w1</code>" in schedules
    assert "gone" not in schedules
    assert digest["workers"] == ["w1"]
    limits = page.text.split('id="limits"')[1]
    assert "0 / 4" in limits
    assert 'href="/tasks?status=pending&amp;type=llm"' in limits
