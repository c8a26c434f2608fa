"""The security migration: bounded text columns, and service_role kept off the ledger.

Upgrades are tested from a database at the previous migration holding old rows that
break the new rules: the migration must not fail on them, and (for tasks) no engine
UPDATE of such a row may fail afterwards.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from listener import migrations
from listener.sqlfiles import migrations as all_migrations
from listener.sqlfiles import query
from tests.integration.support import SUPABASE_SERVICE_ROLE_GRANTS, ensure_api_roles

SECURITY = next(m for m in all_migrations() if m.name == "security")


def _migrate_until_security(dsn: str) -> None:
    """The schema as the release before this migration left it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for migration in all_migrations():
            if migration.version >= SECURITY.version:
                break
            with conn.transaction():
                conn.execute(migration.sql.encode())
                conn.execute(
                    query("record_migration"),
                    {"version": migration.version, "name": migration.name,
                     "checksum": migration.checksum},
                )  # fmt: skip


def constraint_state(conn: psycopg.Connection[Any], name: str) -> bool | None:
    """convalidated of the named constraint; None if it does not exist."""
    row = conn.execute("SELECT convalidated FROM pg_constraint WHERE conname = %s", (name,))
    found = row.fetchone()
    return None if found is None else bool(found[0])


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO tasks (type, error) VALUES ('t', repeat('e', 4001))",
        "INSERT INTO transactions (order_id, amount, status) VALUES ('o-1', 1, 'paid; --')",
        "INSERT INTO transactions (order_id, amount, status) VALUES ('o-1', 1, '')",
        "INSERT INTO transactions (order_id, amount, status) VALUES (repeat('o', 129), 1, 'paid')",
        "INSERT INTO transactions (order_id, email, amount, status) "
        "VALUES ('o-1', repeat('e', 321), 1, 'paid')",
        "INSERT INTO payment_orders (order_id, amount, currency) VALUES ('', 1, 'INR')",
        "INSERT INTO payment_orders (order_id, email, amount, currency) "
        "VALUES ('o-1', repeat('e', 321), 1, 'INR')",
    ],
)
def test_out_of_bounds_values_are_refused(conn: psycopg.Connection[Any], statement: str) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(statement)


def test_values_within_bounds_are_accepted(conn: psycopg.Connection[Any]) -> None:
    conn.execute("INSERT INTO tasks (type, error) VALUES ('t', repeat('e', 4000))")
    conn.execute(
        "INSERT INTO transactions (order_id, email, amount, status) "
        "VALUES (repeat('o', 128), repeat('e', 320), 1, 'captured')"
    )
    assert conn.execute("SELECT public.record_transaction('o-2', NULL, 5, 'paid')").fetchone() == (
        True,
    )


def test_upgrade_shortens_old_long_errors_so_engine_updates_still_succeed(
    empty_dsn: str,
) -> None:
    _migrate_until_security(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        # A processing row an old release claimed, with an error an app wrote long ago.
        task_id = conn.execute(
            "INSERT INTO tasks (type, status, worker_id, attempts, lease_expires_at, error) "
            "VALUES ('t', 'processing', 'old-worker', 1, now() - interval '1 min', "
            "repeat('x', 10000)) RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        migrations.migrate(conn)
        assert constraint_state(conn, "tasks_error_length") is True
        row = conn.execute("SELECT char_length(error), right(error, 1) FROM tasks").fetchone()
        assert row == (4000, "…")
        # The engine's write of that row goes through: a restarted worker puts back the
        # rows processing under its id that it does not hold (the error is kept).
        params = {"worker_id": "old-worker", "ids": [uuid.uuid4()], "tokens": [uuid.uuid4()]}
        assert conn.execute(query("reconcile_claims"), params).fetchall() == [(task_id, "t")]
        assert conn.execute("SELECT status FROM tasks").fetchone() == ("pending",)


def test_upgrade_with_old_ledger_rows_that_break_a_rule_keeps_them_and_checks_new_rows(
    empty_dsn: str,
) -> None:
    _migrate_until_security(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO transactions (order_id, amount, status) VALUES ('old-1', 1, 'Paid OK')"
        )
        migrations.migrate(conn)  # a warning, not an error
        assert constraint_state(conn, "transactions_status_valid") is False  # NOT VALID
        assert constraint_state(conn, "transactions_order_id_length") is True
        assert conn.execute("SELECT status FROM transactions").fetchall() == [("Paid OK",)]
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO transactions (order_id, amount, status) VALUES ('new-1', 1, 'Paid OK')"
            )


def _as_service_role(conn: psycopg.Connection[Any], statement: str) -> None:
    with conn.transaction(force_rollback=True):
        conn.execute(sql.SQL("SET LOCAL ROLE service_role"))
        conn.execute(statement)


@pytest.fixture
def supabase_conn(empty_dsn: str) -> Any:
    """Supabase's grants to service_role on an empty database, then every migration."""
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        ensure_api_roles(conn, "service_role")
        conn.execute(SUPABASE_SERVICE_ROLE_GRANTS)
        migrations.migrate(conn)
        yield conn


@pytest.mark.parametrize(
    "statement",
    [
        "TRUNCATE public.transactions",
        "TRUNCATE public.tasks",
        "TRUNCATE public.payment_orders",
        "INSERT INTO public.transactions (order_id, amount, status) VALUES ('pre-1', 1, 'paid')",
        "UPDATE public.transactions SET amount = 0",
        "DELETE FROM public.transactions",
        "SELECT public.record_transaction('pre-1', NULL, 1, 'paid')",
    ],
)
def test_service_role_cannot_truncate_or_write_the_ledger(
    supabase_conn: psycopg.Connection[Any], statement: str
) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _as_service_role(supabase_conn, statement)


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM public.transactions",
        "INSERT INTO public.tasks (type) VALUES ('send_email')",
        "SELECT public.enqueue_task('send_email', '{}')",
        "INSERT INTO public.payment_orders (order_id, amount, currency) VALUES ('o', 1, 'INR')",
    ],
)
def test_service_role_keeps_what_producers_and_apps_use(
    supabase_conn: psycopg.Connection[Any], statement: str
) -> None:
    _as_service_role(supabase_conn, statement)


def test_the_worker_still_records_payments(supabase_conn: psycopg.Connection[Any]) -> None:
    order = f"order_{uuid.uuid4().hex[:8]}"
    row = supabase_conn.execute(
        "SELECT public.record_transaction(%s, NULL, 100, 'captured')", (order,)
    ).fetchone()
    assert row == (True,)
