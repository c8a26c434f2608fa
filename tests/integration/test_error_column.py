"""What reaches ``tasks.error``: the primary message of a database error, no copied row."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from listener import create_task
from listener.registry import Registry, handler
from tests.integration.engine_support import eventually, running_worker

pytestmark = pytest.mark.anyio

TRANSCRIPT = "Patient reports chest pain since Tuesday; lives alone at 12 Elm Road."


async def test_a_database_error_leaves_its_row_out_of_the_error_column(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    registry = Registry()

    @handler("store_plan", transactional=True, max_attempts=1, registry=registry)
    async def store_plan(task: Any, tx: psycopg.AsyncConnection[Any]) -> None:
        # email is NOT NULL: PostgreSQL's DETAIL copies the whole failing row.
        await tx.execute(
            "INSERT INTO care_plans (session_id, email, blueprint_id, plan, model) "
            "VALUES ('s-1', NULL, 'b-1', %s, 'm')",
            (TRANSCRIPT,),
        )

    async with running_worker(dsn, registry):
        task_id = create_task("store_plan", {}, conn=conn)
        await eventually(
            lambda: (
                conn.execute("SELECT status FROM tasks WHERE id = %s", (task_id,)).fetchone()
                == ("failed",)
            )
        )
    row = conn.execute("SELECT error FROM tasks WHERE id = %s", (task_id,)).fetchone()
    assert row == (
        'NotNullViolation: null value in column "email" of relation "care_plans" '
        "violates not-null constraint",
    )
