"""Handlers with fleet-wide limits, for the limit tests (--handlers tests.limit_handlers)."""

from __future__ import annotations

import anyio

from listener import RetryLater, Task, handler
from tests.ledger import record


@handler("two_at_a_time", global_concurrency=2)
async def two_at_a_time(task: Task) -> None:
    record("start", task)
    try:
        await anyio.sleep(float(task.payload.get("s", 0.3)))
    finally:
        record("end", task)


@handler("five_a_second", rate_limit="5/s")
async def five_a_second(task: Task) -> None:
    record("start", task)
    record("end", task)


_asked_to_wait: set[object] = set()


@handler("one_at_a_time", global_concurrency=1)
async def one_at_a_time(task: Task) -> None:
    """The first run of a task in this process may ask to wait (RetryLater): that wait
    must not hold the type's only slot."""
    record("start", task)
    try:
        if task.payload.get("wait_first") and task.id not in _asked_to_wait:
            _asked_to_wait.add(task.id)
            raise RetryLater(float(task.payload["wait_first"]), "not yet")
        await anyio.sleep(float(task.payload.get("s", 0.1)))
    finally:
        record("end", task)


@handler("unlimited")
async def unlimited(task: Task) -> None:
    record("start", task)
    await anyio.sleep(float(task.payload.get("s", 0.3)))
    record("end", task)
