"""Peer queues draining no-op jobs, one per child process: ``python -m bench.peer_subjects``.

Benchmark subjects only: listener never imports these libraries. Each run prints one
JSON line: jobs done and seconds from the first job's start to the drained queue.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from psycopg.conninfo import conninfo_to_dict

ENQUEUE_CHUNK = 1000


class Clock:
    """First and last job start and job count, updated by the no-op handlers."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last: float | None = None
        self.done = 0

    def tick(self) -> None:
        self.last = time.perf_counter()
        if self.first is None:
            self.first = self.last
        self.done += 1

    def result(self, end: float) -> dict[str, Any]:
        """Seconds from the first job's start to the last job's start (generous to the
        peer: its last acknowledgement and its drain-mode exit are not counted)."""
        seconds = (self.last or end) - (self.first or end)
        return {"done": self.done, "seconds": seconds}


async def pgqueuer_drain(dsn: str, jobs: int, batch_size: int) -> dict[str, Any]:
    """PgQueuer over asyncpg: install, enqueue ``jobs``, run in drain mode."""
    import asyncpg
    from pgqueuer.core.qm import QueueManager
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    params = conninfo_to_dict(dsn)  # asyncpg wants keywords (or a URL), not key=value
    conn = await asyncpg.connect(
        host=params.get("host"),
        port=params.get("port"),
        user=params.get("user"),
        password=params.get("password"),
        database=params.get("dbname"),
    )
    queries = Queries(AsyncpgDriver(conn))
    await queries.install()
    for start in range(0, jobs, ENQUEUE_CHUNK):
        n = min(ENQUEUE_CHUNK, jobs - start)
        await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
    clock = Clock()
    manager = QueueManager(queries)

    @manager.entrypoint("noop")
    async def noop(job: Any) -> None:
        clock.tick()

    await manager.run(batch_size=batch_size, mode=QueueExecutionMode.drain)
    result = clock.result(time.perf_counter())
    await conn.close()
    return result


async def procrastinate_drain(dsn: str, jobs: int, concurrency: int) -> dict[str, Any]:
    """procrastinate over psycopg: apply its schema, defer ``jobs``, run until caught up."""
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))
    clock = Clock()

    @app.task(name="noop")
    async def noop() -> None:
        clock.tick()

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        for start in range(0, jobs, ENQUEUE_CHUNK):
            n = min(ENQUEUE_CHUNK, jobs - start)
            await noop.batch_defer_async(*({} for _ in range(n)))
        await app.run_worker_async(
            wait=False, concurrency=concurrency, install_signal_handlers=False
        )
        return clock.result(time.perf_counter())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_subjects")
    parser.add_argument("peer", choices=["pgqueuer", "procrastinate"])
    parser.add_argument("dsn")
    parser.add_argument("jobs", type=int)
    parser.add_argument("setting", type=int, help="pgqueuer batch_size / procrastinate concurrency")
    args = parser.parse_args(argv)
    drain = pgqueuer_drain if args.peer == "pgqueuer" else procrastinate_drain
    result = asyncio.run(drain(args.dsn, args.jobs, args.setting))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
