"""The samples the alerts depend on, read from a real worker's /metrics after the real
events: a retried and failed task, a task rescued from a SIGKILLed worker, and a LISTEN
connection terminated by the server."""

from __future__ import annotations

import signal
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from listener import create_task
from tests.integration.engine_support import WorkerProcess, free_port, wait_until

FAST_LEASE = ("--lease-s", "1", "--rescue-interval-s", "0.3", "--poll-interval-s", "0.5")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def scrape_until(port: int, holds: Callable[[Samples], bool], timeout_s: float = 10.0) -> Samples:
    """The first scrape for which ``holds`` is true; fail after the deadline."""
    found: list[Samples] = []

    def check() -> bool:
        samples = scrape(port)
        found[:] = [samples]
        return holds(samples)

    wait_until(check, timeout_s)
    return found[0]


def finished(samples: Samples, task_type: str, outcome: str) -> float:
    key = ("listener_tasks_finished_total", (("outcome", outcome), ("type", task_type)))
    return samples.get(key, 0.0)


@pytest.fixture
def observed(dsn: str) -> Iterator[tuple[WorkerProcess, int]]:
    """A worker serving /metrics, running only the types these tests finish with."""
    port = free_port()
    worker = WorkerProcess(
        dsn, "--types", "always_fails", "noop", *FAST_LEASE,
        "--metrics-host", "127.0.0.1", "--metrics-port", str(port),
    )  # fmt: skip
    try:
        worker.wait_started()
        yield worker, port
    finally:
        worker.stop()


def test_retried_then_failed_attempts_are_counted_by_outcome(
    conn: psycopg.Connection[Any], observed: tuple[WorkerProcess, int]
) -> None:
    _, port = observed
    create_task("always_fails", {}, conn=conn)  # 3 attempts, a short backoff
    samples = scrape_until(port, lambda s: finished(s, "always_fails", "failed") > 0)
    assert finished(samples, "always_fails", "retried") == 2
    assert finished(samples, "always_fails", "failed") == 1
    assert finished(samples, "always_fails", "completed") == 0


def test_a_task_of_a_killed_worker_is_counted_rescued_by_the_worker_that_rescued_it(
    dsn: str, conn: psycopg.Connection[Any], observed: tuple[WorkerProcess, int]
) -> None:
    _, port = observed
    doomed = WorkerProcess(dsn, "--types", "sleep", *FAST_LEASE)
    try:
        doomed.wait_started()
        task_id = create_task("sleep", {"s": 60}, conn=conn)
        wait_until(
            lambda: (
                conn.execute("SELECT status FROM tasks WHERE id = %s", (task_id,)).fetchone()
                == ("processing",)
            )
        )
        assert finished(scrape(port), "sleep", "rescued") == 0
        doomed.signal(signal.SIGKILL)
        doomed.wait()
    finally:
        doomed.stop()
    # The observed worker does not run "sleep": it only rescues the task, once.
    assert wait_until(lambda: finished(scrape(port), "sleep", "rescued"), timeout_s=20) == 1
    row = conn.execute("SELECT status, attempts FROM tasks WHERE id = %s", (task_id,)).fetchone()
    assert row == ("pending", 1)


def test_a_terminated_listen_connection_is_counted_as_a_reconnect(
    conn: psycopg.Connection[Any], observed: tuple[WorkerProcess, int]
) -> None:
    _, port = observed
    wait_until(lambda: scrape(port)[("listener_listening", ())] == 1)
    assert scrape(port)[("listener_db_reconnects_total", ())] == 0
    terminated = conn.execute(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = 'listener:listen' AND datname = current_database()"
    ).fetchone()
    assert terminated == (1,)
    samples = scrape_until(
        port,
        lambda s: (
            s[("listener_db_reconnects_total", ())] >= 1 and s[("listener_listening", ())] == 1
        ),
        timeout_s=20,
    )
    assert samples[("listener_db_reconnects_total", ())] == 1
