"""One migrated database per handler test module, emptied before each test.

Creating and dropping a database per test costs about a second on PostgreSQL 15;
handler tests only need empty tables, so a module shares one database.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg

from tests import pg


def module_database(admin_dsn: str, template: str) -> Iterator[str]:
    name = pg.create_database(admin_dsn, template)
    try:
        yield pg.dsn_for(admin_dsn, name)
    finally:
        pg.drop_database(admin_dsn, name)


def empty_tables(dsn: str) -> str:
    """Empty what the handlers write; return ``dsn``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE public.tasks, public.transactions, public.care_plans, public.payment_orders"
        )
        conn.execute("DROP TABLE IF EXISTS public.test_credits")
    return dsn
