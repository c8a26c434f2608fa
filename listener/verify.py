"""`listener verify`: the setup guide's checklist, automated."""

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
        _api_roles(conn),
        _search_path(conn),
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
