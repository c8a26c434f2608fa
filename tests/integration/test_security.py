"""Supabase's API roles (anon, authenticated) are locked out of the queue and the ledger."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.integration.support import (
    API_ROLES,
    ORIGINAL_SETUP_SQL,
    SUPABASE_GRANTS,
    ensure_api_roles,
    run_cli,
)

FORBIDDEN = [
    "SELECT payload FROM public.tasks",
    "INSERT INTO public.tasks (type) VALUES ('x')",
    "UPDATE public.tasks SET status = 'failed'",
    "DELETE FROM public.tasks",
    "INSERT INTO public.transactions (order_id, amount, status) VALUES ('o', 1, 'paid')",
    "SELECT * FROM public.transactions",
    "SELECT * FROM claim_next_task()",
    "SELECT public.record_transaction('o', 'e', 1, 'paid')",
    "SELECT * FROM listener.claim_tasks('w', 10)",
    "SELECT public.enqueue_task('t', '{}')",
    "SELECT * FROM listener.schema_migrations",
    "SELECT * FROM listener.schedules",
]


def _supabase_database(dsn: str) -> str:
    """Supabase's default grants on an empty database, then `listener migrate`."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        ensure_api_roles(conn)
        conn.execute(SUPABASE_GRANTS)
    migrated = run_cli("migrate", "--dsn", dsn)
    assert migrated.returncode == 0, migrated.stderr
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO tasks (type, payload) VALUES ('t', '{\"secret\": \"s3cr3t\"}')")
    return dsn


@pytest.fixture(scope="module")
def supabase_dsn(module_empty_dsn: str) -> str:
    """Shared by tests that undo whatever they change."""
    return _supabase_database(module_empty_dsn)


@contextlib.contextmanager
def _granted(dsn: str, grant: str) -> Iterator[None]:
    """Re-add one grant for the duration of a test, then take it away again."""
    revoke = grant.replace("GRANT", "REVOKE", 1).replace(" TO ", " FROM ")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(grant)
    try:
        yield
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(revoke)


def _as_role(conn: psycopg.Connection[Any], role: str, statement: str) -> list[Any]:
    with conn.transaction(force_rollback=True):
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else []


@pytest.mark.parametrize("role", API_ROLES)
@pytest.mark.parametrize("statement", FORBIDDEN)
def test_api_role_is_denied(supabase_dsn: str, role: str, statement: str) -> None:
    with psycopg.connect(supabase_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _as_role(conn, role, statement)
        # The task and its payload are untouched.
        assert conn.execute("SELECT payload->>'secret', status FROM tasks").fetchall() == [
            ("s3cr3t", "pending")
        ]


def test_rls_hides_task_rows_even_if_a_select_grant_comes_back(supabase_dsn: str) -> None:
    with (
        _granted(supabase_dsn, "GRANT SELECT ON public.tasks TO anon"),
        psycopg.connect(supabase_dsn, autocommit=True) as conn,
    ):
        assert _as_role(conn, "anon", "SELECT payload FROM public.tasks") == []


def test_verify_shows_api_roles_locked_out(supabase_dsn: str) -> None:
    result = run_cli("verify", "--dsn", supabase_dsn)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✓ API roles locked out: anon and authenticated" in result.stdout
    assert "✗" not in result.stdout


@pytest.mark.parametrize(
    ("grant", "shown"),
    [
        ("GRANT SELECT ON public.tasks TO anon", "anon SELECT on table tasks"),
        ("GRANT INSERT ON public.transactions TO authenticated", "authenticated INSERT"),
        ("GRANT SELECT (payload) ON public.tasks TO anon", "anon SELECT on table tasks"),
        ("GRANT EXECUTE ON FUNCTION public.claim_next_task() TO anon", "claim_next_task()"),
        ("GRANT USAGE ON SCHEMA listener TO authenticated", "USAGE on schema listener"),
        (
            "GRANT EXECUTE ON FUNCTION public.record_transaction(text, text, bigint, text) "
            "TO PUBLIC",
            "record_transaction",
        ),
    ],
)
def test_verify_fails_when_a_grant_is_re_added(supabase_dsn: str, grant: str, shown: str) -> None:
    with _granted(supabase_dsn, grant):
        result = run_cli("verify", "--dsn", supabase_dsn)
    assert result.returncode == 1
    failed = [line for line in result.stdout.splitlines() if line.startswith("✗")]
    assert len(failed) == 1, result.stdout
    assert failed[0].startswith("✗ API roles locked out")
    assert shown in failed[0]


def test_re_running_the_migration_revokes_a_re_added_grant(empty_dsn: str) -> None:
    dsn = _supabase_database(empty_dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("GRANT SELECT ON public.tasks TO anon")
        conn.execute("DELETE FROM listener.schema_migrations")
    assert run_cli("migrate", "--dsn", dsn).returncode == 0
    assert run_cli("verify", "--dsn", dsn).returncode == 0


def test_upgraded_supabase_database_locks_out_api_roles(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        ensure_api_roles(conn)
        conn.execute(SUPABASE_GRANTS)
        conn.execute(ORIGINAL_SETUP_SQL)  # created after the grants: anon can use it all
        conn.execute(SUPABASE_GRANTS)
        conn.execute("INSERT INTO tasks (type, payload) VALUES ('t', '{\"k\": 1}')")
        assert _as_role(conn, "anon", "SELECT payload FROM public.tasks") == [({"k": 1},)]
    assert run_cli("migrate", "--dsn", empty_dsn).returncode == 0
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        for statement in FORBIDDEN:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                _as_role(conn, "anon", statement)


def test_every_function_pins_its_search_path(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'listener' "
        "OR (n.nspname = 'public' AND p.proname IN ('claim_next_task', 'record_transaction'))"
    ).fetchall()
    assert len(rows) >= 4
    unpinned = [
        sig for sig, config in rows if not any(c.startswith("search_path=") for c in config or [])
    ]
    assert unpinned == []


def test_verify_fails_when_a_function_loses_its_search_path(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER FUNCTION public.claim_next_task() RESET search_path")
    result = run_cli("verify", "--dsn", dsn)
    assert result.returncode == 1
    assert "✗ functions pin search_path — not pinned: claim_next_task()" in result.stdout


def test_functions_are_not_executable_by_public(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace, "
        "aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) acl "
        "WHERE (n.nspname = 'listener' "
        "OR (n.nspname = 'public' AND p.proname IN ('claim_next_task', 'record_transaction'))) "
        "AND acl.grantee = 0"
    ).fetchall()
    assert rows == []
