"""`listener migrate`, the pasteable `listener schema` script, drift, and the upgrade path."""

from __future__ import annotations

import subprocess

import psycopg
import pytest

from listener import migrations
from listener.sqlfiles import migrations as migration_files
from tests.integration.support import LISTENER, ORIGINAL_SETUP_SQL, cli_env, run_cli
from tests.tools import require_tool

FIRST = migration_files()[0]
ALL = migration_files()
APPLIED_ALL = "".join(f"applied {m.version:04d}_{m.name}\n" for m in ALL)
RECORDED_ALL = [(m.version, m.name, m.checksum) for m in ALL]


def _applied(dsn: str) -> list[tuple[int, str, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT version, name, checksum FROM listener.schema_migrations ORDER BY version"
        ).fetchall()


def _verify_ok(dsn: str) -> str:
    result = run_cli("verify", "--dsn", dsn)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✗" not in result.stdout
    return result.stdout


def test_migrate_applies_then_reports_up_to_date(empty_dsn: str) -> None:
    first = run_cli("migrate", "--dsn", empty_dsn)
    second = run_cli("migrate", "--dsn", empty_dsn)
    assert (first.returncode, first.stdout) == (0, APPLIED_ALL)
    assert (second.returncode, second.stdout) == (0, "schema is up to date\n")
    assert _applied(empty_dsn) == RECORDED_ALL


def test_migrate_from_two_processes_at_once_applies_the_schema_once(empty_dsn: str) -> None:
    procs = [
        subprocess.Popen(
            [str(LISTENER), "migrate", "--dsn", empty_dsn],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sorted(out for out, _ in outputs) == sorted([APPLIED_ALL, "schema is up to date\n"])
    assert _applied(empty_dsn) == RECORDED_ALL


def test_migrate_needs_an_autocommit_connection(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn) as conn, pytest.raises(ValueError, match="autocommit"):
        migrations.migrate(conn)


def test_schema_script_contains_every_migration_and_records_it() -> None:
    result = run_cli("schema")
    assert result.returncode == 0
    for migration in migration_files():
        assert migration.sql.strip() in result.stdout
        assert f"'{migration.checksum}'" in result.stdout
    assert result.stdout.startswith("-- listener schema")


def _run_script_with_psycopg(dsn: str, script: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(script.encode())  # bytes: no placeholder parsing, like a SQL editor


def test_pasted_schema_script_runs_twice_then_verify_passes_and_migrate_is_current(
    empty_dsn: str,
) -> None:
    script = run_cli("schema").stdout
    _run_script_with_psycopg(empty_dsn, script)
    _run_script_with_psycopg(empty_dsn, script)
    _verify_ok(empty_dsn)
    assert run_cli("migrate", "--dsn", empty_dsn).stdout == "schema is up to date\n"


def test_pasted_schema_script_runs_twice_in_psql_without_an_error(empty_dsn: str) -> None:
    psql = require_tool("psql")  # CI installs it (.ci/install-tools): never skipped there
    script = run_cli("schema").stdout
    for _ in range(2):
        result = subprocess.run(
            [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", empty_dsn, "-f", "-"],
            input=script,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "ERROR" not in result.stderr
    _verify_ok(empty_dsn)
    assert run_cli("migrate", "--dsn", empty_dsn).stdout == "schema is up to date\n"


def test_schema_script_runs_on_a_database_migrated_by_the_cli(dsn: str) -> None:
    _run_script_with_psycopg(dsn, run_cli("schema").stdout)
    _verify_ok(dsn)


def test_verify_reports_every_check_on_a_migrated_database(dsn: str) -> None:
    out = _verify_ok(dsn)
    assert out.splitlines() == [
        "✓ tables public.tasks and public.transactions exist",
        "✓ function claim_next_task() returns SETOF tasks",
        "✓ insert trigger sends NOTIFY",
        "✓ claim index tasks_claim_idx exists",
        "✓ row level security enabled on every listener table",
        "✓ no row level security policy on listener's tables",
        out.splitlines()[6],  # names the API roles, which depend on the server
        "✓ no view exposes listener's tables to API roles",
        "✓ no SECURITY DEFINER function in public is executable by API roles",
        "✓ service_role can't truncate the tables or write the payment ledger",
        "✓ every function pins its search_path",
        "✓ functions created later in schema listener are not executable by API roles",
        f"✓ migrations current ({len(ALL)} applied)",
    ]
    assert out.splitlines()[6].startswith("✓ API roles locked out")


def test_verify_on_an_empty_database_fails_naming_the_fix(empty_dsn: str) -> None:
    result = run_cli("verify", "--dsn", empty_dsn)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "✗ tables public.tasks and public.transactions exist — run `listener migrate`",
        "✗ migrations current — pending: "
        + ", ".join(f"{m.version:04d}_{m.name}" for m in ALL)
        + ": run `listener migrate`",
    ]


def test_verify_shows_drift_when_an_applied_migration_changed(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE listener.schema_migrations SET checksum = 'edited-by-hand' WHERE version = 1"
        )
    result = run_cli("verify", "--dsn", dsn)
    assert result.returncode == 1
    assert f"✗ migrations current — changed since applied: 0001_{FIRST.name} (schema drift)" in (
        result.stdout
    )


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (
            "ALTER TABLE public.tasks DISABLE TRIGGER tasks_notify_inserted",
            "✗ insert trigger sends NOTIFY — trigger is disabled",
        ),
        ("DROP TRIGGER tasks_notify_inserted ON public.tasks", "✗ insert trigger sends NOTIFY"),
        ("DROP INDEX public.tasks_claim_idx", "✗ claim index tasks_claim_idx exists"),
        (
            "ALTER TABLE public.transactions DISABLE ROW LEVEL SECURITY",
            "✗ row level security enabled — off on transactions",
        ),
        (
            "ALTER TABLE public.care_plans DISABLE ROW LEVEL SECURITY",
            "✗ row level security enabled — off on care_plans",
        ),
        ("DROP FUNCTION public.claim_next_task()", "✗ function claim_next_task()"),
    ],
)
def test_verify_fails_on_each_broken_piece(dsn: str, breakage: str, expected: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(breakage)
    result = run_cli("verify", "--dsn", dsn)
    assert result.returncode == 1
    failed = [line for line in result.stdout.splitlines() if line.startswith("✗")]
    assert len(failed) == 1, result.stdout
    assert failed[0].startswith(expected)


# -- upgrade from the original setup guide's schema ---------------------------------


@pytest.fixture
def original_dsn(empty_dsn: str) -> str:
    """A database made with the original setup guide, holding rows, before `listener migrate`."""
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(ORIGINAL_SETUP_SQL)
        conn.execute(
            "INSERT INTO tasks (type, payload, status, created_at) VALUES "
            "('send_email', '{\"n\": 1}', 'pending', '2026-01-01T10:00:00Z'),"
            "('send_email', '{\"n\": 2}', 'pending', '2026-01-01T09:00:00Z'),"
            "('generate_care_plan', NULL, 'pending', '2026-01-01T11:00:00Z'),"
            "('send_email', '{\"n\": 0}', 'completed', '2025-12-31T00:00:00Z'),"
            "('send_email', '{\"n\": -1}', 'failed', '2025-12-30T00:00:00Z')"
        )
        conn.execute(
            "INSERT INTO transactions (order_id, email, amount, status) VALUES "
            "('order_old', 'a@example.com', 49900, 'paid')"
        )
    return empty_dsn


def test_upgrade_from_the_original_schema_keeps_rows_and_claims_oldest_first(
    original_dsn: str,
) -> None:
    result = run_cli("migrate", "--dsn", original_dsn)
    assert result.returncode == 0, result.stderr
    with psycopg.connect(original_dsn, autocommit=True) as conn:
        counts = conn.execute(
            "SELECT status, count(*) FROM tasks GROUP BY status ORDER BY status"
        ).fetchall()
        assert counts == [("completed", 1), ("failed", 1), ("pending", 3)]
        claimed = [
            conn.execute("SELECT payload, status FROM claim_next_task()").fetchone()
            for _ in range(4)
        ]
    assert claimed == [
        ({"n": 2}, "processing"),  # created 09:00
        ({"n": 1}, "processing"),  # created 10:00
        ({}, "processing"),  # NULL payload became {}
        None,
    ]


def test_upgrade_widens_amount_and_keeps_the_ledger(original_dsn: str) -> None:
    assert run_cli("migrate", "--dsn", original_dsn).returncode == 0
    with psycopg.connect(original_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'public.transactions'::regclass AND attname = 'amount'"
        ).fetchone()
        assert row == ("bigint",)
        replay = "SELECT record_transaction('order_old', 'a@example.com', 49900, 'paid')"
        assert conn.execute(replay).fetchone() == (False,)
        assert conn.execute("SELECT order_id, amount FROM transactions").fetchall() == [
            ("order_old", 49900)
        ]


def test_upgraded_database_passes_verify_and_takes_new_tasks(original_dsn: str) -> None:
    assert run_cli("migrate", "--dsn", original_dsn).returncode == 0
    _verify_ok(original_dsn)
    with psycopg.connect(original_dsn, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO tasks (type) VALUES ('new') RETURNING payload, status, attempts"
        ).fetchone()
        assert row == ({}, "pending", 0)
        nullable = conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'public.tasks'::regclass "
            "AND attname IN ('type', 'payload', 'status', 'created_at', 'run_at') "
            "AND NOT attnotnull"
        ).fetchall()
        assert nullable == []


def test_old_rows_that_break_a_rule_stop_the_upgrade_with_the_constraint_named(
    original_dsn: str,
) -> None:
    with psycopg.connect(original_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO tasks (type, status) VALUES ('t', 'done')")
    result = run_cli("migrate", "--dsn", original_dsn)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "tasks_status_valid" in result.stderr
    # Nothing half-applied: the migration rolled back as one transaction.
    with psycopg.connect(original_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('listener.schema_migrations')").fetchone() == (
            None,
        )


def test_old_rows_with_null_status_do_not_block_the_upgrade(original_dsn: str) -> None:
    with psycopg.connect(original_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO tasks (type, status) VALUES ('t', NULL)")
    assert run_cli("migrate", "--dsn", original_dsn).returncode == 0
    with psycopg.connect(original_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM tasks WHERE status IS NULL").fetchone() == (1,)
