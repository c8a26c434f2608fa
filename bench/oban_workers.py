"""Workers for the Oban-py subject: ``oban start --cron-modules bench.oban_workers``.

Runs in Oban's own venv (Python >= 3.12, see bench/oban_venv.py), where listener is not
installed: this module imports only Oban and the standard library.
"""

from __future__ import annotations

import os
import time
from typing import Any

from oban import worker

# The same variable as bench.noop_handlers.PICKUP_LOG_ENV (not imported: that module
# needs listener, which this venv doesn't have).
PICKUP_LOG_ENV = "BENCH_PICKUP_LOG"
_path = os.environ.get(PICKUP_LOG_ENV)
_pickup_log = open(_path, "a", buffering=1, encoding="utf-8") if _path else None  # noqa: SIM115


@worker(queue="default")
class Noop:
    """Do nothing: the benchmark measures the queue, not the work."""

    async def process(self, job: Any) -> None:
        return None


@worker(queue="default")
class Latency:
    """Record this job's start time (time.time(), the producer's clock) and id."""

    async def process(self, job: Any) -> None:
        started = time.time()
        if _pickup_log is None:
            raise RuntimeError(f"{PICKUP_LOG_ENV} is not set: nowhere to record pickup times")
        _pickup_log.write(f"{job.id} {started:.6f}\n")
