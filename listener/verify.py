"""`listener verify`: the setup guide's checklist, automated, and the other ways in.

Beyond grants on our own objects it looks for what bypasses them: views over our
tables, policies on them, SECURITY DEFINER functions API roles can call,
service_role's writes to the ledger, and default privileges on future functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from listener import migrations
from listener.sqlfiles import query


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    title: str
    detail: str = ""  # what is wrong and how to fix it, when not ok

    def line(self) -> str:
        mark = "✓" if self.ok else "✗"
        return f"{mark} {self.title}" + (f" — {self.detail}" if self.detail else "")


def run_checks(conn: psycopg.Connection[Any]) -> list[Check]:
    """Every check, in the order a person would fix them."""
    checks = [_tables(conn)]
    if not checks[0].ok:
        return [*checks, _migrations(conn)]
    return [
        *checks,
        _claim_function(conn),
        _trigger(conn),
        _claim_index(conn),
        _rls(conn),
        _policies(conn),
        _api_roles(conn),
        _views(conn),
        _definer_functions(conn),
        _service_role(conn),
        _search_path(conn),
        _future_functions(conn),
        _migrations(conn),
    ]


def _scalar(conn: psycopg.Connection[Any], name: str) -> Any:
    row = conn.execute(query(name)).fetchone()
    return row[0] if row else None


def _tables(conn: psycopg.Connection[Any]) -> Check:
    ok = bool(_scalar(conn, "check_tables_exist"))
    return Check(
        ok,
        "tables public.tasks and public.transactions exist",
        "" if ok else "run `listener migrate`",
    )


def _claim_function(conn: psycopg.Connection[Any]) -> Check:
    ok = bool(_scalar(conn, "check_claim_function"))
    return Check(
        ok, "function claim_next_task() returns SETOF tasks", "" if ok else "run `listener migrate`"
    )


def _trigger(conn: psycopg.Connection[Any]) -> Check:
    row = conn.execute(query("check_notify_trigger")).fetchone()
    enabled, exists = (bool(row[0]), bool(row[1])) if row else (False, False)
    if not exists:
        return Check(
            False,
            "insert trigger sends NOTIFY",
            "trigger tasks_notify_inserted is missing: run `listener migrate`",
        )
    if not enabled:
        return Check(
            False,
            "insert trigger sends NOTIFY",
            "trigger is disabled: ALTER TABLE public.tasks ENABLE TRIGGER tasks_notify_inserted",
        )
    return Check(True, "insert trigger sends NOTIFY")


def _claim_index(conn: psycopg.Connection[Any]) -> Check:
    ok = bool(_scalar(conn, "check_claim_index"))
    return Check(
        ok,
        "claim index tasks_claim_idx exists",
        "" if ok else "run `listener migrate` (claims scan the whole table without it)",
    )


def _rls(conn: psycopg.Connection[Any]) -> Check:
    missing = [r[0] for r in conn.execute(query("tables_without_rls")).fetchall()]
    if missing:
        fixes = "; ".join(f"ALTER TABLE public.{t} ENABLE ROW LEVEL SECURITY" for t in missing)
        return Check(False, "row level security enabled", f"off on {', '.join(missing)}: {fixes}")
    return Check(True, "row level security enabled on every listener table")


def _api_roles(conn: psycopg.Connection[Any]) -> Check:
    roles = _scalar(conn, "api_roles_present") or []
    grants = conn.execute(query("api_role_privileges")).fetchall()
    if grants:
        shown = ", ".join(f"{role} {priv} on {obj}" for role, obj, priv in grants[:5])
        more = f" (+{len(grants) - 5} more)" if len(grants) > 5 else ""
        return Check(
            False, "API roles locked out", f"{shown}{more}: run `listener migrate` to revoke them"
        )
    who = " and ".join(roles) if roles else "PUBLIC (no anon/authenticated roles here)"
    return Check(True, f"API roles locked out: {who} can't read tasks or run functions")


def _policies(conn: psycopg.Connection[Any]) -> Check:
    rows = conn.execute(query("policies_on_our_tables")).fetchall()
    if rows:
        shown = ", ".join(f"{policy} on {table}" for table, policy in rows)
        fixes = "; ".join(f'DROP POLICY "{policy}" ON {table}' for table, policy in rows)
        return Check(
            False, "no row level security policy on listener's tables", f"{shown}: {fixes}"
        )
    return Check(True, "no row level security policy on listener's tables")


def _views(conn: psycopg.Connection[Any]) -> Check:
    rows = conn.execute(query("views_exposing_our_tables")).fetchall()
    title = "no view exposes listener's tables to API roles"
    if rows:
        shown = ", ".join(f"{kind} {name} readable by {readers}" for name, kind, readers in rows)
        return Check(
            False,
            title,
            f"{shown}: a view reads with its owner's rights and skips RLS; REVOKE SELECT on "
            "it from those roles, or (a plain view, PostgreSQL 15+) "
            "ALTER VIEW ... SET (security_invoker = true)",
        )
    return Check(True, title)


def _definer_functions(conn: psycopg.Connection[Any]) -> Check:
    rows = conn.execute(query("definer_functions_for_api_roles")).fetchall()
    title = "no SECURITY DEFINER function in public is executable by API roles"
    if rows:
        shown = ", ".join(f"{sig} (by {who})" for sig, who in rows)
        return Check(
            False,
            title,
            f"{shown}: each runs with its owner's rights, past RLS; REVOKE EXECUTE ON FUNCTION "
            "... FROM PUBLIC, anon, authenticated (grant it to who needs it), or make it "
            "SECURITY INVOKER",
        )
    return Check(True, title)


def _service_role(conn: psycopg.Connection[Any]) -> Check:
    rows = conn.execute(query("service_role_ledger_privileges")).fetchall()
    title = "service_role can't truncate the tables or write the payment ledger"
    if rows:
        shown = ", ".join(f"{priv} on {obj}" for obj, priv in rows)
        fixes = "; ".join(f"REVOKE {priv} ON {obj} FROM service_role" for obj, priv in rows)
        return Check(False, title, f"service_role has {shown}: {fixes}")
    return Check(True, title)


def _future_functions(conn: psycopg.Connection[Any]) -> Check:
    rows = conn.execute(query("listener_function_default_grantees")).fetchall()
    title = "functions created later in schema listener are not executable by API roles"
    if rows:
        shown = ", ".join(grantee for _, grantee, _ in rows)
        fixes = "; ".join(
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner}"
            f"{' IN SCHEMA listener' if scope == 'listener' else ''} "
            f"REVOKE EXECUTE ON FUNCTIONS FROM {grantee}"
            for scope, grantee, owner in rows
        )
        return Check(False, title, f"default privileges give EXECUTE to {shown}: {fixes}")
    return Check(True, title)


def _search_path(conn: psycopg.Connection[Any]) -> Check:
    unpinned = [
        sig
        for sig, config in conn.execute(query("our_functions")).fetchall()
        if not any(c.startswith("search_path=") for c in (config or []))
    ]
    if unpinned:
        return Check(
            False,
            "functions pin search_path",
            f"not pinned: {', '.join(unpinned)}: run `listener migrate`",
        )
    return Check(True, "every function pins its search_path")


def _migrations(conn: psycopg.Connection[Any]) -> Check:
    pending = migrations.pending(conn)
    drift = migrations.drifted(conn)
    if pending:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
        return Check(False, "migrations current", f"pending: {names}: run `listener migrate`")
    if drift:
        return Check(
            False, "migrations current", f"changed since applied: {', '.join(drift)} (schema drift)"
        )
    return Check(True, f"migrations current ({len(migrations.applied(conn))} applied)")
