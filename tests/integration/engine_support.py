"""Helpers for the engine's tests: in-process workers, worker processes, waiting."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import psycopg

from listener.registry import Registry
from listener.worker import Worker, WorkerSettings
from tests.integration.support import subprocess_environ

ROOT = Path(__file__).resolve().parents[2]

EFFECTS_TABLE = """
CREATE TABLE IF NOT EXISTS test_effects (
    task_id uuid NOT NULL, what text NOT NULL, pid integer, at timestamptz DEFAULT now()
)
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fault_registry() -> Registry:
    """A private registry holding tests/fault_handlers.py's handlers."""
    import importlib

    from listener.registry import default_registry

    module = importlib.import_module("tests.fault_handlers")
    registry = Registry()
    for name in default_registry.types():
        spec = default_registry.get(name)
        if spec is not None and spec.func.__module__ == module.__name__:
            registry.register(spec)
    return registry


@contextlib.asynccontextmanager
async def running_worker(dsn: str, registry: Registry, **settings: Any) -> AsyncIterator[Worker]:
    """An in-process worker, stopped (drained) when the block ends."""
    settings.setdefault("poll_interval_s", 5.0)
    worker = Worker(WorkerSettings(dsn=dsn, **settings), registry=registry)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        try:
            yield worker
        finally:
            worker.request_stop(settings.get("grace_s", 5.0))


async def eventually(
    check: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.02
) -> Any:
    """Poll ``check`` (sync) until it returns something truthy; fail after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s: last value {value!r}")
        await anyio.sleep(interval_s)


def wait_until(check: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.05) -> Any:
    """Synchronous ``eventually`` for process-level tests."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s: last value {value!r}")
        time.sleep(interval_s)


def statuses(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall()
    return {status: int(count) for status, count in rows}


def ledger(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Every task's terminal state and how many effects it produced."""
    effects = conn.execute(
        "SELECT count(*) FILTER (WHERE n > 1), count(*) FILTER (WHERE n = 1) FROM "
        "(SELECT task_id, count(*) AS n FROM test_effects GROUP BY task_id) AS e"
    ).fetchone()
    assert effects is not None
    return {
        "statuses": statuses(conn),
        "tasks_with_duplicate_effects": int(effects[0]),
        "tasks_with_one_effect": int(effects[1]),
    }


class WorkerProcess:
    """A `listener run` subprocess with tests/fault_handlers.py registered."""

    def __init__(self, dsn: str, *args: str, env: dict[str, str] | None = None) -> None:
        command = [
            sys.executable, "-m", "listener.cli", "run", "--dsn", dsn,
            "--handlers", "tests.fault_handlers", "--metrics-port", "0",
            "--log-format", "json", *args,
        ]  # fmt: skip
        self.dsn = dsn
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"worker-{time.time_ns()}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            command, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            env={**subprocess_environ(), "PYTHONPATH": str(ROOT), **(env or {})},
        )  # fmt: skip

    def wait_started(self, timeout_s: float = 20.0) -> None:
        """Wait until the worker has registered itself (it is then listening)."""
        wait_until(lambda: self._registered() or self.proc.poll() is not None, timeout_s)
        assert self.proc.poll() is None, f"worker exited early:\n{self.log().decode()}"

    def _registered(self) -> bool:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT 1 FROM listener.workers WHERE pid = %s", (self.proc.pid,)
            ).fetchone()
        return row is not None

    def log(self) -> bytes:
        return self.log_path.read_bytes()

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout_s: float = 30.0) -> int:
        return self.proc.wait(timeout_s)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()


@contextlib.contextmanager
def worker_processes(dsn: str, count: int, *args: str) -> Iterator[list[WorkerProcess]]:
    workers = [WorkerProcess(dsn, *args) for _ in range(count)]
    try:
        for w in workers:
            w.wait_started()
        yield workers
    finally:
        for w in workers:
            w.stop()


def terminate_other_sessions(conn: psycopg.Connection[Any]) -> int:
    """pg_terminate_backend every other session of this database; how many."""
    rows = conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()
    return len(rows)


@contextlib.contextmanager
def database_read_only(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """The database turns read-only, as in a failover or Supabase's read-only mode.

    New sessions start read-only; every other session is cut so that reconnects get
    the new setting. ``conn`` itself stays writable.
    """
    name = conn.info.dbname
    conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    terminate_other_sessions(conn)
    try:
        yield
    finally:
        conn.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        terminate_other_sessions(conn)


def disable_payload_checks(conn: psycopg.Connection[Any]) -> None:
    """Store rows as an older schema would have (no insert-time payload limits)."""
    conn.execute(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'tasks_check_payload')"
        " THEN ALTER TABLE tasks DISABLE TRIGGER tasks_check_payload; END IF; END $$"
    )
