"""`listener prune` and the worker's retention helper against a real database."""

from __future__ import annotations

import re
import threading
from datetime import timedelta
from typing import Any

import anyio
import psycopg
import pytest

from listener import admin, cli


def add_finished(conn: psycopg.Connection[Any], status: str, age: str, n: int = 1) -> None:
    conn.execute(
        "INSERT INTO tasks (type, status, completed_at) "
        "SELECT 'job', %s, now() - %s::interval FROM generate_series(1, %s)",
        [status, age, n],
    )


def counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall()
    return {s: int(n) for s, n in rows}


def test_prune_deletes_only_finished_tasks_older_than_the_cutoff_in_batches(
    conn: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    add_finished(conn, "completed", "8 days", 3)
    add_finished(conn, "failed", "9 days", 1)
    add_finished(conn, "cancelled", "10 days", 1)
    add_finished(conn, "completed", "1 day", 2)  # recent: kept
    conn.execute("INSERT INTO tasks (type, created_at) VALUES ('job', now() - interval '30 days')")

    code = cli.main(["prune", "--older-than", "7d", "--batch-size", "2", "--dsn", dsn])

    out = capsys.readouterr().out
    assert code == 0
    assert re.fullmatch(
        r"pruned 5 tasks finished before \S+ \(cancelled: 1, completed: 3, failed: 1\) "
        r"in 3 batches\n",
        out,
    )
    assert counts(conn) == {"completed": 2, "pending": 1}


def test_prune_dry_run_counts_and_deletes_nothing(
    conn: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    add_finished(conn, "completed", "8 days", 4)

    code = cli.main(["prune", "--older-than", "7d", "--dry-run", "--dsn", dsn])

    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert re.fullmatch(r"would prune 4 tasks finished before \S+ \(completed: 4\)", lines[0])
    assert lines[1] == "dry run: nothing deleted"
    assert counts(conn) == {"completed": 4}


def test_prune_with_nothing_old_enough_says_so(
    conn: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    add_finished(conn, "completed", "1 hour")
    assert cli.main(["prune", "--older-than", "7d", "--dsn", dsn]) == 0
    assert capsys.readouterr().out.startswith("no tasks finished before ")
    assert counts(conn) == {"completed": 1}


def test_prune_skips_a_row_another_transaction_holds_instead_of_waiting(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    add_finished(conn, "completed", "8 days", 3)
    with psycopg.connect(dsn) as holder:
        held = holder.execute("SELECT id FROM tasks LIMIT 1 FOR UPDATE").fetchone()
        assert held is not None
        done = threading.Event()
        result: list[admin.PruneOutcome] = []

        def prune() -> None:
            with psycopg.connect(dsn, autocommit=True) as operator:
                result.append(admin.prune_once(operator, timedelta(days=7), batch_size=1))
            done.set()

        threading.Thread(target=prune, daemon=True).start()
        assert done.wait(10), "prune waited on a locked row"
        holder.rollback()
    assert result[0].total == 2
    assert conn.execute("SELECT id FROM tasks").fetchall() == [held]


def test_worker_retention_helper_prunes_through_an_async_connection(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    add_finished(conn, "completed", "2 hours", 5)
    add_finished(conn, "failed", "10 minutes", 1)

    async def prune() -> int:
        aconn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        async with aconn:
            return await admin.aprune_once(aconn, timedelta(hours=1), batch_size=2)

    assert anyio.run(prune) == 5
    assert counts(conn) == {"failed": 1}


def test_retention_helper_refuses_a_batch_size_below_one(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(admin.SelectionError, match="--batch-size must be at least 1"):
        admin.prune_once(conn, timedelta(days=1), batch_size=0)
