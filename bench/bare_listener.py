"""The latency floor for item 4: a bare LISTEN + claim loop with no engine around it.

``python -m bench.bare_listener DSN [--asyncio [--worker-claim]]`` with
``BENCH_PICKUP_LOG`` set: listens on the worker's channel, claims on each notification
(and every 2 s), writes ``<task id> <time.time()>`` for each claimed row as a handler
would, then completes the batch. One connection for LISTEN and one for work.

- By default: synchronous psycopg and ``listener.claim_tasks()`` (the plain batch
  claim), the least Python can do between a commit and a handler start: the floor
  the worker's pickup is held to.
- ``--asyncio``: the same loop on asyncio with psycopg's async connections, as the
  worker runs: what the event loop costs on its own.
- ``--asyncio --worker-claim``: and the worker's own claim (``store.claim``: the
  ``claim_batch`` statement with the worker's types, claim token, attempt limits and
  the outlook a short claim ends with, decoded as the worker decodes it): what the
  claim costs beside the plain one. What is left between this and the worker is the
  engine (wake-up, pool, registry, slots, executor).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import psycopg

from bench.noop_handlers import PICKUP_LOG_ENV
from bench.plans import LEASE_S, worker_claim_spec
from listener.config import NOTIFY_CHANNEL
from listener.sqlfiles import query
from listener.store import engine as store

WORKER_ID = "bench-bare-listener"
BATCH = 100
PLAIN_CLAIM = {"worker_id": WORKER_ID, "limit": BATCH, "types": None, "lease_s": LEASE_S}


def record(log: TextIO, ids: list[Any]) -> None:
    """What a handler start would be: each task's id and the time it started."""
    started = time.time()
    log.write("".join(f"{task_id} {started:.6f}\n" for task_id in ids))


def run_sync(dsn: str, log: TextIO, ready: Callable[[], object]) -> None:
    with (
        psycopg.connect(dsn, autocommit=True) as listen,
        psycopg.connect(dsn, autocommit=True) as work,
    ):
        listen.execute(f"LISTEN {NOTIFY_CHANNEL}")
        ready()  # listening: the benchmark starts its producer
        while True:
            while rows := work.execute(query("claim_tasks"), PLAIN_CLAIM).fetchall():
                ids = [row[0] for row in rows]
                record(log, ids)
                work.execute(query("complete_tasks"), {"ids": ids, "worker_id": WORKER_ID})
            for _ in listen.notifies(timeout=2.0, stop_after=1):
                pass


async def run_async(
    dsn: str, log: TextIO, ready: Callable[[], object], *, worker_claim: bool
) -> None:
    spec = worker_claim_spec()
    listen = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    work = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    async with listen, work:
        await listen.execute(f"LISTEN {NOTIFY_CHANNEL}")
        ready()  # listening: the benchmark starts its producer
        while True:
            while True:
                if worker_claim:  # as the worker: until a claim comes back short
                    rows, outlook = await store.claim(
                        work, WORKER_ID, uuid.uuid4(), BATCH, spec, LEASE_S
                    )
                    done = outlook is not None
                else:  # as the synchronous loop: until a claim finds nothing
                    rows = await (await work.execute(query("claim_tasks"), PLAIN_CLAIM)).fetchall()
                    done = not rows
                if rows:
                    ids = [row[0] for row in rows]
                    record(log, ids)
                    await work.execute(
                        query("complete_tasks"), {"ids": ids, "worker_id": WORKER_ID}
                    )
                if done:
                    break
            async for _ in listen.notifies(timeout=2.0, stop_after=1):
                pass


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_listener")
    parser.add_argument("dsn")
    parser.add_argument("--asyncio", action="store_true", help="asyncio and async psycopg")
    parser.add_argument("--worker-claim", action="store_true", help="the worker's claim")
    args = parser.parse_args(argv)
    log_path = os.environ[PICKUP_LOG_ENV]
    ready = Path(log_path + ".ready").touch
    with open(log_path, "a", buffering=1, encoding="utf-8") as log:
        if args.asyncio:
            asyncio.run(run_async(args.dsn, log, ready, worker_claim=args.worker_claim))
        else:
            run_sync(args.dsn, log, ready)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
