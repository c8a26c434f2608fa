"""`listener run` start-up errors and `listener status` with live workers."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import psycopg
import pytest

from listener import create_task
from listener.store.status import queue_status
from tests.integration.engine_support import ROOT, eventually, fault_registry, running_worker


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "listener.cli", "run", "--metrics-port", "0", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--handlers", "no.such.module"], "cannot import handlers module 'no.such.module'"),
        (["--handlers", "tests.fault_handlers", "--types", "nope"],
         "no handler registered for type(s): nope"),
        (["--handlers", "tests.integration.engine_support"], "no handlers registered"),
    ],
)  # fmt: skip
def test_run_refuses_bad_handler_setup_with_one_line_error(
    dsn: str, args: list[str], message: str
) -> None:
    result = _run("--dsn", dsn, *args)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"listener: error: {message}")


def test_run_refuses_an_unmigrated_database(empty_dsn: str) -> None:
    result = _run("--dsn", empty_dsn, "--handlers", "tests.fault_handlers")
    assert result.returncode == 1
    assert "run `listener migrate` first" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.anyio
async def test_status_lists_live_workers_types_and_unhandled_pending_types(
    dsn: str, conn: psycopg.Connection[Any], anyio_backend: str
) -> None:
    create_task("nobody_handles_this", {}, conn=conn)
    async with running_worker(dsn, fault_registry(), types=["noop", "sleep"]):
        status = await eventually(
            lambda: queue_status(conn) if queue_status(conn).workers else None
        )
        (worker,) = status.workers
        assert worker["types"] == ["noop", "sleep"]
        assert status.unhandled_pending == [("nobody_handles_this", 1)]
    assert queue_status(conn).workers == []  # a stopped worker removes itself
