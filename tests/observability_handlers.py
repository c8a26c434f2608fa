"""Handlers for the observability tests, importable by worker processes (--handlers)."""

from __future__ import annotations

import anyio

from listener import PermanentError, Task, handler


@handler("obs_ok")
async def ok(task: Task) -> None:
    """Succeeds at once."""


@handler("obs_bounce", max_attempts=1)
async def bounce(task: Task) -> None:
    """Fails for good quoting the recipient, as real SMTP errors do."""
    raise PermanentError(f"550 mailbox {task.payload['email']} unavailable")


@handler("obs_slow")
async def slow(task: Task) -> None:
    """Takes ``payload["s"]`` seconds, so a shutdown finds it running."""
    await anyio.sleep(float(task.payload.get("s", 1.0)))
