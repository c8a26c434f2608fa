"""The scrape-time queue collector against a real PostgreSQL."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import structlog
from prometheus_client import CollectorRegistry

from listener.metrics import QueueCollector, register_queue_collector
from listener.sqlfiles import query


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def unused_port_dsn() -> str:
    """A DSN nothing listens on: a port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


@pytest.fixture
def collector(registry: CollectorRegistry, dsn: str) -> Iterator[QueueCollector]:
    made = register_queue_collector(registry, dsn, timeout_s=1.0)
    yield made
    made.close()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def insert(conn: psycopg.Connection[Any], rows: int, status: str, age_s: float = 0) -> None:
    conn.execute(
        "INSERT INTO tasks (type, status, run_at, created_at, completed_at) "
        "SELECT 'demo', %(status)s, now() - make_interval(secs => %(age)s), "
        "now() - make_interval(secs => %(age)s), "
        "CASE WHEN %(status)s IN ('completed', 'failed') THEN now() END "
        "FROM generate_series(1, %(rows)s)",
        {"status": status, "age": age_s, "rows": rows},
    )


def test_queue_depth_counts_pending_and_claimed_tasks_exactly(
    conn: psycopg.Connection[Any], registry: CollectorRegistry, collector: QueueCollector
) -> None:
    insert(conn, 5, "pending")
    conn.execute("SELECT * FROM listener.claim_tasks('w1', 2, NULL, 30)")

    assert sample(registry, "listener_queue_stats_up") == 1
    assert sample(registry, "listener_queue_depth", status="pending") == 3
    assert sample(registry, "listener_queue_depth", status="processing") == 2


def test_oldest_pending_age_is_the_oldest_due_task_and_ignores_scheduled_ones(
    conn: psycopg.Connection[Any], registry: CollectorRegistry, collector: QueueCollector
) -> None:
    insert(conn, 1, "pending", age_s=90)
    insert(conn, 1, "pending", age_s=-3600)  # due in an hour: pending, not late

    age = sample(registry, "listener_queue_oldest_pending_age_seconds")
    assert age is not None
    assert 90 <= age < 150
    assert sample(registry, "listener_queue_depth", status="pending") == 2


def test_oldest_pending_age_is_zero_when_nothing_is_due(
    registry: CollectorRegistry, collector: QueueCollector
) -> None:
    assert sample(registry, "listener_queue_oldest_pending_age_seconds") == 0


def test_notification_queue_usage_is_exported(
    registry: CollectorRegistry, collector: QueueCollector
) -> None:
    usage = sample(registry, "listener_notification_queue_usage")
    assert usage is not None
    assert 0 <= usage < 0.01


def test_finished_rows_are_estimated_from_statistics_not_counted(
    conn: psycopg.Connection[Any], registry: CollectorRegistry, collector: QueueCollector
) -> None:
    insert(conn, 3000, "completed")
    insert(conn, 1000, "failed")
    conn.execute("ANALYZE tasks")

    completed = sample(registry, "listener_queue_finished_rows_estimate", status="completed")
    failed = sample(registry, "listener_queue_finished_rows_estimate", status="failed")
    assert completed == pytest.approx(3000, rel=0.1)
    assert failed == pytest.approx(1000, rel=0.1)
    assert sample(registry, "listener_queue_finished_rows_estimate", status="cancelled") == 0


def plan_of(conn: psycopg.Connection[Any], name: str) -> str:
    row = conn.execute("EXPLAIN (FORMAT JSON) " + query(name)).fetchone()
    assert row is not None
    return json.dumps(row[0])


def test_depth_queries_use_the_partial_indexes_not_a_table_scan(
    conn: psycopg.Connection[Any],
) -> None:
    insert(conn, 20_000, "completed")
    insert(conn, 5, "pending", age_s=10)
    conn.execute("SELECT * FROM listener.claim_tasks('w1', 2, NULL, 30)")
    conn.execute("VACUUM ANALYZE tasks")

    plan = plan_of(conn, "queue_depth_unfinished")
    assert "tasks_claim_idx" in plan or "tasks_claim_type_idx" in plan  # pending-only
    assert "tasks_lease_idx" in plan
    assert "Seq Scan" not in plan
    # The finished estimate reads catalog statistics only, never the tasks table.
    assert '"Relation Name": "tasks"' not in plan_of(conn, "queue_depth_finished_estimate")


def test_scrape_succeeds_without_queue_samples_when_the_database_is_down(
    registry: CollectorRegistry, unused_port_dsn: str
) -> None:
    collector = register_queue_collector(registry, unused_port_dsn, timeout_s=1.0)
    try:
        with structlog.testing.capture_logs() as logs:
            assert sample(registry, "listener_queue_stats_up") == 0
            assert sample(registry, "listener_queue_stats_up") == 0
        assert sample(registry, "listener_queue_depth", status="pending") is None
    finally:
        collector.close()
    failures = [e for e in logs if e["event"] == "metrics.queue_stats_failed"]
    assert len(failures) == 1  # one line per outage, not per scrape
    assert "cannot connect to postgres" in failures[0]["error"]


def test_collector_reconnects_after_its_backend_is_terminated(
    conn: psycopg.Connection[Any], registry: CollectorRegistry, collector: QueueCollector
) -> None:
    assert sample(registry, "listener_queue_stats_up") == 1
    killed = conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'listener' "
        "AND pid <> pg_backend_pid()"
    ).fetchall()
    assert killed == [(True,)]

    insert(conn, 1, "pending")
    assert sample(registry, "listener_queue_stats_up") == 1
    assert sample(registry, "listener_queue_depth", status="pending") == 1


def test_a_locked_table_times_out_the_scrape_instead_of_hanging_it(
    dsn: str, registry: CollectorRegistry
) -> None:
    collector = register_queue_collector(registry, dsn, timeout_s=0.5)
    try:
        assert sample(registry, "listener_queue_stats_up") == 1
        with psycopg.connect(dsn) as locker:
            locker.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            assert sample(registry, "listener_queue_stats_up") == 0
            assert time.monotonic() - started < 5  # gross bound: not stuck behind the lock
        assert sample(registry, "listener_queue_stats_up") == 1  # recovers once unlocked
    finally:
        collector.close()
