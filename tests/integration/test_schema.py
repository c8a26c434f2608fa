"""The migrated schema: the columns apps rely on, the new ones, and the constraints."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

COLUMNS = {
    # name: (type, nullable, default contains)
    "id": ("uuid", False, "gen_random_uuid()"),
    "type": ("text", False, None),
    "payload": ("jsonb", False, "'{}'::jsonb"),
    "status": ("text", False, "'pending'::text"),
    "created_at": ("timestamp with time zone", False, "now()"),
    "started_at": ("timestamp with time zone", True, None),
    "completed_at": ("timestamp with time zone", True, None),
    "error": ("text", True, None),
    "attempts": ("integer", False, "0"),
    "max_attempts": ("integer", True, None),
    "run_at": ("timestamp with time zone", False, "now()"),
    "priority": ("smallint", False, "0"),
    "worker_id": ("text", True, None),
    "lease_expires_at": ("timestamp with time zone", True, None),
    "dedupe_key": ("text", True, None),
    "claim_token": ("uuid", True, None),
    "attempt_limit": ("integer", True, None),
}


def _columns(conn: psycopg.Connection[Any], table: str) -> dict[str, tuple[str, bool, str | None]]:
    rows = conn.execute(
        "SELECT column_name, data_type, is_nullable = 'YES', column_default "
        "FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s",
        (table,),
    ).fetchall()
    return {name: (dtype, nullable, default) for name, dtype, nullable, default in rows}


def test_tasks_has_every_column_apps_rely_on_plus_the_queue_columns(
    conn: psycopg.Connection[Any],
) -> None:
    actual = _columns(conn, "tasks")
    assert set(actual) == set(COLUMNS)
    for name, (dtype, nullable, default) in COLUMNS.items():
        assert actual[name][:2] == (dtype, nullable), name
        assert actual[name][2] == default, name


def test_transactions_has_the_guide_columns_with_a_wide_amount(
    conn: psycopg.Connection[Any],
) -> None:
    actual = _columns(conn, "transactions")
    assert {n: t for n, (t, _, _) in actual.items()} == {
        "id": "uuid",
        "order_id": "text",
        "email": "text",
        "amount": "bigint",
        "status": "text",
        "created_at": "timestamp with time zone",
    }
    unique = conn.execute(
        "SELECT count(*) FROM pg_index WHERE indrelid = 'public.transactions'::regclass "
        "AND indisunique AND indkey::text = "
        "(SELECT attnum::text FROM pg_attribute WHERE attrelid = 'public.transactions'::regclass "
        "AND attname = 'order_id')"
    ).fetchone()
    assert unique == (1,)


def test_plain_sql_insert_gets_defaults_for_everything_but_type(
    conn: psycopg.Connection[Any],
) -> None:
    row = conn.execute(
        "INSERT INTO tasks (type, payload) VALUES ('send_email', '{\"to\": \"a@b.c\"}') "
        "RETURNING id IS NOT NULL, status, attempts, priority, run_at <= now(), "
        "created_at IS NOT NULL, started_at, worker_id"
    ).fetchone()
    assert row == (True, "pending", 0, 0, True, True, None, None)


@pytest.mark.parametrize("status", ["pending", "processing", "completed", "failed", "cancelled"])
def test_every_documented_status_is_accepted(
    module_conn: psycopg.Connection[Any], status: str
) -> None:
    with module_conn.transaction(force_rollback=True):
        module_conn.execute("INSERT INTO tasks (type, status) VALUES ('t', %s)", (status,))


@pytest.mark.parametrize(
    ("column_sql", "value", "constraint"),
    [
        ("status", "'done'", "tasks_status_valid"),
        ("status", "'PENDING'", "tasks_status_valid"),
        ("type", "''", "tasks_type_valid"),
        ("type", "repeat('a', 129)", "tasks_type_valid"),
        ("type", "'send email'", "tasks_type_valid"),
        ("type", "'drop;table'", "tasks_type_valid"),
        ("type", "E'newline\\n'", "tasks_type_valid"),
        ("payload", "'[1, 2]'::jsonb", "tasks_payload_object"),
        ("payload", "'\"text\"'::jsonb", "tasks_payload_object"),
        ("payload", "'null'::jsonb", "tasks_payload_object"),
        (
            "payload",
            "jsonb_build_object('blob', repeat('x', 1100000))",
            "tasks_payload_logical_size",
        ),
        (
            "payload",
            "(repeat('{\"a\":', 70) || '1' || repeat('}', 70))::jsonb",
            "tasks_payload_depth",
        ),
        ("attempts", "-1", "tasks_attempts_valid"),
        ("attempts", "1001", "tasks_attempts_valid"),
        ("max_attempts", "0", "tasks_max_attempts_valid"),
        ("max_attempts", "1001", "tasks_max_attempts_valid"),
        ("dedupe_key", "''", "tasks_dedupe_key_valid"),
    ],
)
def test_constraints_reject_bad_rows(
    module_conn: psycopg.Connection[Any], column_sql: str, value: str, constraint: str
) -> None:
    conn = module_conn
    base = {"type": "'ok'", "payload": "'{}'::jsonb", column_sql: value}
    columns = ", ".join(base)
    values = ", ".join(base.values())
    with pytest.raises(psycopg.errors.CheckViolation, match=constraint):
        conn.execute(f"INSERT INTO tasks ({columns}) VALUES ({values})")
    assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


def test_type_of_exactly_128_safe_characters_is_accepted(conn: psycopg.Connection[Any]) -> None:
    conn.execute("INSERT INTO tasks (type) VALUES (repeat('a', 127) || '.')")


def test_payload_just_under_one_mebibyte_is_accepted(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "INSERT INTO tasks (type, payload) "
        "VALUES ('t', jsonb_build_object('b', repeat('x', 1000000)))"
    )


def test_null_type_is_rejected(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.NotNullViolation):
        conn.execute("INSERT INTO tasks (type) VALUES (NULL)")


def test_the_claim_function_uses_the_partial_claim_index_among_many_finished_rows(
    conn: psycopg.Connection[Any],
) -> None:
    """The plans listener.claim_tasks() really runs, as auto_explain reports them.

    Seven calls in one session: PL/pgSQL plans the first five for their arguments and
    may then switch to a cached generic plan (the one that once scanned the whole
    table, see migration 0003). Every one must reach the rows through the index.
    """
    started = time.monotonic()
    conn.execute(
        "INSERT INTO tasks (type, status, completed_at, created_at, run_at) "
        "SELECT 'done', 'completed', now(), now() - interval '1 day', now() - interval '1 day' "
        "FROM generate_series(1, 50000)"
    )
    conn.execute("INSERT INTO tasks (type) SELECT 'due' FROM generate_series(1, 20)")
    conn.execute("ANALYZE tasks")
    notices: list[str] = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    conn.execute("LOAD 'auto_explain'")
    for setting in ("log_min_duration = 0", "log_nested_statements = on", "log_level = notice"):
        conn.execute(f"SET auto_explain.{setting}")
    for _ in range(7):
        with conn.transaction(force_rollback=True):
            claimed = conn.execute("SELECT id FROM listener.claim_tasks('w', 10)").fetchall()
            assert len(claimed) == 10
    # Each call logs its own statement and, nested, the claim the function runs.
    plans = [n for n in notices if "Query Text: SELECT id FROM listener.claim_tasks" not in n]
    assert len(plans) == 7, notices
    for plan in plans:
        assert "tasks_claim_idx" in plan, plan
        assert "Seq Scan on tasks" not in plan, plan
    assert time.monotonic() - started < 20  # gross bound: the setup must stay cheap


def test_queue_indexes_exist(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'tasks'"
    ).fetchall()
    assert {r[0] for r in rows} >= {
        "tasks_pkey",
        "tasks_claim_idx",
        "tasks_lease_idx",
        "tasks_dedupe_key_idx",
        "tasks_finished_idx",
    }
