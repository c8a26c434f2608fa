"""PgQueuer and procrastinate as benchmark subjects, one per child process.

``python -m bench.peer_subjects PEER fill DSN JOBS``: install the peer's schema and
enqueue JOBS no-op jobs through its own API. ``... PEER drain DSN JOBS SETTING``: drain
them and print one JSON line (jobs done, seconds from the first job's start to the
last one's, and the same for the second half). ``... pgqueuer serve DSN SETTING``: run
until stopped, recording each ``latency`` job's start like bench.noop_handlers.
Benchmark subjects only: listener never imports these libraries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from psycopg.conninfo import conninfo_to_dict

ENQUEUE_CHUNK = 1000
PICKUP_LOG_ENV = "BENCH_PICKUP_LOG"  # as in bench.noop_handlers


class Clock:
    """First, middle and last job start and the job count, ticked by the handlers."""

    def __init__(self, jobs: int) -> None:
        self.half = jobs // 2
        self.first: float | None = None
        self.middle: float | None = None
        self.last: float | None = None
        self.done = 0

    def tick(self) -> None:
        self.last = time.perf_counter()
        if self.first is None:
            self.first = self.last
        self.done += 1
        if self.done == self.half:
            self.middle = self.last

    def result(self, end: float) -> dict[str, Any]:
        """Seconds from the first job's start to the last job's start (generous to the
        peer: its last acknowledgement and its drain-mode exit are not counted)."""
        last = self.last or end
        return {
            "done": self.done,
            "seconds": last - (self.first or end),
            "half_seconds": last - (self.middle or end),
        }


async def _asyncpg_connect(dsn: str) -> Any:
    import asyncpg

    params = conninfo_to_dict(dsn)  # asyncpg wants keywords (or a URL), not key=value
    return await asyncpg.connect(
        host=params.get("host"),
        port=params.get("port"),
        user=params.get("user"),
        password=params.get("password"),
        database=params.get("dbname"),
    )


async def pgqueuer_fill(dsn: str, jobs: int) -> None:
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    conn = await _asyncpg_connect(dsn)
    queries = Queries(AsyncpgDriver(conn))
    await queries.install()
    for start in range(0, jobs, ENQUEUE_CHUNK):
        n = min(ENQUEUE_CHUNK, jobs - start)
        await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
    await conn.close()


async def pgqueuer_run(dsn: str, jobs: int, batch_size: int) -> dict[str, Any]:
    """Drain mode with ``jobs`` > 0; with 0, serve until stopped (pickup latency)."""
    from pgqueuer.core.qm import QueueManager
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    conn = await _asyncpg_connect(dsn)
    clock = Clock(jobs)
    manager = QueueManager(Queries(AsyncpgDriver(conn)))
    pickup_log = _pickup_log() if jobs == 0 else None

    @manager.entrypoint("noop")
    async def noop(job: Any) -> None:
        clock.tick()

    @manager.entrypoint("latency")
    async def record_start(job: Any) -> None:
        started = time.time()
        if pickup_log is None:
            raise RuntimeError(f"{PICKUP_LOG_ENV} is not set")
        pickup_log.write(f"{job.id} {started:.6f}\n")

    mode = QueueExecutionMode.drain if jobs else QueueExecutionMode.continuous
    await manager.run(batch_size=batch_size, mode=mode)
    result = clock.result(time.perf_counter())
    await conn.close()
    return result


def _procrastinate_app(dsn: str, clock: Clock) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop")
    async def noop() -> None:
        clock.tick()

    return app


async def procrastinate_fill(dsn: str, jobs: int) -> None:
    app = _procrastinate_app(dsn, Clock(jobs))
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        task = app.tasks["noop"]
        for start in range(0, jobs, ENQUEUE_CHUNK):
            n = min(ENQUEUE_CHUNK, jobs - start)
            await task.batch_defer_async(*({} for _ in range(n)))


async def procrastinate_run(dsn: str, jobs: int, concurrency: int) -> dict[str, Any]:
    clock = Clock(jobs)
    app = _procrastinate_app(dsn, clock)
    async with app.open_async():
        await app.run_worker_async(
            wait=False, concurrency=concurrency, install_signal_handlers=False
        )
        return clock.result(time.perf_counter())


def _pickup_log() -> Any:
    path = os.environ.get(PICKUP_LOG_ENV)
    return open(path, "a", buffering=1, encoding="utf-8") if path else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_subjects")
    parser.add_argument("peer", choices=["pgqueuer", "procrastinate"])
    parser.add_argument("action", choices=["fill", "drain", "serve"])
    parser.add_argument("dsn")
    parser.add_argument("numbers", type=int, nargs="+", help="fill: JOBS; drain: JOBS SETTING")
    args = parser.parse_args(argv)
    if args.action == "fill":
        fill = pgqueuer_fill if args.peer == "pgqueuer" else procrastinate_fill
        asyncio.run(fill(args.dsn, args.numbers[0]))
        return 0
    if args.action == "serve":
        if args.peer != "pgqueuer":
            parser.error("serve: pgqueuer only")
        asyncio.run(pgqueuer_run(args.dsn, 0, args.numbers[0]))
        return 0
    if len(args.numbers) != 2:
        parser.error("drain needs JOBS SETTING")
    run = pgqueuer_run if args.peer == "pgqueuer" else procrastinate_run
    print(json.dumps(asyncio.run(run(args.dsn, *args.numbers))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
