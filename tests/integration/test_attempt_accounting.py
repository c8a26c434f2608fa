"""The attempt-accounting table of docs/attempts.md, walked row by row on a real database.

Each row: a task as it stands, the statement the engine (or an operator) runs on it,
and what the row says afterwards. Decisions are the policy's (tests/unit/test_policy.py);
this proves the SQL applies them as the table says.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from listener import admin
from listener.store import engine as store

pytestmark = pytest.mark.anyio

WORKER = "w-accounting"
TOKEN = uuid.UUID("00000000-0000-0000-0000-000000000001")
Step = Callable[[psycopg.AsyncConnection[Any], uuid.UUID], Awaitable[Any]]


@dataclass(frozen=True)
class Row:
    """A task as the table describes it: status, attempts, and who holds it."""

    status: str
    attempts: int
    claimed: bool = False  # processing under WORKER with TOKEN
    lease_expired: bool = False
    attempt_limit: int | None = None


async def _claim(conn: psycopg.AsyncConnection[Any], task_id: uuid.UUID) -> Any:
    return await store.claim(conn, WORKER, uuid.uuid4(), 10, {"t": 3}, 30.0)


def _finish(action: str, delay_s: float = 0.0, error: str | None = None) -> Step:
    async def step(conn: psycopg.AsyncConnection[Any], task_id: uuid.UUID) -> Any:
        return await store.finish(conn, [store.Finish((task_id, TOKEN), action, delay_s, error)])

    return step


async def _rescue(conn: psycopg.AsyncConnection[Any], task_id: uuid.UUID) -> Any:
    return await store.rescue_expired(conn, {"t": 5}, 5, 100, margin_s=0.0)


async def _reconcile(conn: psycopg.AsyncConnection[Any], task_id: uuid.UUID) -> Any:
    return await store.reconcile(conn, WORKER, [])  # the worker holds nothing


async def _complete_in_transaction(conn: psycopg.AsyncConnection[Any], task_id: uuid.UUID) -> Any:
    async with conn.transaction():
        return await store.complete_claim(conn, (task_id, TOKEN))


def _admin(action: Callable[..., Any]) -> Step:
    async def step(conn: psycopg.AsyncConnection[Any], task_id: uuid.UUID) -> Any:
        with psycopg.connect(conn.info.dsn, autocommit=True) as sync:
            return action(sync, admin.Selection(ids=(task_id,)))

    return step


# (name, before, step, status after, attempts after, error after starts with)
TABLE: list[tuple[str, Row, Step, str, int, str | None]] = [
    ("claim", Row("pending", 0), _claim, "processing", 1, None),
    ("claim at the schema's cap", Row("pending", 1000), _claim, "processing", 1000, None),
    ("handler returned", Row("processing", 1, claimed=True), _finish("complete"),
     "completed", 1, None),
    ("handler raised, attempts left", Row("processing", 1, claimed=True),
     _finish("retry", 5.0, "ValueError: x"), "pending", 1, "ValueError"),
    ("RetryLater or a missing setting", Row("processing", 3, claimed=True),
     _finish("retry_uncounted", 60.0, "RetryLater: later"), "pending", 2, "RetryLater"),
    ("handler failed for good", Row("processing", 2, claimed=True),
     _finish("fail", error="PermanentError: no"), "failed", 2, "PermanentError"),
    ("stopping: never started", Row("processing", 1, claimed=True), _finish("release"),
     "pending", 0, None),
    ("stopping: interrupted after the grace", Row("processing", 1, claimed=True),
     _finish("retry", 0.0, "Interrupted: x"), "pending", 1, "Interrupted"),
    ("lease expired, attempts left", Row("processing", 2, claimed=True, lease_expired=True),
     _rescue, "pending", 2, "WorkerLost"),
    ("lease expired, claimed with a limit of 2",
     Row("processing", 2, claimed=True, lease_expired=True, attempt_limit=2),
     _rescue, "failed", 2, "WorkerLost"),
    ("lease expired, the claim's limit beats the rescuer's",
     Row("processing", 6, claimed=True, lease_expired=True, attempt_limit=10),
     _rescue, "pending", 6, "WorkerLost"),
    ("claim committed, reply lost", Row("processing", 1, claimed=True), _reconcile,
     "pending", 0, None),
    ("transactional handler committed", Row("processing", 1, claimed=True),
     _complete_in_transaction, "completed", 1, None),
    ("operator retries a failed task", Row("failed", 5), _admin(admin.retry),
     "pending", 0, None),
    ("operator cancels a pending task", Row("pending", 2), _admin(admin.cancel),
     "cancelled", 2, "cancelled by an operator"),
    ("an outcome of another claim", Row("processing", 1), _finish("complete"),
     "processing", 1, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("before", "step", "status", "attempts", "error"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
async def test_each_transition_of_the_attempt_accounting_table(
    dsn: str,
    conn: psycopg.Connection[Any],
    before: Row,
    step: Step,
    status: str,
    attempts: int,
    error: str | None,
) -> None:
    task_id = _stage(conn, before)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
        await step(aconn, task_id)
    row = conn.execute(
        "SELECT status, attempts, error FROM tasks WHERE id = %s", (task_id,)
    ).fetchone()
    assert row is not None
    assert row[:2] == (status, attempts)
    if error is None:
        assert row[2] is None
    else:
        assert (row[2] or "").startswith(error)


def _stage(conn: psycopg.Connection[Any], before: Row) -> uuid.UUID:
    task_id = uuid.uuid4()
    lease = "now() - interval '1 minute'" if before.lease_expired else "now() + interval '30 s'"
    holder = before.claimed or before.status == "processing"
    conn.execute(
        "INSERT INTO tasks (id, type, status, attempts, worker_id, claim_token, "
        "attempt_limit, started_at, lease_expires_at) VALUES "
        f"(%s, 't', %s, %s, %s, %s, %s, {'now()' if holder else 'NULL'}, "
        f"{lease if holder else 'NULL'})",
        (
            task_id, before.status, before.attempts, WORKER if holder else None,
            TOKEN if before.claimed else (uuid.uuid4() if holder else None),
            before.attempt_limit,
        ),
    )  # fmt: skip
    return task_id
