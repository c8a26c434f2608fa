"""Handlers for the chaos test: each task's payload says how its handler misbehaves.

Every run is recorded in the ledger file named by LISTENER_TEST_LEDGER (one per worker
process): ``start ID TIME PID`` when the handler starts, ``end ID TIME PID`` when it
ends, however it ends, so the test can prove no task ever ran beside itself.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from listener import RetryLater, Task, handler

# What each kind of task ends as, when its handler does what it says.
EXPECTED = {
    "return": "completed",
    "retry_later": "completed",
    "raise": "failed",
    "base_exception": "failed",
    "stray_cancel": "failed",
    "system_exit": "failed",
    "overrun": "failed",
    "poison": "failed",
}
# The error each failed kind leaves (a worker killed mid-run may leave WorkerLost).
ERRORS = {
    "raise": "ValueError",
    "base_exception": "ChaosBaseException",
    "stray_cancel": "StrayCancellation",
    "system_exit": "SystemExit",
    "overrun": "HandlerTimeout",
    "poison": "PayloadError",
}


class ChaosBaseException(BaseException):
    """Not an Exception: what some libraries raise."""


def _ledger(what: str, task: Task) -> None:
    path = os.environ.get("LISTENER_TEST_LEDGER")
    if path:
        with open(path, "a", encoding="utf-8") as ledger:
            ledger.write(f"{what} {task.id} {time.time():.6f} {os.getpid()}\n")


def _first_time(task: Task) -> bool:
    """True the first time any worker process asks, for this task."""
    marks = Path(os.environ["LISTENER_TEST_MARKS"])
    try:
        (marks / str(task.id)).touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


@handler("chaos", max_attempts=5, backoff_base_s=0.05, backoff_max_s=0.2)
async def chaos(task: Task) -> None:
    _ledger("start", task)
    try:
        await _misbehave(task.payload.get("do"), task)
    finally:
        _ledger("end", task)


async def _misbehave(do: Any, task: Task) -> None:
    await anyio.sleep(float(task.payload.get("s", 0.0)))
    if do == "raise":
        raise ValueError("chaos")
    if do == "base_exception":
        raise ChaosBaseException("chaos")
    if do == "stray_cancel":
        raise asyncio.CancelledError("chaos")
    if do == "system_exit":
        sys.exit(2)
    if do == "retry_later" and _first_time(task):
        raise RetryLater(0, "chaos")


@handler("chaos_overrun", timeout_s=0.2, max_attempts=2, backoff_base_s=0.05, backoff_max_s=0.1)
def chaos_overrun(task: Task) -> None:
    """Runs past its timeout in a thread that can't be interrupted."""
    _ledger("start", task)
    try:
        time.sleep(0.5)
    finally:
        _ledger("end", task)
