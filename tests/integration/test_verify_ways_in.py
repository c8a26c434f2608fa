"""`listener verify` finds the ways past the lock-out that grants on our objects don't show:
views over our tables, policies on them, SECURITY DEFINER functions, service_role's writes
to the ledger, and default privileges on functions created later."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.integration.support import (
    ORIGINAL_SETUP_SQL,
    SUPABASE_GRANTS,
    SUPABASE_SERVICE_ROLE_GRANTS,
    ensure_api_roles,
    run_cli,
)


def _supabase_database(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        ensure_api_roles(conn, "service_role")
        conn.execute(SUPABASE_GRANTS)
        conn.execute(SUPABASE_SERVICE_ROLE_GRANTS)
    migrated = run_cli("migrate", "--dsn", dsn)
    assert migrated.returncode == 0, migrated.stderr
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO tasks (type, payload) VALUES ('t', '{\"secret\": \"s3cr3t\"}')")
    return dsn


@pytest.fixture(scope="module")
def supabase_dsn(module_empty_dsn: str) -> str:
    """Shared by tests that undo what they change (each runs its setup in `_changed`)."""
    return _supabase_database(module_empty_dsn)


@contextlib.contextmanager
def _changed(dsn: str, do: str, undo: str) -> Iterator[None]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(do)
    try:
        yield
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(undo)


def failed_lines(dsn: str) -> list[str]:
    result = run_cli("verify", "--dsn", dsn)
    lines = [line for line in result.stdout.splitlines() if line.startswith("✗")]
    assert (result.returncode == 1) == bool(lines), result.stdout + result.stderr
    return lines


def _as_role(conn: psycopg.Connection[Any], role: str, statement: str) -> list[Any]:
    with conn.transaction(force_rollback=True):
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        return conn.execute(statement).fetchall()


def test_a_fresh_supabase_database_passes(supabase_dsn: str) -> None:
    assert failed_lines(supabase_dsn) == []


WAYS_IN = [
    pytest.param(
        "CREATE VIEW public.task_feed AS SELECT id, payload FROM public.tasks;"
        "GRANT SELECT ON public.task_feed TO anon",
        "DROP VIEW public.task_feed",
        "✗ no view exposes listener's tables to API roles — view task_feed readable by anon",
        id="plain-view",
    ),
    pytest.param(
        # Supabase's default privileges hand every new view to anon and authenticated:
        # only the outer one stays readable, by authenticated.
        "CREATE VIEW public.inner_feed AS SELECT * FROM public.tasks;"
        "CREATE VIEW public.outer_feed AS SELECT payload FROM public.inner_feed;"
        "REVOKE ALL ON public.inner_feed FROM anon, authenticated;"
        "REVOKE ALL ON public.outer_feed FROM anon;"
        "GRANT SELECT ON public.outer_feed TO authenticated",
        "DROP VIEW public.outer_feed; DROP VIEW public.inner_feed",
        "✗ no view exposes listener's tables to API roles — view outer_feed readable by "
        "authenticated",
        id="view-over-a-view",
    ),
    pytest.param(
        "CREATE MATERIALIZED VIEW public.ledger_copy AS SELECT * FROM public.transactions;"
        "GRANT SELECT ON public.ledger_copy TO anon",
        "DROP MATERIALIZED VIEW public.ledger_copy",
        "✗ no view exposes listener's tables to API roles — materialized view ledger_copy "
        "readable by anon",
        id="materialized-view",
    ),
    pytest.param(
        "CREATE VIEW public.one_column AS SELECT id, payload FROM public.tasks;"
        "GRANT SELECT (payload) ON public.one_column TO anon",
        "DROP VIEW public.one_column",
        "✗ no view exposes listener's tables to API roles — view one_column readable by anon",
        id="column-grant-on-a-view",
    ),
    pytest.param(
        'CREATE POLICY "Allow all" ON public.tasks FOR ALL USING (true)',
        'DROP POLICY "Allow all" ON public.tasks',
        "✗ no row level security policy on listener's tables — Allow all on tasks: "
        'DROP POLICY "Allow all" ON tasks',
        id="permissive-policy",
    ),
    pytest.param(
        "CREATE FUNCTION public.pending_tasks() RETURNS SETOF public.tasks LANGUAGE sql "
        "SECURITY DEFINER AS 'SELECT * FROM public.tasks'",
        "DROP FUNCTION public.pending_tasks()",
        "✗ no SECURITY DEFINER function in public is executable by API roles — "
        "pending_tasks() (by anon, authenticated)",
        id="security-definer-helper",
    ),
    pytest.param(
        "GRANT INSERT, TRUNCATE ON public.transactions TO service_role",
        "REVOKE INSERT, TRUNCATE ON public.transactions FROM service_role",
        "✗ service_role can't truncate the tables or write the payment ledger — service_role "
        "has INSERT on table public.transactions, TRUNCATE on table public.transactions",
        id="service-role-ledger-write",
    ),
    pytest.param(
        "ALTER DEFAULT PRIVILEGES IN SCHEMA listener GRANT EXECUTE ON FUNCTIONS TO anon",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA listener REVOKE EXECUTE ON FUNCTIONS FROM anon",
        "✗ functions created later in schema listener are not executable by API roles — "
        "default privileges give EXECUTE to anon",
        id="default-privileges",
    ),
]


@pytest.mark.parametrize(("do", "undo", "shown"), WAYS_IN)
def test_verify_names_each_way_in(supabase_dsn: str, do: str, undo: str, shown: str) -> None:
    with _changed(supabase_dsn, do, undo):
        failed = failed_lines(supabase_dsn)
    assert len(failed) == 1, failed
    assert failed[0].startswith(shown), failed[0]


def test_the_view_verify_flags_really_hands_anon_the_payloads(supabase_dsn: str) -> None:
    with (
        _changed(
            supabase_dsn,
            "CREATE VIEW public.task_feed AS SELECT payload FROM public.tasks;"
            "GRANT SELECT ON public.task_feed TO anon",
            "DROP VIEW public.task_feed",
        ),
        psycopg.connect(supabase_dsn, autocommit=True) as conn,
    ):
        rows = _as_role(conn, "anon", "SELECT payload->>'secret' FROM public.task_feed")
    assert rows == [("s3cr3t",)]


def test_a_security_invoker_view_is_not_a_way_in(supabase_dsn: str) -> None:
    with (
        _changed(
            supabase_dsn,
            "CREATE VIEW public.invoker_feed WITH (security_invoker = true) AS "
            "SELECT payload FROM public.tasks; GRANT SELECT ON public.invoker_feed TO anon",
            "DROP VIEW public.invoker_feed",
        ),
        psycopg.connect(supabase_dsn, autocommit=True) as conn,
    ):
        assert failed_lines(supabase_dsn) == []
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _as_role(conn, "anon", "SELECT payload FROM public.invoker_feed")


def test_a_function_created_later_in_listener_is_not_executable_by_public(
    supabase_dsn: str,
) -> None:
    with (
        _changed(
            supabase_dsn,
            "CREATE FUNCTION listener.added_later() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "DROP FUNCTION listener.added_later()",
        ),
        psycopg.connect(supabase_dsn, autocommit=True) as conn,
    ):
        row = conn.execute(
            "SELECT count(*) FROM pg_proc AS p, "
            "aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS acl "
            "WHERE p.oid = 'listener.added_later()'::regprocedure AND acl.grantee = 0"
        ).fetchone()
    assert row == (0,)


def test_a_function_created_later_in_public_keeps_public_execute(supabase_dsn: str) -> None:
    """The revoke is global for the role (PostgreSQL allows no other); public gets it back."""
    with (
        _changed(
            supabase_dsn,
            "CREATE FUNCTION public.app_helper() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "DROP FUNCTION public.app_helper()",
        ),
        psycopg.connect(supabase_dsn, autocommit=True) as conn,
    ):
        row = conn.execute(
            "SELECT has_function_privilege('public', 'public.app_helper()', 'EXECUTE')"
        ).fetchone()
    assert row == (True,)


def test_a_database_upgraded_from_the_old_guide_with_its_policies_and_helper_fails_verify(
    empty_dsn: str,
) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        ensure_api_roles(conn)
        conn.execute(SUPABASE_GRANTS)
        conn.execute(ORIGINAL_SETUP_SQL)
        conn.execute(
            "ALTER TABLE public.tasks ENABLE ROW LEVEL SECURITY;"
            'CREATE POLICY "Enable read access for all users" ON public.tasks '
            "FOR SELECT USING (true);"
            "CREATE FUNCTION public.get_task(p_id uuid) RETURNS SETOF public.tasks "
            "LANGUAGE sql SECURITY DEFINER AS 'SELECT * FROM public.tasks WHERE id = p_id';"
        )
        conn.execute(SUPABASE_GRANTS)
    assert run_cli("migrate", "--dsn", empty_dsn).returncode == 0
    failed = failed_lines(empty_dsn)
    assert [line.split(" — ")[0] for line in failed] == [
        "✗ no row level security policy on listener's tables",
        "✗ no SECURITY DEFINER function in public is executable by API roles",
    ]
    assert "Enable read access for all users on tasks" in failed[0]
    assert "get_task(uuid) (by anon, authenticated)" in failed[1]
