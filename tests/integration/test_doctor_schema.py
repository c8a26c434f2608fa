"""`listener doctor` on a healthy database, and on a schema broken on purpose."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from listener import cli, doctor
from listener.doctor import Finding, Level


def find(findings: list[Finding], title_start: str) -> Finding:
    matches = [f for f in findings if f.title.startswith(title_start)]
    assert len(matches) == 1, [f.line() for f in findings]
    return matches[0]


def test_healthy_database_has_no_failed_check_and_exits_zero(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["doctor", "--dsn", dsn])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "✗" not in out
    assert "✓ LISTEN/NOTIFY works on this connection" in out.splitlines()
    assert " checks: 0 failed, " in out.splitlines()[-1]


def test_disabled_insert_trigger_fails_with_the_enable_statement(
    conn: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    conn.execute("ALTER TABLE tasks DISABLE TRIGGER tasks_notify_inserted")
    code = cli.main(["doctor", "--dsn", dsn])
    out = capsys.readouterr().out
    assert code == 1
    assert (
        "✗ insert trigger sends NOTIFY — trigger is disabled: "
        "ALTER TABLE public.tasks ENABLE TRIGGER tasks_notify_inserted"
    ) in out.splitlines()


def test_missing_insert_trigger_fails(conn: psycopg.Connection[Any], dsn: str) -> None:
    conn.execute("DROP TRIGGER tasks_notify_inserted ON tasks")
    finding = find(doctor.diagnose(dsn), "insert trigger")
    assert finding.level is Level.FAIL
    assert "missing: run `listener migrate`" in finding.fix


def test_dropped_claim_index_fails(conn: psycopg.Connection[Any], dsn: str) -> None:
    conn.execute("DROP INDEX tasks_claim_idx")
    finding = find(doctor.diagnose(dsn), "claim index")
    assert finding.level is Level.FAIL
    assert "listener migrate" in finding.fix


def test_row_level_security_off_fails_with_the_fix(conn: psycopg.Connection[Any], dsn: str) -> None:
    conn.execute("ALTER TABLE tasks DISABLE ROW LEVEL SECURITY")
    finding = find(doctor.diagnose(dsn), "row level security")
    assert finding.level is Level.FAIL
    assert "ALTER TABLE public.tasks ENABLE ROW LEVEL SECURITY" in finding.fix


@pytest.fixture
def anon_role(conn: psycopg.Connection[Any]) -> Iterator[str]:
    """Supabase's `anon` role. Roles are server-wide: create it only if absent, and
    drop it only if this test created it (after revoking what the test granted)."""
    created = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon')")
    row = created.fetchone()
    assert row is not None
    if row[0]:
        try:
            conn.execute("CREATE ROLE anon NOLOGIN")
        except psycopg.errors.DuplicateObject:
            row = (False,)
    yield "anon"
    conn.execute("REVOKE ALL ON public.tasks FROM anon")
    if row[0]:
        # Another session may have started using it; a leftover NOLOGIN role is harmless.
        with contextlib.suppress(psycopg.Error):
            conn.execute("DROP ROLE anon")


def test_api_role_holding_a_privilege_fails(
    conn: psycopg.Connection[Any], dsn: str, anon_role: str
) -> None:
    conn.execute(sql.SQL("GRANT SELECT ON public.tasks TO {}").format(sql.Identifier(anon_role)))
    finding = find(doctor.diagnose(dsn), "API roles locked out")
    assert finding.level is Level.FAIL
    assert "anon SELECT on table tasks" in finding.fix


def test_function_executable_by_public_fails(conn: psycopg.Connection[Any], dsn: str) -> None:
    conn.execute("GRANT EXECUTE ON FUNCTION public.claim_next_task() TO PUBLIC")
    finding = find(doctor.diagnose(dsn), "API roles locked out")
    assert finding.level is Level.FAIL
    assert "PUBLIC EXECUTE on function claim_next_task()" in finding.fix


def test_pending_migration_fails(conn: psycopg.Connection[Any], dsn: str) -> None:
    conn.execute("DELETE FROM listener.schema_migrations")
    finding = find(doctor.diagnose(dsn), "migrations current")
    assert finding.level is Level.FAIL
    assert finding.fix.startswith("pending: 0001_tasks_and_transactions")
    assert finding.fix.endswith(": run `listener migrate`")


def test_drifted_schema_fails(conn: psycopg.Connection[Any], dsn: str) -> None:
    conn.execute("UPDATE listener.schema_migrations SET checksum = 'edited by hand'")
    finding = find(doctor.diagnose(dsn), "migrations current")
    assert finding.level is Level.FAIL
    assert "schema drift" in finding.fix


def test_empty_database_fails_and_skips_the_queue_checks(
    empty_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["doctor", "--dsn", empty_dsn])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert "✗ tables public.tasks and public.transactions exist — run `listener migrate`" in lines
    assert "⚠ queue checks skipped — the tables are missing (see above)" in lines


@pytest.fixture
def unprivileged_dsn(conn: psycopg.Connection[Any], dsn: str) -> Iterator[str]:
    """A login role of this test's own that may connect but read none of our tables."""
    role = f"listener_doctor_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        yield make_conninfo(dsn, user=role)
    finally:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [role]
        )
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_checks_a_role_cannot_run_fail_with_the_reason_instead_of_crashing(
    unprivileged_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["doctor", "--dsn", unprivileged_dsn])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err == ""
    assert (
        "✗ pending tasks waiting: could not check — permission denied for table tasks "
        "(run doctor with the worker's connection string: it needs the same access)"
    ) in captured.out.splitlines()
