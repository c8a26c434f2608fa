"""Payload limits hold for every producer: plain SQL, create_task, the enqueue_task RPC.

The size is the payload's logical size (its JSON text), not what TOAST compression
makes of it: a highly compressible 2 MB payload is refused however it arrives.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from listener import InvalidTaskError, create_task

TWO_MB = json.dumps({"blob": "x" * (2 * 1024 * 1024)})  # compresses to a few KB


def _deep(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def _nested(levels: int) -> dict[str, Any]:
    """As _deep: ``levels`` objects, a number in the innermost."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value  # type: ignore[no-any-return]


def test_plain_sql_is_refused_a_compressible_2mb_payload(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        conn.execute("INSERT INTO tasks (type, payload) VALUES ('t', %s::jsonb)", (TWO_MB,))
    assert refused.value.diag.constraint_name == "tasks_payload_logical_size"


def test_a_payload_copied_from_a_compressed_value_is_measured_as_it_is(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("CREATE TEMP TABLE staged (p jsonb)")
    conn.execute("INSERT INTO staged VALUES (%s::jsonb)", (TWO_MB,))  # stored compressed
    with pytest.raises(psycopg.errors.CheckViolation, match="tasks_payload_logical_size"):
        conn.execute("INSERT INTO tasks (type, payload) SELECT 't', p FROM staged")
    conn.execute("INSERT INTO tasks (type) VALUES ('t')")
    with pytest.raises(psycopg.errors.CheckViolation, match="tasks_payload_logical_size"):
        conn.execute("UPDATE tasks SET payload = (SELECT p FROM staged)")
    assert conn.execute("SELECT count(*) FROM tasks WHERE payload <> '{}'").fetchone() == (0,)


def test_create_task_is_refused_a_compressible_2mb_payload(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(InvalidTaskError, match="over the 1048576-byte limit"):
        create_task("t", json.loads(TWO_MB), conn=conn)


def test_the_enqueue_rpc_is_refused_a_compressible_2mb_payload(
    conn: psycopg.Connection[Any],
) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="tasks_payload_logical_size"):
        conn.execute("SELECT public.enqueue_task('t', %s::jsonb)", (TWO_MB,))


@pytest.mark.parametrize(("levels", "accepted"), [(64, True), (65, False), (5000, False)])
def test_plain_sql_and_the_rpc_refuse_payloads_nested_deeper_than_64_levels(
    conn: psycopg.Connection[Any], levels: int, accepted: bool
) -> None:
    for statement in (
        "INSERT INTO tasks (type, payload) VALUES ('t', %s::jsonb)",
        "SELECT public.enqueue_task('t', %s::jsonb)",
    ):
        if accepted:
            conn.execute(statement, (_deep(levels),))
            continue
        with pytest.raises(psycopg.errors.CheckViolation, match="tasks_payload_depth"):
            conn.execute(statement, (_deep(levels),))


@pytest.mark.parametrize("levels", [65, 5000])
def test_create_task_refuses_a_too_deep_payload_with_a_clear_error(
    conn: psycopg.Connection[Any], levels: int
) -> None:
    with pytest.raises(InvalidTaskError, match="nested deeper than 64 levels"):
        create_task("t", _nested(levels), conn=conn)
