"""Doctor's queue checks, each against a queue put into the bad state on purpose."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from listener import doctor
from listener.doctor import Finding, Level, Thresholds
from tests import pg


def find(findings: list[Finding], title_part: str) -> Finding:
    matches = [f for f in findings if title_part in f.title]
    assert len(matches) == 1, [f.line() for f in findings]
    return matches[0]


def add_worker(conn: psycopg.Connection[Any], types: list[str], seen: str = "0 seconds") -> None:
    conn.execute(
        "INSERT INTO listener.workers (id, hostname, pid, types, concurrency, last_seen_at) "
        "VALUES (gen_random_uuid()::text, 'host', 1, %s, 4, now() - %s::interval)",
        [types, seen],
    )


def test_due_task_waiting_past_the_threshold_warns(conn: psycopg.Connection[Any], dsn: str) -> None:
    conn.execute("INSERT INTO tasks (type, run_at) VALUES ('job', now() - interval '1 hour')")
    conn.execute("INSERT INTO tasks (type) VALUES ('job')")  # fresh: not counted
    finding = find(doctor.diagnose(dsn), "waiting longer than")
    assert finding.level is Level.WARN
    assert finding.title == "1 due task(s) waiting longer than 5min (oldest 1h)"


def test_fresh_and_future_tasks_are_not_stale(conn: psycopg.Connection[Any], dsn: str) -> None:
    conn.execute("INSERT INTO tasks (type) VALUES ('job')")
    conn.execute("INSERT INTO tasks (type, run_at) VALUES ('job', now() + interval '1 day')")
    finding = find(doctor.diagnose(dsn), "has waited longer than")
    assert finding.level is Level.OK


def test_pending_tasks_without_any_live_worker_warn(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    conn.execute("INSERT INTO tasks (type) VALUES ('send_email')")
    add_worker(conn, ["send_email"], seen="5 minutes")  # gone: not seen for 5 minutes
    finding = find(doctor.diagnose(dsn), "live worker")
    assert finding.level is Level.WARN
    assert finding.title == "no live worker (none seen in the last 30s); pending: send_email (1)"
    assert "listener run --handlers" in finding.fix


def test_pending_type_no_live_worker_handles_warns(conn: psycopg.Connection[Any], dsn: str) -> None:
    conn.execute("INSERT INTO tasks (type) VALUES ('send_email'), ('resize'), ('resize')")
    add_worker(conn, ["send_email"])
    finding = find(doctor.diagnose(dsn), "live worker")
    assert finding.level is Level.WARN
    assert finding.title == "pending types no live worker handles: resize (2)"
    assert "listener cancel --type resize" in finding.fix


def test_every_pending_type_handled_is_ok(conn: psycopg.Connection[Any], dsn: str) -> None:
    conn.execute("INSERT INTO tasks (type) VALUES ('send_email')")
    add_worker(conn, ["send_email", "resize"])
    assert find(doctor.diagnose(dsn), "live worker").level is Level.OK


def test_task_stuck_in_processing_with_an_expired_lease_fails(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    conn.execute(
        "INSERT INTO tasks (type, status, worker_id, started_at, lease_expires_at) VALUES "
        "('job', 'processing', 'dead-worker', now() - interval '11 minutes', "
        " now() - interval '10 minutes'),"
        "('job', 'processing', 'live-worker', now(), now() + interval '1 minute')"
    )
    finding = find(doctor.diagnose(dsn), "stuck in processing")
    assert finding.level is Level.FAIL
    assert finding.title == "1 task(s) stuck in processing, lease expired 10min ago"
    assert "start a worker" in finding.fix


def test_lease_that_just_expired_is_left_to_the_rescuer(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    conn.execute(
        "INSERT INTO tasks (type, status, worker_id, lease_expires_at) "
        "VALUES ('job', 'processing', 'w', now() - interval '5 seconds')"
    )
    assert find(doctor.diagnose(dsn), "expired lease").level is Level.OK


def make_dead_rows(conn: psycopg.Connection[Any], dsn: str) -> list[Finding]:
    """4000 dead of 5000 rows, then poll until the statistics show them."""
    conn.execute("INSERT INTO tasks (type) SELECT 'job' FROM generate_series(1, 5000)")
    conn.execute("DELETE FROM tasks WHERE ctid IN (SELECT ctid FROM tasks LIMIT 4000)")
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT 1")  # the flush happens when this session next goes idle
    return poll(dsn, lambda fs: "dead rows (" in find(fs, "dead rows").title)


def poll(dsn: str, ready: Any, deadline_s: float = 10.0, **limits: Any) -> list[Finding]:
    import time

    end = time.monotonic() + deadline_s
    while True:
        findings = doctor.diagnose(dsn, Thresholds(**limits))
        if ready(findings) or time.monotonic() > end:
            return findings
        time.sleep(0.2)


def test_dead_rows_with_autovacuum_disabled_on_tasks_fail(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    conn.execute("ALTER TABLE tasks SET (autovacuum_enabled = false)")
    finding = find(make_dead_rows(conn, dsn), "dead rows")
    assert finding.level is Level.FAIL
    assert finding.title == "tasks table 80% dead rows (4000 dead, 1000 live)"
    assert "autovacuum is off for public.tasks: ALTER TABLE public.tasks RESET" in finding.fix


@pytest.fixture
def autovacuum_dsn(dsn: str) -> Iterator[str]:
    """A migrated database on a server running autovacuum: the tests' own server if it
    does, else an embedded one of this test's own (CI's PostgreSQL 15 runs with
    autovacuum = off, and a skip there would leave the check untested in that pass)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        autovacuum = conn.execute("SHOW autovacuum").fetchone()
    if autovacuum == ("on",):
        yield dsn
        return
    with pg.embedded_server() as admin_dsn:
        name = pg.create_database(admin_dsn, pg.create_template(admin_dsn))
        yield pg.dsn_for(admin_dsn, name)


def test_dead_rows_autovacuum_does_not_keep_up_with_warn(autovacuum_dsn: str) -> None:
    with psycopg.connect(autovacuum_dsn, autocommit=True) as conn:
        assert conn.execute("SHOW autovacuum").fetchone() == ("on",)
        # Autovacuum stays on for the table but will not trigger within the test.
        conn.execute(
            "ALTER TABLE tasks SET (autovacuum_vacuum_threshold = 2000000000, "
            "autovacuum_vacuum_insert_threshold = -1, autovacuum_analyze_threshold = 2000000000)"
        )
        finding = find(make_dead_rows(conn, autovacuum_dsn), "dead rows")
    assert finding.level is Level.WARN
    assert "autovacuum is not keeping up" in finding.fix


def test_idle_in_transaction_timeout_off_warns_and_set_is_ok(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    db = conn.info.dbname
    conn.execute(f'ALTER DATABASE "{db}" SET idle_in_transaction_session_timeout = 0')
    off = find(doctor.diagnose(dsn), "idle_in_transaction_session_timeout")
    conn.execute(f"ALTER DATABASE \"{db}\" SET idle_in_transaction_session_timeout = '10min'")
    on = find(doctor.diagnose(dsn), "idle_in_transaction_session_timeout")
    assert off.level is Level.WARN
    assert "SET idle_in_transaction_session_timeout = '5min'" in off.fix
    assert (on.level, on.title) == (Level.OK, "idle_in_transaction_session_timeout = 10min")


def test_very_low_statement_timeout_warns(conn: psycopg.Connection[Any], dsn: str) -> None:
    conn.execute(f"ALTER DATABASE \"{conn.info.dbname}\" SET statement_timeout = '200ms'")
    finding = find(doctor.diagnose(dsn), "statement_timeout")
    assert finding.level is Level.WARN
    assert finding.title.startswith("statement_timeout = 0.2s for role ")


def test_a_handler_running_for_hours_under_a_live_lease_warns(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    conn.execute(
        "INSERT INTO tasks (type, status, worker_id, started_at, lease_expires_at) VALUES "
        "('report', 'processing', 'w', now() - interval '3 hours', now() + interval '30 s'),"
        "('quick', 'processing', 'w', now() - interval '2 seconds', now() + interval '30 s')"
    )
    finding = find(doctor.diagnose(dsn), "running longer than")
    assert finding.level is Level.WARN
    assert finding.title == "1 task(s) running longer than 1h (oldest 3h; types: report)"
    relaxed = find(doctor.diagnose(dsn, Thresholds(running_age_s=4 * 3600)), "has run longer")
    assert relaxed.level is Level.OK
