"""Apply the numbered migrations, and render them as one pasteable script."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from listener.sqlfiles import Migration, migrations, query

# Serialises concurrent `listener migrate` runs (and the pasted script).
ADVISORY_LOCK_KEY = 1_920_462_051  # arbitrary, fixed forever


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    version: int
    name: str
    checksum: str


def applied(conn: psycopg.Connection[Any]) -> list[AppliedMigration]:
    """Migrations recorded in the database (empty before the first one)."""
    row = conn.execute(query("migrations_table_exists")).fetchone()
    if not row or not row[0]:
        return []
    return [AppliedMigration(*r) for r in conn.execute(query("applied_migrations")).fetchall()]


def pending(conn: psycopg.Connection[Any]) -> list[Migration]:
    """Migrations not yet recorded, in order."""
    done = {m.version for m in applied(conn)}
    return [m for m in migrations() if m.version not in done]


def drifted(conn: psycopg.Connection[Any]) -> list[str]:
    """Names of applied migrations whose file changed since they ran."""
    known = {m.version: m for m in migrations()}
    return [
        f"{a.version:04d}_{a.name}"
        for a in applied(conn)
        if a.version in known and known[a.version].checksum != a.checksum
    ]


def migrate(conn: psycopg.Connection[Any]) -> list[Migration]:
    """Apply pending migrations, one transaction each, under an advisory lock.

    ``conn`` must be in autocommit mode. Returns the migrations it applied.
    """
    if not conn.autocommit:
        raise ValueError("migrate() needs an autocommit connection")
    conn.execute(query("advisory_lock"), {"key": ADVISORY_LOCK_KEY})
    try:
        done = []
        for migration in pending(conn):
            with conn.transaction():
                conn.execute(migration.sql.encode())
                conn.execute(query("record_migration"), _record(migration))
            done.append(migration)
        return done
    finally:
        conn.execute(query("advisory_unlock"), {"key": ADVISORY_LOCK_KEY})


def schema_script() -> str:
    """Every migration as one script that can be pasted and re-run without error."""
    parts = [
        "-- listener schema: paste into the Supabase SQL editor (or psql) and run.",
        "-- Safe to run again: every statement is idempotent.",
        "BEGIN;",
        "SET LOCAL client_min_messages = warning;",
        f"DO $$ BEGIN PERFORM pg_advisory_xact_lock({ADVISORY_LOCK_KEY}); END $$;",
    ]
    for migration in migrations():
        parts.append(f"\n-- ==== {migration.version:04d}_{migration.name} ====\n")
        parts.append(migration.sql.strip())
        parts.append(
            "INSERT INTO listener.schema_migrations (version, name, checksum) "
            f"VALUES ({migration.version}, '{migration.name}', '{migration.checksum}') "
            "ON CONFLICT (version) DO NOTHING;"
        )
    parts.append("COMMIT;\n")
    return "\n".join(parts)


def _record(migration: Migration) -> dict[str, Any]:
    return {"version": migration.version, "name": migration.name, "checksum": migration.checksum}
