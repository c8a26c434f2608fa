"""Handlers the benchmark's workers run: ``listener run --handlers bench.noop_handlers``."""

from __future__ import annotations

import os
import time

from listener import Task, handler

PICKUP_LOG_ENV = "BENCH_PICKUP_LOG"

# Opened once, when the worker imports this module; line-buffered, so every start is
# on disk as soon as it is written and nothing is lost when the worker is stopped.
_path = os.environ.get(PICKUP_LOG_ENV)
_pickup_log = open(_path, "a", buffering=1, encoding="utf-8") if _path else None  # noqa: SIM115


@handler("bench.noop")
async def noop(task: Task) -> None:
    """Do nothing: the benchmark measures the queue, not the work."""


@handler("bench.latency")
async def record_start(task: Task) -> None:
    """Record this handler's start time (time.time(), the producer's clock) and task id."""
    started = time.time()
    if _pickup_log is None:
        raise RuntimeError(f"{PICKUP_LOG_ENV} is not set: nowhere to record pickup times")
    _pickup_log.write(f"{task.id} {started:.6f}\n")
