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
# plus a backlog of pending tasks over three priorities and a few running ones.
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
INSERT INTO listener.workers (id, hostname, pid, types, concurrency)
VALUES ('w1', 'host', 1, ARRAY['send_email', 'report'], 20);
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


def _sequential_scans(dsn: str) -> list[str]:
    """The statements recorded so far whose plan reads `tasks` without an index."""
    found = []
    prefer = query("ui_prefer_index_order")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET jit = off")
        previous = ""
        for sql, params in STATEMENTS:
            if sql.lstrip().upper().startswith("SELECT") and "tasks" in sql:
                with conn.transaction():
                    if previous == prefer:  # the listing ran after it: explain it so too
                        conn.execute(prefer)
                    plan = conn.execute(f"EXPLAIN (FORMAT JSON) {sql}", params).fetchone()
                assert plan is not None
                if _seq_scan_on_tasks(plan[0][0]["Plan"]):
                    found.append(sql.strip().splitlines()[0][:120])
            previous = sql
    return found


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
        if state == "analysed":
            with psycopg.connect(big_dsn, autocommit=True) as conn:
                conn.execute("ANALYZE tasks")
        STATEMENTS.clear()
        timings = _timings(big_dsn, paths)
        slow = {url: round(ms) for url, ms in timings.items() if ms >= BUDGET_MS}
        assert slow == {}, f"{state}: pages slower than {BUDGET_MS:.0f} ms: {slow}"
        assert len(timings) > len(paths)  # some pages were followed to their next page
        assert _sequential_scans(big_dsn) == [], state
