"""public.enqueue_task(): the RPC that Supabase's PostgREST exposes to the backend role."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import psycopg
import pytest
from psycopg import sql

from listener import migrations


def test_enqueue_task_inserts_a_due_task_and_returns_its_id(
    conn: psycopg.Connection[Any],
) -> None:
    (task_id,) = conn.execute(
        "SELECT public.enqueue_task('send_email', %s::jsonb)", (json.dumps({"to": "x"}),)
    ).fetchone() or (None,)
    row = conn.execute(
        "SELECT type, payload, status, run_at <= now() FROM tasks WHERE id = %s", (task_id,)
    ).fetchone()
    assert row == ("send_email", {"to": "x"}, "pending", True)


def test_enqueue_task_returns_the_unfinished_holder_of_a_dedupe_key(
    conn: psycopg.Connection[Any],
) -> None:
    call = "SELECT public.enqueue_task('sync', '{}', NULL, 0, 'sync:42')"
    first = conn.execute(call).fetchone()
    second = conn.execute(call).fetchone()
    assert first == second
    assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (1,)


def test_enqueue_task_rejects_what_the_table_rejects(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="tasks_type_valid"):
        conn.execute("SELECT public.enqueue_task('bad type!', '{}')")
    with pytest.raises(psycopg.errors.CheckViolation, match="tasks_payload_object"):
        conn.execute("SELECT public.enqueue_task('t', '[1, 2]')")
    assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


def test_only_service_role_may_call_enqueue_task(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        # Supabase's backend role; cluster-wide, so created idempotently, never dropped.
        with contextlib.suppress(psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            conn.execute("CREATE ROLE service_role NOLOGIN BYPASSRLS")
        migrations.migrate(conn)
        # Supabase grants its backend role every table in public.
        conn.execute("GRANT USAGE ON SCHEMA public TO service_role")
        conn.execute("GRANT ALL ON public.tasks TO service_role")
        with conn.transaction(force_rollback=True):
            conn.execute(sql.SQL("SET LOCAL ROLE service_role"))
            (task_id,) = conn.execute("SELECT public.enqueue_task('t', '{}')").fetchone() or (None,)
            assert task_id is not None
        with conn.transaction(force_rollback=True):
            conn.execute("CREATE ROLE listener_test_other NOLOGIN")
            conn.execute(sql.SQL("SET LOCAL ROLE listener_test_other"))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT public.enqueue_task('t', '{}')")
