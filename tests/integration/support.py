"""Helpers for integration tests: the CLI as a subprocess, Supabase's roles, the old schema."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

LISTENER = Path(sys.executable).with_name("listener")  # the installed console script
API_ROLES = ("anon", "authenticated")

# The schema apps made from the original setup guide (shared/seed/000_...txt):
# the documented columns with amount INTEGER, and its plpgsql claim function.
ORIGINAL_SETUP_SQL = """
CREATE TABLE IF NOT EXISTS public.tasks (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    type text NOT NULL,
    payload jsonb,
    status text DEFAULT 'pending',
    created_at timestamptz DEFAULT now(),
    started_at timestamptz,
    completed_at timestamptz,
    error text
);
CREATE TABLE IF NOT EXISTS public.transactions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id text UNIQUE NOT NULL,
    email text,
    amount integer,
    status text,
    created_at timestamptz DEFAULT now()
);
CREATE OR REPLACE FUNCTION claim_next_task()
RETURNS SETOF public.tasks
LANGUAGE plpgsql
AS $$
DECLARE
  _task_id uuid;
BEGIN
  SELECT id INTO _task_id
  FROM public.tasks
  WHERE status = 'pending'
  ORDER BY created_at ASC
  LIMIT 1
  FOR UPDATE SKIP LOCKED;

  IF _task_id IS NOT NULL THEN
    RETURN QUERY
    UPDATE public.tasks
    SET status = 'processing', started_at = NOW()
    WHERE id = _task_id
    RETURNING *;
  END IF;
END;
$$;
"""

# What Supabase grants its HTTP API roles in every project.
SUPABASE_GRANTS = """
GRANT USAGE ON SCHEMA public TO anon, authenticated;
GRANT ALL ON ALL TABLES IN SCHEMA public TO anon, authenticated;
GRANT ALL ON ALL FUNCTIONS IN SCHEMA public TO anon, authenticated;
GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO anon, authenticated;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated;
"""


# What Supabase grants its backend role: everything, and it bypasses RLS.
SUPABASE_SERVICE_ROLE_GRANTS = """
GRANT USAGE ON SCHEMA public TO service_role;
GRANT ALL ON ALL TABLES IN SCHEMA public TO service_role;
GRANT ALL ON ALL FUNCTIONS IN SCHEMA public TO service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO service_role;
"""


def ensure_api_roles(conn: psycopg.Connection[Any], *extra: str) -> None:
    """Create anon and authenticated (and ``extra`` roles, e.g. service_role) if missing.
    Roles are cluster-wide and shared with whoever else uses this server, so they are
    created idempotently and never dropped."""
    for role in (*API_ROLES, *extra):
        # As on Supabase: service_role bypasses RLS (test_enqueue_rpc relies on it).
        attributes = "NOLOGIN BYPASSRLS" if role == "service_role" else "NOLOGIN"
        # Exists already, or another session created it a moment ago.
        with contextlib.suppress(psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            conn.execute(sql.SQL("CREATE ROLE {} " + attributes).format(sql.Identifier(role)))


# Settings a developer may have exported for the shipped handlers or the worker. A
# test's subprocess gets none of them unless the test passes them itself, so a real
# SMTP relay, LLM key or webhook secret is never used (or leaked) by a test run.
DEVELOPER_SETTINGS = ("SMTP_", "LLM_", "RAZORPAY_", "CARE_PLAN_")
DEVELOPER_LISTENER_SETTINGS = frozenset(
    {"LISTENER_CREDIT_HOOK", "LISTENER_METRICS_HOST", "LISTENER_METRICS_PORT",
     "LISTENER_REQUIRE_EXPECTED_ORDERS"}
)  # fmt: skip


def is_developer_setting(name: str) -> bool:
    return name.startswith(DEVELOPER_SETTINGS) or name in DEVELOPER_LISTENER_SETTINGS


def subprocess_environ() -> dict[str, str]:
    """This process's environment without the developer's handler and worker settings."""
    return {k: v for k, v in os.environ.items() if not is_developer_setting(k)}


def cli_env(**overrides: str | None) -> dict[str, str]:
    """The environment for a `listener` subprocess: no DATABASE_URL unless given, and
    none of the developer's handler settings (``SMTP_*``, ``LLM_*``, ``RAZORPAY_*``...)."""
    env = {k: v for k, v in subprocess_environ().items() if k not in {"DATABASE_URL"}}
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 60,
    executable: Path = LISTENER,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(executable), *args],
        capture_output=True,
        text=True,
        env=env if env is not None else cli_env(),
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
