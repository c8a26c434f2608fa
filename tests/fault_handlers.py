"""Handlers for the engine's tests, importable by worker subprocesses (--handlers)."""

from __future__ import annotations

import os
import signal
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


@handler("env_probe", transactional=True)
async def env_probe(task: Task, conn: psycopg.AsyncConnection[Any]) -> None:
    """Records what the worker's environment holds for each name in ``names``."""
    for name in task.payload["names"]:
        await _record(conn, task, f"{name}={os.environ.get(name, '<unset>')}")
