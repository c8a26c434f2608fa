"""The machine, the server, and the scratch databases every item runs in."""

from __future__ import annotations

import contextlib
import os
import platform
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from listener import migrations
from listener.sqlfiles import query

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
NOOP_TYPE = "bench.noop"
CONNECT_PATIENCE_S = 120.0


def connect(dsn: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """Connect, waiting out a full server: the shared server may briefly run out of slots."""
    deadline = time.monotonic() + CONNECT_PATIENCE_S
    while True:
        try:
            return psycopg.connect(dsn, autocommit=True, **kwargs)
        except psycopg.OperationalError as exc:
            if "too many clients" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.2, 1.0))


def admin_dsn(flag: str | None) -> str:
    """``--dsn``, then ``DATABASE_URL``, then the local PostgreSQL 15."""
    return flag or os.environ.get("DATABASE_URL") or DEFAULT_DSN


def machine() -> dict[str, Any]:
    """Cores, memory and software of the machine running the benchmark."""
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": platform.processor() or platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "psycopg": psycopg.__version__,
    }


def server(dsn: str) -> dict[str, Any]:
    """PostgreSQL version and the durability settings the figures depend on."""
    with connect(dsn) as conn:
        row = conn.execute(query("bench_server_settings")).fetchone()
    assert row is not None
    version, sync_commit, fsync, shared_buffers, max_connections, autovacuum = row
    return {
        "version": version,
        "synchronous_commit": sync_commit,
        "fsync": fsync,
        "shared_buffers": shared_buffers,
        "max_connections": max_connections,
        # Off on the development machines: then no table is ever analyzed by itself.
        "autovacuum": autovacuum,
    }


def dbname(dsn: str) -> str:
    """The database a DSN names."""
    return str(conninfo_to_dict(dsn)["dbname"])


@contextlib.contextmanager
def scratch_database(admin: str, label: str, *, migrate: bool = True) -> Iterator[str]:
    """A new database of the benchmark's own (migrated unless told otherwise), dropped after."""
    name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    with connect(admin) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(admin, dbname=name)
    try:
        if migrate:
            with connect(dsn) as conn:
                migrations.migrate(conn)
        yield dsn
    finally:
        with connect(admin) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def seed_pending(dsn: str, n: int, task_type: str = NOOP_TYPE, *, analyze: bool = True) -> None:
    """Empty the tasks table, then add ``n`` pending tasks due now (and analyse)."""
    with connect(dsn) as conn:
        conn.execute(query("bench_truncate_tasks"))
        conn.execute(query("bench_seed_pending"), {"type": task_type, "n": n})
        if analyze:
            conn.execute(query("bench_analyze_tasks"))


def drain_window(dsn: str, task_type: str = NOOP_TYPE) -> tuple[int, float]:
    """(completed count, seconds from the first claim to the last completion)."""
    with connect(dsn) as conn:
        row = conn.execute(query("bench_drain_window"), {"type": task_type}).fetchone()
    assert row is not None
    return int(row[0]), float(row[1] or 0.0)


def unfinished(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(query("bench_unfinished_count")).fetchone()
    return int(row[0]) if row else 0


def run_sql(dsn: str, name: str, params: dict[str, Any] | None = None) -> None:
    """Run one named query in its own autocommit connection."""
    with connect(dsn) as conn:
        conn.execute(query(name), params)
