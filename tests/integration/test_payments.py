"""listener.payments on real PostgreSQL, and migration 0002 that backs it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from listener import migrations, payments
from listener.sqlfiles import migrations as migration_files
from tests.integration import handler_db

pytestmark = pytest.mark.anyio

NEW_TABLES = ("public.care_plans", "public.payment_orders")


@pytest.fixture(scope="module")
def module_dsn(pg_admin_dsn: str, template_db: str) -> Iterator[str]:
    yield from handler_db.module_database(pg_admin_dsn, template_db)


@pytest.fixture
def dsn(module_dsn: str) -> str:
    """Overrides conftest's per-test database: this module's, emptied."""
    return handler_db.empty_tables(module_dsn)


def test_record_transaction_is_true_only_the_first_time(conn: psycopg.Connection[Any]) -> None:
    assert payments.record_transaction(conn, "order_1", "a@b.co", 49_900, "captured") is True
    assert payments.record_transaction(conn, "order_1", "a@b.co", 49_900, "paid") is False
    rows = conn.execute("SELECT order_id, email, amount, status FROM transactions").fetchall()
    assert rows == [("order_1", "a@b.co", 49_900, "captured")]


async def test_async_record_transaction_is_true_only_the_first_time(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        assert await payments.arecord_transaction(conn, "order_2", None, 100, "paid") is True
        assert await payments.arecord_transaction(conn, "order_2", None, 100, "paid") is False


def test_record_transaction_joins_the_callers_transaction(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn) as other:
        assert payments.record_transaction(other, "order_3", None, 100, "paid")
        other.rollback()
    assert conn.execute("SELECT count(*) FROM transactions").fetchone() == (0,)


def test_restating_an_order_expectation_replaces_it(conn: psycopg.Connection[Any]) -> None:
    payments.expect_order(conn, "order_4", "a@b.co", 100, "inr")
    payments.expect_order(conn, "order_4", "a@b.co", 250, "INR")
    rows = conn.execute("SELECT order_id, email, amount, currency FROM payment_orders").fetchall()
    assert rows == [("order_4", "a@b.co", 250, "INR")]


async def test_expected_order_reads_back_what_the_app_stated(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await payments.aexpect_order(conn, "order_5", None, 999, "USD")
        assert await payments.aexpected_order(conn, "order_5") == payments.ExpectedOrder(
            "order_5", None, 999, "USD"
        )
        assert await payments.aexpected_order(conn, "order_missing") is None


def test_migration_0002_runs_again_without_error(conn: psycopg.Connection[Any]) -> None:
    [_, second] = migration_files()[:2]
    payments.expect_order(conn, "order_6", None, 100)
    for _ in range(2):
        with conn.transaction():
            conn.execute(second.sql.encode())
    assert conn.execute("SELECT count(*) FROM payment_orders").fetchone() == (1,)


def test_pasted_schema_script_with_0002_runs_twice_on_an_empty_database(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        for _ in range(2):
            conn.execute(migrations.schema_script().encode())
        versions = [m.version for m in migrations.applied(conn)]
    assert versions[:2] == [1, 2]


def test_new_tables_have_row_level_security(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "SELECT relname, relrowsecurity FROM pg_class WHERE oid = ANY(%s::regclass[])",
        (list(NEW_TABLES),),
    ).fetchall()
    assert sorted(rows) == [("care_plans", True), ("payment_orders", True)]


def test_migration_0002_revokes_what_public_was_granted(conn: psycopg.Connection[Any]) -> None:
    # As a Supabase-like default would: everything granted to everybody.
    conn.execute("GRANT ALL ON public.care_plans, public.payment_orders TO PUBLIC")
    with conn.transaction():
        conn.execute(migration_files()[1].sql.encode())
    granted = conn.execute(
        "SELECT c.relname, a.privilege_type FROM pg_class AS c, aclexplode(c.relacl) AS a "
        "WHERE c.oid = ANY(%s::regclass[]) AND a.grantee = 0",
        (list(NEW_TABLES),),
    ).fetchall()
    assert granted == []


def test_order_expectation_refuses_negative_amounts_in_sql(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="payment_orders_amount_not_negative"):
        conn.execute(
            "INSERT INTO payment_orders (order_id, amount, currency) VALUES ('o', -1, 'INR')"
        )
