"""Database fixtures: one migrated template per run, a fresh database per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests import pg


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """DSN of a server where tests may create and drop databases."""
    with pg.server() as (dsn, description):
        print(f"\ntests use {description}")
        yield dsn


@pytest.fixture(scope="session")
def template_db(pg_admin_dsn: str) -> Iterator[str]:
    name = pg.create_template(pg_admin_dsn)
    yield name
    pg.drop_database(pg_admin_dsn, name)


@pytest.fixture
def dsn(pg_admin_dsn: str, template_db: str) -> Iterator[str]:
    """A migrated database of this test's own."""
    name = pg.create_database(pg_admin_dsn, template_db)
    yield pg.dsn_for(pg_admin_dsn, name)
    pg.drop_database(pg_admin_dsn, name)


@pytest.fixture
def empty_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """An empty database (no migrations) of this test's own."""
    name = pg.create_database(pg_admin_dsn, None)
    yield pg.dsn_for(pg_admin_dsn, name)
    pg.drop_database(pg_admin_dsn, name)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to this test's database."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="module")
def module_conn(pg_admin_dsn: str, template_db: str) -> Iterator[psycopg.Connection[Any]]:
    """A migrated database shared by one module's tests that leave it as they found it."""
    name = pg.create_database(pg_admin_dsn, template_db)
    try:
        with psycopg.connect(pg.dsn_for(pg_admin_dsn, name), autocommit=True) as connection:
            yield connection
    finally:
        pg.drop_database(pg_admin_dsn, name)


@pytest.fixture(scope="module")
def module_empty_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """An empty database shared by one module's tests."""
    name = pg.create_database(pg_admin_dsn, None)
    yield pg.dsn_for(pg_admin_dsn, name)
    pg.drop_database(pg_admin_dsn, name)


@pytest.fixture
def effects_conn(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """``conn`` with the test_effects ledger table created."""
    from tests.integration.engine_support import EFFECTS_TABLE

    conn.execute(EFFECTS_TABLE)
    return conn


@pytest.fixture
def metrics_worker(dsn: str) -> Iterator[tuple[Any, int]]:
    """A `listener run` process serving /metrics on a free loopback port: (process, port)."""
    from tests.integration.engine_support import WorkerProcess, free_port

    port = free_port()
    process = WorkerProcess(
        dsn, "--handlers", "tests.observability_handlers",
        "--metrics-host", "127.0.0.1", "--metrics-port", str(port),
    )  # fmt: skip
    try:
        process.wait_started()
        yield process, port
    finally:
        process.stop()
