"""Doctor's session checks: a listener idle in a transaction, the NOTIFY queue
it holds back, and a long transaction pinning vacuum, each made for real."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from listener import doctor
from listener.doctor import Finding, Level, Thresholds
from listener.notifier import LISTEN_APPLICATION_NAME


def find(findings: list[Finding], title_part: str) -> Finding:
    matches = [f for f in findings if title_part in f.title]
    assert len(matches) == 1, [f.line() for f in findings]
    return matches[0]


def poll(dsn: str, title_part: str, done: Callable[[Finding], bool], **limits: Any) -> Finding:
    """Diagnose until the finding satisfies ``done`` or 10 s pass; return the last one."""
    end = time.monotonic() + 10
    while True:
        finding = find(doctor.diagnose(dsn, Thresholds(**limits)), title_part)
        if done(finding) or time.monotonic() > end:
            return finding
        time.sleep(0.1)


@pytest.fixture
def idle_listener(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A session named like the worker's listening connection that LISTENs, then sits
    in a transaction without reading its notifications."""
    name = LISTEN_APPLICATION_NAME
    with psycopg.connect(dsn, autocommit=True, application_name=name) as session:
        session.execute("LISTEN listener_tasks")
        session.execute("BEGIN")
        session.execute("SELECT 1")
        yield session


def test_listener_idle_in_a_transaction_fails_naming_its_pid(
    dsn: str, idle_listener: psycopg.Connection[Any]
) -> None:
    finding = poll(dsn, "idle in a transaction", lambda f: f.level is Level.FAIL, idle_listener_s=0)
    assert finding.level is Level.FAIL
    assert f"pid {idle_listener.info.backend_pid} ({LISTEN_APPLICATION_NAME}, " in finding.title
    assert "pg_terminate_backend" in finding.fix


def test_other_session_whose_last_statement_was_listen_counts_as_a_listener(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True, application_name="billing-app") as session:
        session.execute("BEGIN")
        session.execute("LISTEN invoices")
        pid = session.info.backend_pid
        finding = poll(
            dsn, "idle in a transaction", lambda f: f.level is Level.FAIL, idle_listener_s=0
        )
    assert finding.level is Level.FAIL
    assert f"pid {pid} (billing-app, " in finding.title


def test_idle_in_transaction_non_listener_is_not_reported_as_a_listener(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True, application_name="report-app") as session:
        session.execute("BEGIN")
        session.execute("SELECT 1")
        finding = find(doctor.diagnose(dsn, Thresholds(idle_listener_s=0)), "idle in a trans")
    assert finding.level is Level.OK


def test_notification_queue_held_back_by_an_idle_listener_is_reported(
    dsn: str, idle_listener: psycopg.Connection[Any]
) -> None:
    # ~8 MB of distinct notifications the idle listener never reads: about 0.1% of
    # the server's 8 GB queue, so the thresholds are lowered to match.
    with psycopg.connect(dsn, autocommit=True) as sender, sender.transaction():
        sender.execute(
            "SELECT pg_notify('doctor_test_fill', i || repeat('x', 7900)) "
            "FROM generate_series(1, 1000) AS i"
        )
    warned = poll(
        dsn, "notification queue", lambda f: f.level is Level.WARN, notify_queue_warn=0.0005
    )
    failed = find(
        doctor.diagnose(dsn, Thresholds(notify_queue_warn=0.0001, notify_queue_fail=0.0005)),
        "notification queue",
    )
    assert warned.level is Level.WARN
    assert failed.level is Level.FAIL
    assert "every NOTIFY, and so every INSERT into tasks, fails" in failed.fix


def test_long_transaction_holding_back_vacuum_warns(dsn: str) -> None:
    with psycopg.connect(dsn, application_name="etl-job") as session:
        session.execute("SELECT txid_current()")  # an open transaction with an xid
        finding = poll(
            dsn, "long-running transaction", lambda f: f.level is Level.WARN, long_transaction_s=0.2
        )
        pid = session.info.backend_pid
    assert finding.level is Level.WARN
    assert f"pid {pid} (etl-job, " in finding.title
    assert "VACUUM cannot remove dead task rows" in finding.fix


def test_short_transactions_are_not_reported(dsn: str) -> None:
    with psycopg.connect(dsn) as session:
        session.execute("SELECT txid_current()")
        finding = find(doctor.diagnose(dsn), "long-running transaction")
    assert finding.level is Level.OK
