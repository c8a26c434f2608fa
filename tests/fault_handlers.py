"""Handlers for the engine's tests, importable by worker subprocesses (--handlers)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any

import anyio
import psycopg

from listener import PermanentError, RetryLater, Task, handler


async def _record(conn: psycopg.AsyncConnection[Any], task: Task, what: str) -> None:
    await conn.execute(
        "INSERT INTO test_effects (task_id, what, pid) VALUES (%s, %s, %s)",
        (task.id, what, os.getpid()),
    )


@handler("noop")
async def noop(task: Task) -> None:
    """Does nothing."""


@handler("effect", transactional=True)
async def effect(task: Task, conn: psycopg.AsyncConnection[Any]) -> None:
    """Writes one effect row in the transaction that completes the task."""
    await _record(conn, task, "effect")


@handler("sleep")
async def sleep(task: Task) -> None:
    await anyio.sleep(float(task.payload.get("s", 1.0)))


@handler("announced_sleep")
async def announced_sleep(task: Task) -> None:
    """Sleeps after saying so in the worker's output, so a test knows it is running."""
    print(f"handler.started {task.id}", flush=True)
    await anyio.sleep(float(task.payload.get("s", 1.0)))


@handler("sync_sleep")
def sync_sleep(task: Task) -> None:
    time.sleep(float(task.payload.get("s", 1.0)))


@handler("spin")
async def spin(task: Task) -> None:
    """Busy for 2 ms without ever yielding: a batch of these runs back to back in one slot."""
    time.sleep(0.002)  # noqa: ASYNC251 - blocking on purpose: it must never yield


@handler("sync_hang", timeout_s=0.3, max_attempts=1)
def sync_hang(task: Task) -> None:
    """Runs past its timeout in a thread that can't be interrupted (it is abandoned)."""
    time.sleep(float(task.payload.get("s", 20.0)))


@handler("slow_effect", transactional=True)
async def slow_effect(task: Task, conn: psycopg.AsyncConnection[Any]) -> None:
    """Sleeps, then writes an effect with the completion (one effect per completion)."""
    await anyio.sleep(float(task.payload.get("s", 1.0)))
    await _record(conn, task, "effect")


@handler("kill_self", max_attempts=3)
def kill_self(task: Task) -> None:
    """A poison task: kills the worker process that runs it, every time."""
    os.kill(os.getpid(), signal.SIGKILL)


@handler("always_fails", max_attempts=3, backoff_base_s=0.05, backoff_max_s=0.1)
async def always_fails(task: Task) -> None:
    raise ValueError("always fails")


@handler("permanent")
async def permanent(task: Task) -> None:
    raise PermanentError("this input can never work")


_asked_to_wait: set[object] = set()


@handler("retry_later_once")
async def retry_later_once(task: Task) -> None:
    """Asks to be run again in 0.2 s the first time this process sees the task."""
    if task.id not in _asked_to_wait:
        _asked_to_wait.add(task.id)
        raise RetryLater(0.2, "not yet")


@handler("hang", timeout_s=0.5, max_attempts=2, backoff_base_s=0.05, backoff_max_s=0.1)
async def hang(task: Task) -> None:
    await anyio.sleep(3600)


@handler("needs_shape", max_attempts=1)
async def needs_shape(task: Task) -> None:
    task.payload["order"]["id"]


# -- handlers that misbehave the ways a hostile or buggy handler can -------------------


class _NotAnException(BaseException):
    """What some libraries raise: a BaseException that is not an Exception."""


@handler("stray_cancel", max_attempts=1)
async def stray_cancel(task: Task) -> None:
    """Lets out a cancellation nobody asked for, as a buggy library can."""
    raise asyncio.CancelledError("from a library")


@handler("task_cancels_itself", max_attempts=1)
async def task_cancels_itself(task: Task) -> None:
    """Calls Task.cancel() on the task running it (a library that cancels the caller)."""
    current = asyncio.current_task()
    assert current is not None
    current.cancel()
    await asyncio.sleep(0)


@handler("system_exit", max_attempts=1)
async def system_exit(task: Task) -> None:
    sys.exit(3)


@handler("sync_system_exit", max_attempts=1)
def sync_system_exit(task: Task) -> None:
    sys.exit(4)


@handler("keyboard_interrupt", max_attempts=1)
async def keyboard_interrupt(task: Task) -> None:
    raise KeyboardInterrupt


@handler("base_exception", max_attempts=1)
async def base_exception(task: Task) -> None:
    raise _NotAnException("not an Exception")


@handler("retry_later_zero_once", max_attempts=1)
async def retry_later_zero_once(task: Task) -> None:
    """RetryLater(0) the first time this process sees the task, then returns."""
    if task.id not in _asked_to_wait:
        _asked_to_wait.add(task.id)
        raise RetryLater(0, "at once")


RUNS: list[tuple[str, str, float, float]] = []  # (task id, handler, start, end), in-process
_threads_now = 0
THREADS_MAX = [0]


@handler("sync_overrun", timeout_s=0.2, max_attempts=2, backoff_base_s=0.02, backoff_max_s=0.05)
def sync_overrun(task: Task) -> None:
    """Runs past its timeout in a thread, then returns: records its interval."""
    global _threads_now
    start = time.monotonic()
    _threads_now += 1
    THREADS_MAX[0] = max(THREADS_MAX[0], _threads_now)
    try:
        time.sleep(float(task.payload.get("s", 0.8)))
    finally:
        _threads_now -= 1
        RUNS.append((str(task.id), "sync_overrun", start, time.monotonic()))


@handler("ledgered")
async def ledgered(task: Task) -> None:
    """Records its run interval to the file named by LISTENER_TEST_LEDGER (one per process)."""
    start = time.time()
    await anyio.sleep(float(task.payload.get("s", 0.0)))
    _ledger_line(task, start, time.time())


def _ledger_line(task: Task, start: float, end: float) -> None:
    path = os.environ.get("LISTENER_TEST_LEDGER")
    if path:
        with open(path, "a", encoding="utf-8") as ledger:
            ledger.write(f"{task.id} {start:.6f} {end:.6f} {os.getpid()}\n")


@handler("patient", max_attempts=10)
async def patient(task: Task) -> None:
    """Allowed ten attempts by its handler (other workers' defaults must not apply)."""
    print(f"handler.started {task.id}", flush=True)
    await anyio.sleep(float(task.payload.get("s", 1.0)))


_seen_once: set[object] = set()


@handler("quick_then_slow")
async def quick_then_slow(task: Task) -> None:
    """Returns after 0.5 s the first time this process runs the task; then sleeps and records."""
    if task.id not in _seen_once:
        await anyio.sleep(0.5)
        _seen_once.add(task.id)
        return
    start = time.monotonic()
    await anyio.sleep(float(task.payload.get("s", 2.0)))
    RUNS.append((str(task.id), "quick_then_slow", start, time.monotonic()))


@handler("env_probe", transactional=True)
async def env_probe(task: Task, conn: psycopg.AsyncConnection[Any]) -> None:
    """Records what the worker's environment holds for each name in ``names``."""
    for name in task.payload["names"]:
        await _record(conn, task, f"{name}={os.environ.get(name, '<unset>')}")
