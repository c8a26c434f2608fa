"""The queue and server health checks behind `listener doctor` (after the schema checks).

Each check takes the connection and the thresholds and returns one Finding.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from listener.notifier import LISTEN_APPLICATION_NAME
from listener.sqlfiles import query


class Level(enum.Enum):
    OK = "✓"
    WARN = "⚠"
    FAIL = "✗"


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    title: str
    fix: str = ""  # what is wrong and what to do, in plain words

    def line(self) -> str:
        return f"{self.level.value} {self.title}" + (f" — {self.fix}" if self.fix else "")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a finding turns from ✓ into ⚠ or ✗. Defaults suit production."""

    notify_deadline_s: float = 1.5  # LISTEN/NOTIFY round trip
    notify_queue_warn: float = 0.10  # fraction of the server's NOTIFY queue
    notify_queue_fail: float = 0.50
    notify_lock_waiters: int = 2  # sessions queued at once for the NOTIFY commit lock
    notify_lock_samples: int = 10  # ...looked at this many times
    notify_lock_interval_s: float = 0.02  # ...this far apart
    idle_listener_s: float = 10.0  # a listener idle in a transaction this long
    long_transaction_s: float = 300.0
    dead_ratio: float = 0.20  # dead / (live + dead) tuples in tasks
    dead_min_rows: int = 1000  # ...and at least this many dead rows
    pending_age_s: float = 300.0  # due pending tasks waiting this long
    lease_grace_s: float = 60.0  # expired leases nobody rescued for this long
    running_age_s: float = 3600.0  # a handler still running (lease kept alive) this long
    worker_stale_s: float = 30.0  # a worker not seen for this long is gone
    min_statement_timeout_s: float = 5.0


def notify_queue(conn: psycopg.Connection[Any], limits: Thresholds) -> Finding:
    usage = float(_one(conn, "doctor_notify_queue_usage")[0])
    title = f"notification queue {usage:.1%} full"
    fix = (
        "a listening session is not reading its notifications (often one idle in a "
        "transaction, see below); when the queue is full every NOTIFY, and so every "
        "INSERT into tasks, fails"
    )
    if usage >= limits.notify_queue_fail:
        return Finding(Level.FAIL, title, fix)
    if usage >= limits.notify_queue_warn:
        return Finding(Level.WARN, title, fix)
    return Finding(Level.OK, title)


def notify_lock(conn: psycopg.Connection[Any], limits: Thresholds) -> Finding:
    """Commits queued behind the server-wide lock a notifying commit takes (docs/notify.md)."""
    most, seen_in = 0, 0
    apps: set[str] = set()
    for sample in range(limits.notify_lock_samples):
        if sample:
            time.sleep(limits.notify_lock_interval_s)
        waiting = conn.execute(query("doctor_notify_lock_waiters")).fetchall()
        most = max(most, len(waiting))
        seen_in += bool(waiting)
        apps.update(app or "no application_name" for (app,) in waiting)
    span = _span(limits.notify_lock_samples * limits.notify_lock_interval_s)
    if most < limits.notify_lock_waiters:
        return Finding(Level.OK, f"no queue for the NOTIFY commit lock (sampled over {span})")
    return Finding(
        Level.WARN,
        f"up to {most} commits queued for the NOTIFY lock at once, in {seen_in} of "
        f"{limits.notify_lock_samples} samples over {span} ({', '.join(sorted(apps))})",
        "every transaction that sent a NOTIFY commits alone, holding a server-wide lock "
        "through its WAL flush, so concurrent producers lose group commit. The insert "
        "trigger skips its NOTIFY while a worker watches the task's type: check that "
        "migration 0008 is applied (`listener verify`) and that listening workers run "
        "for these types; other NOTIFY senders (your own triggers, other apps on the "
        "server) queue on the same lock",
    )


def idle_listeners(conn: psycopg.Connection[Any], limits: Thresholds) -> Finding:
    params = {"idle_s": limits.idle_listener_s, "application_name": LISTEN_APPLICATION_NAME}
    rows = conn.execute(query("doctor_idle_listeners"), params).fetchall()
    if not rows:
        return Finding(Level.OK, "no listening session idle in a transaction")
    who = ", ".join(
        f"pid {pid} ({app or 'no application_name'}, {_span(s)})" for pid, app, s in rows
    )
    return Finding(
        Level.FAIL,
        f"{len(rows)} listening session(s) idle in a transaction: {who}",
        "a listener inside an open transaction holds back the server's notification queue "
        "for everybody: commit or roll back in that client, or end it with "
        "SELECT pg_terminate_backend(pid); set idle_in_transaction_session_timeout so "
        "the server ends such sessions itself",
    )


def long_transactions(conn: psycopg.Connection[Any], limits: Thresholds) -> Finding:
    rows = conn.execute(query("doctor_long_transactions"), {"age_s": limits.long_transaction_s})
    found = rows.fetchall()
    if not found:
        return Finding(
            Level.OK,
            f"no long-running transaction (none open longer than "
            f"{_span(limits.long_transaction_s)})",
        )
    who = ", ".join(f"{holder} ({app or '-'}, {_span(age)})" for holder, app, age in found[:3])
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    return Finding(
        Level.WARN,
        f"{len(found)} long-running transaction(s): {who}{more}",
        "while they stay open VACUUM cannot remove dead task rows and claims slow down: "
        "end them (COMMIT/ROLLBACK in the client, or pg_terminate_backend(pid); "
        "COMMIT PREPARED/ROLLBACK PREPARED for prepared ones)",
    )


def dead_tuples(conn: psycopg.Connection[Any], limits: Thresholds) -> Finding:
    live, dead, server_on, table_on = _one(conn, "doctor_dead_tuples")
    live, dead = int(live or 0), int(dead or 0)
    ratio = dead / (live + dead) if live + dead else 0.0
    title = f"tasks table {ratio:.0%} dead rows ({dead} dead, {live} live)"
    if dead < limits.dead_min_rows:
        return Finding(Level.OK, f"tasks table has few dead rows ({dead})")
    if ratio < limits.dead_ratio:
        return Finding(Level.OK, title)
    vacuum_now = "run VACUUM (ANALYZE) public.tasks now"
    if not table_on:
        fix = "autovacuum is off for public.tasks: ALTER TABLE public.tasks RESET "
        fix += f"(autovacuum_enabled), then {vacuum_now}"
        return Finding(Level.FAIL, title, fix)
    if not server_on:
        fix = f"autovacuum is off on the server: set autovacuum = on, then {vacuum_now}"
        return Finding(Level.FAIL, title, fix)
    return Finding(
        Level.WARN,
        title,
        f"autovacuum is not keeping up: end long transactions (see above), {vacuum_now}, "
        "and give autovacuum more room (a higher autovacuum_vacuum_cost_limit, or a "
        "lower autovacuum_vacuum_scale_factor on tasks)",
    )


def stale_pending(conn: psycopg.Connection[Any], limits: Thresholds) -> Finding:
    count, age_s = _one(conn, "doctor_stale_pending", {"age_s": limits.pending_age_s})
    if not count:
        return Finding(
            Level.OK, f"no due task has waited longer than {_span(limits.pending_age_s)}"
        )
    return Finding(
        Level.WARN,
        f"{count} due task(s) waiting longer than {_span(limits.pending_age_s)} "
        f"(oldest {_span(age_s)})",
        "workers are down, too few, or don't handle these types (see below): "
        "check `listener status`, start more workers or raise --concurrency",
    )


def unhandled_types(conn: psycopg.Connection[Any], limits: Thresholds) -> Finding:
    stale = {"stale_s": limits.worker_stale_s}
    rows = conn.execute(query("pending_types_without_worker"), stale).fetchall()
    if not rows:
        return Finding(Level.OK, "every pending task type has a live worker (or none is pending)")
    types = ", ".join(f"{t} ({n})" for t, n in rows)
    if not int(_one(conn, "doctor_live_worker_count", stale)[0]):
        return Finding(
            Level.WARN,
            f"no live worker (none seen in the last {_span(limits.worker_stale_s)}); "
            f"pending: {types}",
            "start one: `listener run --handlers YOUR_MODULE`",
        )
    return Finding(
        Level.WARN,
        f"pending types no live worker handles: {types}",
        "start a worker whose handlers cover them, or cancel them: "
        f"`listener cancel --type {rows[0][0]}`",
    )


def expired_leases(conn: psycopg.Connection[Any], limits: Thresholds) -> Finding:
    count, age_s = _one(conn, "doctor_expired_leases", {"grace_s": limits.lease_grace_s})
    if not count:
        return Finding(Level.OK, "no processing task is stuck with an expired lease")
    return Finding(
        Level.FAIL,
        f"{count} task(s) stuck in processing, lease expired {_span(age_s)} ago",
        "their worker died and no running worker has rescued them: start a worker "
        "(its rescuer puts them back to pending, or fails them when out of attempts)",
    )


def long_running(conn: psycopg.Connection[Any], limits: Thresholds) -> Finding:
    count, age_s, types = _one(conn, "doctor_long_running", {"age_s": limits.running_age_s})
    if not count:
        return Finding(Level.OK, f"no handler has run longer than {_span(limits.running_age_s)}")
    return Finding(
        Level.WARN,
        f"{count} task(s) running longer than {_span(limits.running_age_s)} "
        f"(oldest {_span(age_s)}; types: {', '.join(types)})",
        "their workers are alive and keep the lease, so nobody will rescue them: a "
        "handler that hangs without a timeout is kept forever. Give the type a "
        "timeout_s (or --timeout-s), and stop the worker to put the task back",
    )


def idle_in_transaction_timeout(conn: psycopg.Connection[Any], limits: Thresholds) -> Finding:
    role, idle_ms, _ = _one(conn, "doctor_timeouts")
    if idle_ms:
        return Finding(Level.OK, f"idle_in_transaction_session_timeout = {_span(idle_ms / 1000)}")
    return Finding(
        Level.WARN,
        f"idle_in_transaction_session_timeout is off for role {role}",
        "a client that leaves a transaction open can pin the notification queue and "
        "vacuum forever: ALTER ROLE "
        f"{role} SET idle_in_transaction_session_timeout = '5min' (longer than your "
        "slowest transactional handler)",
    )


def statement_timeout(conn: psycopg.Connection[Any], limits: Thresholds) -> Finding:
    role, _, statement_ms = _one(conn, "doctor_timeouts")
    shown = "off" if not statement_ms else _span(statement_ms / 1000)
    if statement_ms and statement_ms / 1000 < limits.min_statement_timeout_s:
        return Finding(
            Level.WARN,
            f"statement_timeout = {shown} for role {role} is very low",
            "claims and batch updates can be cancelled under load: ALTER ROLE "
            f"{role} SET statement_timeout = '30s' (or RESET statement_timeout)",
        )
    return Finding(Level.OK, f"statement_timeout = {shown}")


def _one(conn: psycopg.Connection[Any], name: str, params: dict[str, Any] | None = None) -> Any:
    row = conn.execute(query(name), params).fetchone()
    assert row is not None
    return row


def _span(seconds: Any) -> str:
    s = float(seconds or 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.3g}{unit}"
    return f"{s:.3g}s"


CHECKS: list[tuple[str, Callable[[psycopg.Connection[Any], Thresholds], Finding]]] = [
    ("notification queue", notify_queue),
    ("NOTIFY lock", notify_lock),
    ("listeners idle in a transaction", idle_listeners),
    ("long-running transactions", long_transactions),
    ("dead rows in tasks", dead_tuples),
    ("pending tasks waiting", stale_pending),
    ("pending types without a worker", unhandled_types),
    ("expired leases", expired_leases),
    ("long-running handlers", long_running),
    ("idle_in_transaction_session_timeout", idle_in_transaction_timeout),
    ("statement_timeout", statement_timeout),
]
