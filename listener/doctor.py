"""`listener doctor`: diagnose a deployment, one ✓/⚠/✗ line per check with the fix.

The checks that matter most come first: can this connection LISTEN at all, is
the schema right, then the health of the queue and of the server around it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from listener import db, verify
from listener.doctor_checks import CHECKS, Finding, Level, Thresholds
from listener.sqlfiles import query

SUPABASE_POOLER_PORT = "6543"

__all__ = ["Finding", "Level", "Thresholds", "diagnose", "exit_code"]


def diagnose(dsn: str, thresholds: Thresholds | None = None) -> list[Finding]:
    """Run every check against ``dsn``; never raises for a failing check."""
    limits = thresholds or Thresholds()
    # prepare_threshold=None: a transaction-mode pooler may not keep prepared statements.
    with db.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
        findings = [_guarded("LISTEN/NOTIFY round trip", listen_round_trip, conn, limits, dsn)]
        schema = _schema_findings(conn)
        findings += schema
        if schema[0].title.startswith("tables") and schema[0].level is Level.FAIL:
            findings.append(
                Finding(Level.WARN, "queue checks skipped", "the tables are missing (see above)")
            )
            return findings
        for title, check in CHECKS:
            findings.append(_guarded(title, check, conn, limits))
    return findings


def exit_code(findings: list[Finding]) -> int:
    """1 when any check failed (✗), else 0; warnings alone don't fail."""
    return 1 if any(f.level is Level.FAIL for f in findings) else 0


def _schema_findings(conn: psycopg.Connection[Any]) -> list[Finding]:
    """`listener verify`'s checks: schema, trigger, claim index, RLS, API roles, migrations."""
    try:
        checks = verify.run_checks(conn)
    except psycopg.Error as exc:
        return [Finding(Level.FAIL, "schema checks: could not check", _no_access(exc))]
    return [Finding(Level.OK if c.ok else Level.FAIL, c.title, c.detail) for c in checks]


def _guarded(
    title: str, check: Callable[..., Finding], conn: psycopg.Connection[Any], *args: Any
) -> Finding:
    """A check whose query fails (often permissions) is a ✗ with the reason, not a crash."""
    try:
        return check(conn, *args)
    except psycopg.Error as exc:
        return Finding(Level.FAIL, f"{title}: could not check", _no_access(exc))


def _no_access(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    reason = lines[0] if lines else type(exc).__name__
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        reason += " (run doctor with the worker's connection string: it needs the same access)"
    return reason


def listen_round_trip(conn: psycopg.Connection[Any], limits: Thresholds, dsn: str) -> Finding:
    """LISTEN on this connection, NOTIFY from a second one, wait for it to arrive.

    A transaction-mode pooler hands the LISTEN to whichever server connection is
    free and takes it back at once, so the notification never reaches us.
    """
    channel = f"listener_doctor_{secrets.token_hex(6)}"
    ident = sql.Identifier(channel)
    conn.execute(sql.SQL(query("doctor_listen")).format(channel=ident))
    try:
        with db.connect(dsn, autocommit=True, prepare_threshold=None) as other:
            other.execute(query("doctor_notify"), {"channel": channel, "payload": "ping"})
        deadline = limits.notify_deadline_s
        arrived = any(n.channel == channel for n in conn.notifies(timeout=deadline, stop_after=1))
    finally:
        conn.execute(sql.SQL(query("doctor_unlisten")).format(channel=ident))
    title = "LISTEN/NOTIFY works on this connection"
    if arrived:
        return Finding(Level.OK, title)
    return Finding(Level.FAIL, title, _pooler_advice(dsn, deadline))


def _pooler_advice(dsn: str, deadline_s: float) -> str:
    port = str(conninfo_to_dict(dsn).get("port") or "5432")
    hint = (
        f" (port {SUPABASE_POOLER_PORT} is Supabase's transaction-mode pooler)"
        if port == SUPABASE_POOLER_PORT
        else ""
    )
    return (
        f"a notification sent from a second connection did not arrive within {deadline_s:g}s: "
        f"this connection goes through a transaction-mode pooler{hint}, where LISTEN cannot "
        "work. Give the worker the direct database connection, or a session-mode pooler "
        "(port 5432 on Supabase)"
    )
