"""`listener retry` and `listener cancel` against a real database."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg
import pytest

from listener import admin, cli
from tests.integration.engine_support import wait_until


def add(conn: psycopg.Connection[Any], type_: str, status: str, **cols: Any) -> uuid.UUID:
    """A task put straight into ``status`` (finished ones get completed_at)."""
    values = {
        "type": type_,
        "status": status,
        "attempts": 5 if status == "failed" else 0,
        "error": "boom" if status == "failed" else None,
        **cols,
    }
    row = conn.execute(
        "INSERT INTO tasks (type, status, attempts, error, dedupe_key, worker_id, completed_at) "
        "VALUES (%(type)s, %(status)s, %(attempts)s, %(error)s, %(dedupe_key)s, %(worker_id)s, "
        "CASE WHEN %(status)s IN ('completed', 'failed', 'cancelled') THEN now() END) "
        "RETURNING id",
        {"dedupe_key": None, "worker_id": None, **values},
    ).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def waiting_on_a_lock(conn: psycopg.Connection[Any], pid: int) -> bool:
    row = conn.execute(
        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)
    ).fetchone()
    return bool(row and row[0])


def state(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> dict[str, Any]:
    cur = conn.execute(
        "SELECT status, attempts, error, completed_at, run_at <= now() AS due "
        "FROM tasks WHERE id = %s",
        [task_id],
    )
    names = [d.name for d in cur.description or ()]
    row = cur.fetchone()
    assert row is not None
    return dict(zip(names, row, strict=True))


def run(capsys: pytest.CaptureFixture[str], dsn: str, *argv: str) -> tuple[int, str, str]:
    code = cli.main([*argv, "--dsn", dsn])
    out, err = capsys.readouterr()
    return code, out, err


def test_retry_by_type_moves_only_that_types_failed_tasks_back_to_pending(
    conn: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = [add(conn, "send_email", "failed") for _ in range(3)]
    other_type = add(conn, "resize", "failed")
    completed = add(conn, "send_email", "completed")

    code, out, err = run(capsys, dsn, "retry", "--type", "send_email")

    assert (code, err) == (0, "")
    assert out == "retried 3 failed tasks of type send_email\n"
    for task_id in failed:
        assert state(conn, task_id) == {
            "status": "pending", "attempts": 0, "error": None, "completed_at": None, "due": True
        }  # fmt: skip
    assert state(conn, other_type)["status"] == "failed"
    assert state(conn, completed)["status"] == "completed"


def test_retried_task_gets_a_fresh_set_of_attempts_when_claimed(
    conn: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = add(conn, "send_email", "failed", attempts=5)
    run(capsys, dsn, "retry", "--id", str(task_id))
    claimed = conn.execute("SELECT id, attempts FROM listener.claim_tasks('w1', 10)").fetchall()
    assert claimed == [(task_id, 1)]


def test_retry_wakes_listening_workers_with_a_notify(
    conn: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    add(conn, "send_email", "failed")
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN listener_tasks")
        run(capsys, dsn, "retry", "--all")
        woken = [n.channel for n in listener.notifies(timeout=5, stop_after=1)]
    assert woken == ["listener_tasks"]


def test_retry_dry_run_reports_and_changes_nothing(
    conn: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    a = add(conn, "a", "failed")
    add(conn, "b", "failed")
    add(conn, "b", "failed")

    code, out, _ = run(capsys, dsn, "retry", "--all", "--dry-run")

    assert code == 0
    assert out == "would retry 3 failed tasks (a: 1, b: 2) (dry run: nothing changed)\n"
    assert conn.execute("SELECT count(*) FROM tasks WHERE status = 'failed'").fetchone() == (3,)
    assert state(conn, a)["attempts"] == 5


def test_retry_by_id_reports_each_named_task_it_could_not_retry(
    conn: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = add(conn, "a", "failed")
    done = add(conn, "a", "completed")
    missing = uuid.uuid4()

    code, out, err = run(
        capsys, dsn, "retry", "--id", str(failed), "--id", str(done), "--id", str(missing)
    )

    assert code == cli.EXIT_FAILED
    assert out.splitlines() == [
        "retried 1 failed task of type a",
        f"not retried: {done} is completed, not failed",
        f"not retried: {missing} no such task",
    ]
    assert err == "listener: error: 2 of 3 named tasks could not be retried\n"
    assert state(conn, failed)["status"] == "pending"
    assert state(conn, done)["status"] == "completed"


def test_retry_leaves_a_failed_task_whose_dedupe_key_is_taken_again(
    conn: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    old = add(conn, "charge", "failed", dedupe_key="order-1")
    add(conn, "charge", "pending", dedupe_key="order-1")
    free = add(conn, "charge", "failed", dedupe_key="order-2")

    code, out, _ = run(capsys, dsn, "retry", "--type", "charge")

    assert code == 0
    assert out.splitlines()[0] == "retried 1 failed task of type charge"
    assert out.splitlines()[1].startswith("left 1 task failed: another unfinished task holds")
    assert state(conn, old)["status"] == "failed"
    assert state(conn, free)["status"] == "pending"


def test_retry_of_failed_twins_sharing_a_dedupe_key_revives_only_the_newest(
    conn: psycopg.Connection[Any],
) -> None:
    older = add(conn, "charge", "failed", dedupe_key="order-1")
    conn.execute("UPDATE tasks SET completed_at = now() - interval '1 hour' WHERE id = %s", [older])
    newer = add(conn, "charge", "failed", dedupe_key="order-1")

    outcome = admin.retry(conn, admin.Selection(all=True))

    assert (outcome.by_type, outcome.blocked) == ({"charge": 1}, 1)
    assert state(conn, newer)["status"] == "pending"
    assert state(conn, older)["status"] == "failed"


def test_cancel_by_type_cancels_pending_tasks_and_leaves_running_ones(
    conn: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pending = [add(conn, "report", "pending") for _ in range(2)]
    running = add(conn, "report", "processing", worker_id="w1")
    other = add(conn, "send_email", "pending")

    code, out, err = run(capsys, dsn, "cancel", "--type", "report")

    assert (code, out, err) == (0, "cancelled 2 pending tasks of type report\n", "")
    for task_id in pending:
        cancelled = state(conn, task_id)
        assert cancelled["status"] == "cancelled"
        assert cancelled["completed_at"] is not None  # so prune can find it
    assert state(conn, running)["status"] == "processing"
    assert state(conn, other)["status"] == "pending"


def test_cancelled_task_is_never_claimed(
    conn: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = add(conn, "report", "pending")
    run(capsys, dsn, "cancel", "--id", str(task_id))
    assert conn.execute("SELECT * FROM listener.claim_tasks('w1', 10)").fetchall() == []


def test_cancel_refuses_a_named_task_that_is_already_running(
    conn: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    running = add(conn, "report", "processing", worker_id="w1")

    code, out, err = run(capsys, dsn, "cancel", "--id", str(running))

    assert code == cli.EXIT_FAILED
    assert out.splitlines() == [
        "no pending tasks match: nothing cancelled",
        f"not cancelled: {running} is processing, not pending",
    ]
    assert err == "listener: error: 1 of 1 named tasks could not be cancelled\n"
    assert state(conn, running)["status"] == "processing"


def test_cancel_all_dry_run_counts_every_pending_task_and_changes_nothing(
    conn: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    add(conn, "a", "pending")
    add(conn, "b", "pending")
    add(conn, "b", "failed")

    code, out, _ = run(capsys, dsn, "cancel", "--all", "--dry-run")

    assert code == 0
    assert out == "would cancel 2 pending tasks (a: 1, b: 1) (dry run: nothing changed)\n"
    assert conn.execute("SELECT count(*) FROM tasks WHERE status = 'pending'").fetchone() == (2,)


def test_cancel_leaves_and_reports_a_task_a_worker_claimed_while_it_waited(
    conn: psycopg.Connection[Any], dsn: str
) -> None:
    task_id = add(conn, "report", "pending")
    outcomes: list[admin.Outcome] = []
    with psycopg.connect(dsn) as worker:  # the claim's transaction stays open
        claimed = worker.execute("SELECT id FROM listener.claim_tasks('w1', 1)").fetchall()
        assert claimed == [(task_id,)]
        with psycopg.connect(dsn, autocommit=True) as operator:
            operator.execute("SET lock_timeout = '10s'")
            pid = operator.info.backend_pid
            cancel = threading.Thread(
                target=lambda: outcomes.append(
                    admin.cancel(operator, admin.Selection(ids=(task_id,)))
                )
            )
            cancel.start()
            # The cancel is queued behind the claim's row lock (not done, not skipping):
            wait_until(lambda: waiting_on_a_lock(conn, pid) or not cancel.is_alive())
            assert cancel.is_alive(), "the cancel did not wait for the claim's lock"
            worker.commit()  # ... and re-checks the status once the claim commits.
            cancel.join(10)
    (outcome,) = outcomes
    assert outcome.total == 0
    assert outcome.skipped == [(task_id, "is processing, not pending")]
    assert state(conn, task_id)["status"] == "processing"


def test_retry_names_a_task_left_failed_because_its_dedupe_key_is_taken(
    conn: psycopg.Connection[Any],
) -> None:
    failed = add(conn, "charge", "failed", dedupe_key="order-1")
    add(conn, "charge", "pending", dedupe_key="order-1")

    outcome = admin.retry(conn, admin.Selection(ids=(failed,)))

    assert outcome.total == 0
    assert outcome.skipped == [
        (failed, "stays failed: another unfinished task holds its dedupe key")
    ]
