"""Every dashboard page answers in under 200 ms with 2,000,000 finished rows, and
every statement it runs reads `tasks` through an index.

Slow to set up (~20 s to build the rows), so it runs once per CI run: in the
PostgreSQL 15 pass (TEST_DATABASE_URL is set) or with LISTENER_TEST_SLOW=1.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from listener.sqlfiles import query
from tests import pg
from tests.integration.ui_support import client

pytestmark = [
    pytest.mark.skipif(
        not (os.environ.get("LISTENER_TEST_SLOW") == "1" or os.environ.get("TEST_DATABASE_URL")),
        reason="builds 2,000,000 rows: runs in CI's TEST_DATABASE_URL pass or with "
        "LISTENER_TEST_SLOW=1",
    ),
    pytest.mark.timeout(900),  # building the rows takes minutes on a loaded machine
]

BUDGET_MS = 200.0
FINISHED_ROWS = 2_000_000

# A week of finished work at ~3.3 tasks/s (a 7-day retention): mostly completed,
# 1 % failed, 0.2 % cancelled, five types (one rare), a dedupe key on one in five,
# plus a backlog of pending tasks over three priorities and a few running ones, and a
# worker that publishes limits on two types (one with its hour's 1,000 starts used up)
# and runs a schedule.
BUILD = """
ALTER TABLE public.tasks DISABLE TRIGGER tasks_notify_inserted;
INSERT INTO public.tasks (type, payload, status, created_at, run_at, started_at, completed_at,
                          attempts, error, dedupe_key)
SELECT CASE WHEN g % 1000 = 0 THEN 'rare_type' WHEN g % 10 < 4 THEN 'send_email'
            WHEN g % 10 < 7 THEN 'generate_care_plan' WHEN g % 10 < 9 THEN 'razorpay_webhook'
            ELSE 'report' END,
       jsonb_build_object('to', 'user' || g || '@example.com', 'n', g),
       CASE WHEN g % 100 = 7 THEN 'failed' WHEN g % 500 = 3 THEN 'cancelled'
            ELSE 'completed' END,
       t - interval '60 ms', t - interval '55 ms', t - interval '50 ms', t,
       CASE WHEN g % 100 = 7 THEN 5 ELSE 1 END,
       CASE WHEN g % 100 = 7 THEN 'ValueError: boom ' || g END,
       CASE WHEN g % 5 = 0 THEN 'evt_' || g END
FROM generate_series(1, {rows}) AS g,
     LATERAL (SELECT now() - g * interval '302.4 ms') AS ts(t);
INSERT INTO public.tasks (type, priority, run_at)
SELECT 'report', g % 3, now() - g * interval '1 s' FROM generate_series(1, 2000) AS g;
INSERT INTO public.tasks (type, status, started_at, attempts, worker_id, lease_expires_at)
SELECT 'send_email', 'processing', now() - g * interval '1 s', 1, 'w1', now() + interval '30 s'
FROM generate_series(1, 20) AS g;
INSERT INTO listener.workers (id, hostname, pid, types, concurrency, limits, schedules)
VALUES ('w1', 'host', 1, ARRAY['send_email', 'report'], 20,
        jsonb_build_object(
            'send_email', jsonb_build_object('global_concurrency', 20, 'rate_limit',
                                             jsonb_build_object('count', 1000, 'window_s', 3600)),
            'report', jsonb_build_object('global_concurrency', NULL, 'rate_limit',
                                         jsonb_build_object('count', 50, 'window_s', 60))),
        jsonb_build_object('report', jsonb_build_object('every_s', 900)));
INSERT INTO listener.rate_starts (type, started_at)
SELECT 'send_email', now() - g * interval '3.6 s' FROM generate_series(1, 1000) AS g;
INSERT INTO listener.schedules (type, schedule, last_enqueued_for, last_task_id, next_run_at)
SELECT 'report', 'every 15m', now() - interval '5 min', id, now() + interval '10 min'
FROM public.tasks WHERE status = 'completed' LIMIT 1;
INSERT INTO listener.schedules (type, schedule, next_run_at)
VALUES ('nightly_digest', 'cron 0 8 * * * (Europe/Berlin)', NULL);
ALTER TABLE public.tasks ENABLE TRIGGER tasks_notify_inserted;
"""

STATEMENTS: list[tuple[str, Any]] = []


class RecordingCursor(psycopg.Cursor[Any]):
    """Keeps every statement the dashboard runs, to EXPLAIN it afterwards."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        STATEMENTS.append((str(query), params))
        return super().execute(query, params, **kwargs)


@pytest.fixture(scope="module")
def big_dsn(pg_admin_dsn: str, template_db: str) -> Iterator[str]:
    name = pg.create_database(pg_admin_dsn, template_db)
    dsn = pg.dsn_for(pg_admin_dsn, name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(BUILD.format(rows=FINISHED_ROWS))
        yield dsn
    finally:
        pg.drop_database(pg_admin_dsn, name)


def _ids(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "(SELECT 'failed', id::text FROM tasks WHERE status = 'failed' LIMIT 1) UNION ALL "
            "(SELECT 'completed', id::text FROM tasks WHERE status = 'completed' LIMIT 1)"
        ).fetchall()
    return dict(rows)


def _pages(ids: dict[str, str]) -> list[str]:
    return [
        "/",
        "/api/overview",
        "/tasks",  # failed, newest first
        "/tasks?status=completed",
        "/tasks?status=completed&type=rare_type",  # sparse: a page looks at <= 10,000 rows
        "/tasks?status=completed&type=nothing_has_this_type",
        "/tasks?status=completed&from=3d&to=2d",
        "/tasks?status=failed&type=report",
        "/tasks?status=cancelled&limit=200",
        "/tasks?status=pending",
        "/tasks?status=pending&type=report&limit=200",
        "/tasks?status=processing",
        "/tasks?q=evt_1000000",
        f"/tasks?q={ids['completed']}",
        f"/tasks/{ids['failed']}",
        f"/tasks/{ids['completed']}?reveal=1",
        "/api/tasks?status=completed&limit=500",
        "/api/tasks?status=failed&type=send_email",
        "/actions/retry-failed?type=rare_type",
        "/schedules",  # rate windows of an hour (send_email) and a minute (report)
        "/api/schedules",
    ]


def _timings(dsn: str, paths: list[str]) -> dict[str, float]:
    """Best of three, in ms, for each page and the page its Next link points to."""
    best: dict[str, float] = {}
    with client(dsn, token=None, connect_kwargs={"cursor_factory": RecordingCursor}) as http:
        http.get("/api/overview")  # open the pool's connections first
        for path in paths:
            urls = [path]
            for url in urls:
                for _ in range(3):
                    started = time.perf_counter()
                    response = http.get(url)
                    elapsed_ms = (time.perf_counter() - started) * 1000
                    assert response.status_code in (200, 303), (url, response.text[:300])
                    best[url] = min(best.get(url, elapsed_ms), elapsed_ms)
                link = response.headers.get("link")
                if link and len(urls) == 1:
                    urls.append(link.split(">")[0].lstrip("<"))
    return best


def _sequential_scans(dsn: str) -> tuple[set[str], list[str]]:
    """The recorded statements that read `tasks`, all explained, and those whose plan
    reads it without an index (the first line of each)."""
    found: list[str] = []
    explained: set[str] = set()
    prefer = query("ui_prefer_index_order")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET jit = off")
        previous = ""
        for sql, params in STATEMENTS:
            code = _without_comments(sql)
            if code.lstrip("( \n").upper().startswith(("SELECT", "WITH")) and "tasks" in code:
                explained.add(code)
                with conn.transaction():
                    if previous == prefer:  # the listing ran after it: explain it so too
                        conn.execute(prefer)
                    plan = conn.execute(f"EXPLAIN (FORMAT JSON) {code}", params).fetchone()
                assert plan is not None
                if _seq_scan_on_tasks(plan[0][0]["Plan"]):
                    found.append(code.strip().splitlines()[0][:120])
            previous = sql
    return explained, found


def _without_comments(sql: str) -> str:
    """The statement without its leading ``--`` comment lines (named queries have them)."""
    lines = sql.strip().splitlines()
    while lines and lines[0].lstrip().startswith("--"):
        lines.pop(0)
    return "\n".join(lines)


def _seq_scan_on_tasks(node: dict[str, Any]) -> bool:
    if node["Node Type"] == "Seq Scan" and node.get("Relation Name") == "tasks":
        return True
    return any(_seq_scan_on_tasks(child) for child in node.get("Plans", []))


def test_every_page_answers_within_200_ms_through_indexes_before_and_after_analyze(
    big_dsn: str,
) -> None:
    paths = _pages(_ids(big_dsn))
    # First as the table is after a bulk load that autovacuum has not analysed yet
    # (this machine runs with autovacuum off), then as autovacuum leaves it.
    for state in ("never analysed", "analysed"):
        with psycopg.connect(big_dsn, autocommit=True) as conn:
            if state == "analysed":
                conn.execute("ANALYZE tasks")
            # A heartbeat: building the rows takes longer than a worker stays live,
            # and only live workers' limits and schedules are shown.
            conn.execute("UPDATE listener.workers SET last_seen_at = now()")
        STATEMENTS.clear()
        timings = _timings(big_dsn, paths)
        slow = {url: round(ms) for url, ms in timings.items() if ms >= BUDGET_MS}
        assert slow == {}, f"{state}: pages slower than {BUDGET_MS:.0f} ms: {slow}"
        assert len(timings) > len(paths)  # some pages were followed to their next page
        explained, sequential = _sequential_scans(big_dsn)
        assert sequential == [], state
        # Statements that start with comments (named queries do) are explained too:
        # the schedules page's count of pending tasks, for one example.
        assert _without_comments(query("ui_pending_by_type")) in explained
