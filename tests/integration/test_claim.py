"""claim_next_task() (the apps' no-argument claim) and listener.claim_tasks() (the batch)."""

from __future__ import annotations

import collections
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from listener.sqlfiles import query
from listener.store import engine as store
from tests.integration.plan_support import collect_plans, most_pages_read


def _insert(conn: psycopg.Connection[Any], task_type: str, **cols: Any) -> Any:
    names = ["type", *cols]
    placeholders = ", ".join(["%s"] + [f"{v}" for v in cols.values()])
    row = conn.execute(
        f"INSERT INTO tasks ({', '.join(names)}) VALUES ({placeholders}) RETURNING id",
        (task_type,),
    ).fetchone()
    assert row is not None
    return row[0]


def test_claim_next_task_takes_no_arguments_and_returns_setof_tasks(
    conn: psycopg.Connection[Any],
) -> None:
    row = conn.execute(
        "SELECT pronargs, proretset, prorettype::regtype::text FROM pg_proc "
        "WHERE oid = 'public.claim_next_task()'::regprocedure"
    ).fetchone()
    assert row == (0, True, "tasks")


def test_claim_next_task_marks_the_task_processing_with_start_time_and_lease(
    conn: psycopg.Connection[Any],
) -> None:
    task_id = _insert(conn, "send_email")
    row = conn.execute(
        "SELECT id, status, started_at IS NOT NULL, attempts, "
        "lease_expires_at > now() + interval '10 min' FROM claim_next_task()"
    ).fetchone()
    assert row == (task_id, "processing", True, 1, True)
    assert conn.execute("SELECT status FROM tasks WHERE id = %s", (task_id,)).fetchone() == (
        "processing",
    )


def test_claim_next_task_returns_nothing_when_the_queue_is_empty(
    conn: psycopg.Connection[Any],
) -> None:
    _insert(conn, "done", status="'completed'")
    assert conn.execute("SELECT * FROM claim_next_task()").fetchall() == []


def test_claim_next_task_takes_the_oldest_due_task_first(conn: psycopg.Connection[Any]) -> None:
    newer = _insert(conn, "b", run_at="now() - interval '1 minute'")
    older = _insert(conn, "a", run_at="now() - interval '5 minutes'")
    claimed = [conn.execute("SELECT id FROM claim_next_task()").fetchone() for _ in range(3)]
    assert claimed == [(older,), (newer,), None]


def test_claim_next_task_leaves_future_tasks_alone(conn: psycopg.Connection[Any]) -> None:
    _insert(conn, "later", run_at="now() + interval '1 hour'")
    assert conn.execute("SELECT * FROM claim_next_task()").fetchall() == []
    assert conn.execute("SELECT status FROM tasks").fetchall() == [("pending",)]


def test_higher_priority_is_claimed_before_older_tasks(conn: psycopg.Connection[Any]) -> None:
    old_low = _insert(conn, "low", run_at="now() - interval '1 hour'")
    new_high = _insert(conn, "high", priority="10")
    claimed = [conn.execute("SELECT id FROM claim_next_task()").fetchone() for _ in range(2)]
    assert claimed == [(new_high,), (old_low,)]


def test_claim_tasks_claims_up_to_the_limit_for_the_named_worker(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("INSERT INTO tasks (type) SELECT 't' FROM generate_series(1, 5)")
    rows = conn.execute(
        "SELECT worker_id, status, lease_expires_at BETWEEN now() + interval '29 s' "
        "AND now() + interval '31 s' FROM listener.claim_tasks('worker-1', 3, NULL, 30)"
    ).fetchall()
    assert rows == [("worker-1", "processing", True)] * 3
    assert conn.execute("SELECT count(*) FROM tasks WHERE status = 'pending'").fetchone() == (2,)


def test_claim_tasks_claims_only_the_requested_types(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "INSERT INTO tasks (type) SELECT t FROM unnest(ARRAY['a', 'b', 'c', 'a', 'b']) AS t"
    )
    rows = conn.execute(
        "SELECT type FROM listener.claim_tasks('w', 10, ARRAY['a', 'c'], 30) ORDER BY type"
    ).fetchall()
    assert rows == [("a",), ("a",), ("c",)]


@pytest.mark.parametrize("limit", ["0", "-1", "NULL"])
def test_claim_tasks_with_no_positive_limit_claims_nothing(
    conn: psycopg.Connection[Any], limit: str
) -> None:
    conn.execute("INSERT INTO tasks (type) SELECT 't' FROM generate_series(1, 3)")
    rows = conn.execute(f"SELECT * FROM listener.claim_tasks('w', {limit}, NULL, 30)").fetchall()
    assert rows == []


def test_claim_tasks_without_a_lease_still_sets_one(conn: psycopg.Connection[Any]) -> None:
    _insert(conn, "t")
    row = conn.execute(
        "SELECT lease_expires_at > now() FROM listener.claim_tasks('w', 1, NULL, NULL)"
    ).fetchone()
    assert row == (True,)


def test_claimed_task_is_not_claimed_again(conn: psycopg.Connection[Any]) -> None:
    _insert(conn, "t")
    assert len(conn.execute("SELECT * FROM listener.claim_tasks('w', 5)").fetchall()) == 1
    assert conn.execute("SELECT * FROM listener.claim_tasks('w', 5)").fetchall() == []


def _claim_until_empty(dsn: str, worker: str, barrier: threading.Barrier) -> list[Any]:
    claimed: list[Any] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        barrier.wait(timeout=30)
        while True:
            rows = conn.execute(
                "SELECT id FROM listener.claim_tasks(%s, 7, NULL, 60)", (worker,)
            ).fetchall()
            single = conn.execute("SELECT id FROM claim_next_task()").fetchall()
            if not rows and not single:
                return claimed
            claimed.extend(r[0] for r in rows + single)


def test_concurrent_claimers_claim_every_task_exactly_once(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("INSERT INTO tasks (type) SELECT 't' FROM generate_series(1, 2000)")
    claimers = 8
    barrier = threading.Barrier(claimers)
    with ThreadPoolExecutor(claimers) as pool:
        futures = [pool.submit(_claim_until_empty, dsn, f"w{i}", barrier) for i in range(claimers)]
        results = [f.result(timeout=120) for f in futures]  # re-raises a claimer's error
    counts = collections.Counter(task_id for result in results for task_id in result)
    assert len(counts) == 2000
    assert max(counts.values()) == 1
    assert sum(1 for result in results if result) > 1  # the claimers really overlapped
    rows = conn.execute(
        "SELECT count(*), count(DISTINCT id), bool_and(attempts = 1) FROM tasks "
        "WHERE status = 'processing'"
    ).fetchone()
    assert rows == (2000, 2000, True)


@pytest.mark.parametrize(
    "claim_sql",
    ["SELECT id FROM claim_next_task()", "SELECT id FROM listener.claim_tasks('w2', 1)"],
)
def test_a_claim_skips_a_row_another_open_claim_holds_instead_of_waiting(
    dsn: str, conn: psycopg.Connection[Any], claim_sql: str
) -> None:
    first = _insert(conn, "t", run_at="now() - interval '2 minutes'")
    second = _insert(conn, "t", run_at="now() - interval '1 minute'")
    with psycopg.connect(dsn) as holder, psycopg.connect(dsn) as other:
        # A worker's claim, its transaction still open: it holds the oldest row.
        held = holder.execute("SELECT id FROM listener.claim_tasks('w1', 1)").fetchall()
        assert held == [(first,)]
        # Without SKIP LOCKED the next claim would queue behind that lock: the lock
        # timeout turns such a wait into an error instead of a slow pass.
        other.execute("SET lock_timeout = '2s'")
        assert other.execute(claim_sql).fetchall() == [(second,)]
        other.commit()
        holder.rollback()
    # The first claim rolled back: its row is claimable again, and only it.
    assert conn.execute("SELECT id FROM claim_next_task()").fetchall() == [(first,)]


@pytest.mark.parametrize(
    "claim_sql",
    ["SELECT id FROM claim_next_task()", "SELECT id FROM listener.claim_tasks('w', 1)"],
)
def test_task_locked_by_a_foreign_key_check_is_still_claimable(
    dsn: str, conn: psycopg.Connection[Any], claim_sql: str
) -> None:
    task_id = _insert(conn, "t")
    conn.execute("CREATE TABLE task_notes (task_id uuid NOT NULL REFERENCES public.tasks (id))")
    with psycopg.connect(dsn) as holder:
        # The FK check takes FOR KEY SHARE on the task row until this txn ends.
        holder.execute("INSERT INTO task_notes VALUES (%s)", (task_id,))
        locks = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE a.datname = current_database() AND l.pid <> pg_backend_pid() "
            "AND l.relation = 'public.tasks'::regclass"
        ).fetchone()
        assert locks is not None
        assert locks[0] >= 1
        conn.execute("SET lock_timeout = '5s'")
        assert conn.execute(claim_sql).fetchall() == [(task_id,)]
        holder.rollback()


@pytest.mark.parametrize(
    "function",
    [
        "listener.claim_tasks(text, integer, text[], double precision)",
        # called by the claim once per limited type: re-planned each call, the limits'
        # bookkeeping cost 1.7x a claim without limits (0.28 vs 0.17 ms a call)
        "listener.limit_room(text, integer, integer, integer)",
    ],
)
def test_functions_called_per_claim_are_plpgsql_so_their_plans_are_cached_per_session(
    conn: psycopg.Connection[Any], function: str
) -> None:
    language = conn.execute(
        "SELECT l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang "
        "WHERE p.oid = %s::regprocedure",
        (function,),
    ).fetchone()
    assert language == ("plpgsql",)


def _analyzed_backlog_of_one_type(conn: psycopg.Connection[Any]) -> list[str]:
    """100,000 due tasks of one type and one priority, and one an hour away; analyzed.

    The type's name is as long as a real one's: with a short name the wider index
    costs less and the planner picked it anyway. Returns auto_explain's notices.
    """
    conn.execute(
        "INSERT INTO tasks (type) SELECT 'generate_care_plan' FROM generate_series(1, 100000)"
    )
    conn.execute(
        "INSERT INTO tasks (type, run_at) VALUES ('generate_care_plan', now() + interval '1 hour')"
    )
    conn.execute("ANALYZE tasks")
    return collect_plans(conn)


def _claim_batch_params(types: list[str]) -> dict[str, Any]:
    return {
        "worker_id": "w", "token": uuid.uuid4(), "limit": 10, "types": types,
        "attempt_limits": [3] * len(types), "lease_s": 30.0,
        "concurrency": None, "rate_counts": None, "rate_windows_s": None,
    }  # fmt: skip


def test_the_workers_claim_reads_a_few_pages_on_an_analyzed_backlog_of_one_type(
    conn: psycopg.Connection[Any],
) -> None:
    """A worker names all its types; one of them with nothing due must not walk the rest.

    Analyzed with one type pending, the planner once looked every type up through
    tasks_claim_idx and filtered on the type: for the type with no due task that read
    every pending row (0.8 s with 1,000,000 pending). auto_explain shows the plans the
    function really runs, the first five (custom) and the cached generic ones after.
    """
    notices = _analyzed_backlog_of_one_type(conn)
    params = _claim_batch_params(["send_email", "generate_care_plan"])
    for _ in range(7):
        with conn.transaction(force_rollback=True):
            rows = conn.execute(query("claim_batch"), params).fetchall()
            assert len(rows) == 10
    plans = [n for n in notices if "UPDATE public.tasks" in n and "Query Text: SELECT" not in n]
    assert len(plans) == 7, notices
    for plan in plans:
        assert "tasks_claim_type_idx" in plan, plan
        assert most_pages_read(plan) < 200, plan  # a few pages, not 100,000 rows' worth


def test_when_the_next_task_is_due_is_found_in_a_few_pages_behind_a_large_backlog(
    conn: psycopg.Connection[Any],
) -> None:
    """A short claim asks next_due_in(): one index probe per type and priority level.

    It once filtered `priority < level` instead of seeking to it, so every call read
    all the pending rows of a type whose tasks share one priority (0.9 s at 1,000,000).
    """
    notices = _analyzed_backlog_of_one_type(conn)
    for _ in range(7):
        due_in = conn.execute(
            "SELECT listener.next_due_in(ARRAY['send_email', 'generate_care_plan'])"
        ).fetchone()
        assert due_in is not None
        assert 3500 < due_in[0] <= 3600
    plans = [n for n in notices if "Query Text: SELECT listener.next_due_in" not in n]
    assert len(plans) >= 7 * 4, notices  # per call: send_email's probe, the other's three
    assert max(most_pages_read(plan) for plan in plans) < 200, plans


def _calls_this_transaction(conn: psycopg.Connection[Any], function: str) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions "
        "WHERE schemaname = 'listener' AND funcname = %s",
        (function,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_short_claim_asks_no_more_than_its_outlook_needs(
    conn: psycopg.Connection[Any],
) -> None:
    """A trickle's claim (one task, no limits) was half outlook: the limits' report and
    next_due_in, each planned afresh, ran after every short claim (2.1 ms against the
    bare claim's 0.75). Neither runs when no type has a limit nor a pending task."""
    conn.execute("SET track_functions = 'all'")
    _insert(conn, "send_email")
    with conn.transaction(force_rollback=True):
        rows = conn.execute(query("claim_batch"), _claim_batch_params(["send_email", "sms"]))
        assert [r[1] for r in rows.fetchall()] == ["send_email"]  # a task, no empty outlook
        assert _calls_this_transaction(conn, "next_due_in") == 0
        assert _calls_this_transaction(conn, "limit_room") == 0


def test_a_short_claim_with_nothing_to_say_sends_no_outlook_row(
    conn: psycopg.Connection[Any],
) -> None:
    """Nothing pending after it, no limit: the outlook row said nothing (next due and
    throttled both null) and cost server and worker ~25 us each on a trickle's pickup.
    The worker knows the claim came back short from its size (store.claim)."""
    _insert(conn, "send_email")
    rows = conn.execute(query("claim_batch"), _claim_batch_params(["send_email", "sms"]))
    assert [r[0] is None for r in rows.fetchall()] == [False]


def test_a_short_claim_that_took_a_task_still_says_when_the_next_one_is_due(
    conn: psycopg.Connection[Any],
) -> None:
    _insert(conn, "send_email")
    _insert(conn, "sms", run_at="now() + interval '1 hour'")
    rows = conn.execute(query("claim_batch"), _claim_batch_params(["send_email", "sms"]))
    task, outlook_row = rows.fetchall()
    assert task[1] == "send_email"
    assert outlook_row[0] is None
    assert 3500 < outlook_row[-1]["next_due_in_s"] <= 3600


def test_a_claim_that_took_nothing_still_ends_with_its_outlook(
    conn: psycopg.Connection[Any],
) -> None:
    """Workers from before migration 0013 take a claim with no outlook row for a full
    one and claim again at once: the empty claim that follows must end the run."""
    rows = conn.execute(query("claim_batch"), _claim_batch_params(["send_email"])).fetchall()
    assert len(rows) == 1
    assert rows[0][0] is None
    assert rows[0][-1]["next_due_in_s"] is None


def test_a_short_claim_still_says_when_a_scheduled_task_falls_due(
    conn: psycopg.Connection[Any],
) -> None:
    _insert(conn, "sms", run_at="now() + interval '1 hour'")
    rows = conn.execute(query("claim_batch"), _claim_batch_params(["send_email", "sms"]))
    (outlook_row,) = rows.fetchall()
    outlook = outlook_row[-1]
    assert 3500 < outlook["next_due_in_s"] <= 3600
    assert not outlook["throttled"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("pending", "scheduled", "limit", "short"),
    [
        (3, False, 10, True),  # took 3 of 10, nothing left: no outlook row came
        (3, True, 10, True),  # took 3 of 10, one scheduled: the outlook row came
        (0, False, 10, True),  # took nothing: the outlook row came
        (3, False, 3, False),  # took all it asked for: more may wait
    ],
    ids=["short-nothing-to-say", "short-with-a-scheduled-task", "empty", "full"],
)
async def test_the_worker_tells_a_short_claim_from_a_full_one(
    dsn: str, conn: psycopg.Connection[Any], pending: int, scheduled: bool, limit: int, short: bool
) -> None:
    """A full claim means a backlog (the worker claims again at once); taking a short
    one without an outlook row for full would claim again and again for nothing."""
    for _ in range(pending):
        _insert(conn, "send_email")
    if scheduled:
        _insert(conn, "send_email", run_at="now() + interval '1 hour'")
    spec = store.ClaimSpec(["send_email"], [3], [None], [None], [None])
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
        rows, outlook = await store.claim(aconn, "w", uuid.uuid4(), limit, spec, 30.0)
    assert len(rows) == pending
    assert (outlook is not None) == short
    if scheduled:
        assert outlook is not None
        assert outlook.next_due_in_s is not None
        assert 3500 < outlook.next_due_in_s <= 3600
