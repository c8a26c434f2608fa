"""The latency floor for item 4: a bare LISTEN + claim loop with no engine around it.

``python -m bench.bare_listener DSN`` with ``BENCH_PICKUP_LOG`` set: listens on the
worker's channel, claims with ``listener.claim_tasks()`` (the plain batch claim: the
worker's ``claim_batch`` adds types, limits and the outlook, ~0.25 ms more per call
here) on each notification (and every 2 s), writes ``<task id> <time.time()>`` for
each claimed row as a handler would, then completes the batch. Synchronous psycopg,
one connection for LISTEN and one for work: the least Python can do between a commit
and a handler start.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psycopg

from bench.noop_handlers import PICKUP_LOG_ENV
from listener.config import NOTIFY_CHANNEL
from listener.sqlfiles import query

WORKER_ID = "bench-bare-listener"


def main(dsn: str) -> int:
    log_path = os.environ[PICKUP_LOG_ENV]
    with (
        psycopg.connect(dsn, autocommit=True) as listen,
        psycopg.connect(dsn, autocommit=True) as work,
        open(log_path, "a", buffering=1, encoding="utf-8") as log,
    ):
        listen.execute(f"LISTEN {NOTIFY_CHANNEL}")
        Path(log_path + ".ready").touch()
        while True:
            claim = {"worker_id": WORKER_ID, "limit": 100, "types": None, "lease_s": 60.0}
            while rows := work.execute(query("claim_tasks"), claim).fetchall():
                started = time.time()
                log.write("".join(f"{row[0]} {started:.6f}\n" for row in rows))
                ids = [row[0] for row in rows]
                work.execute(query("complete_tasks"), {"ids": ids, "worker_id": WORKER_ID})
            for _ in listen.notifies(timeout=2.0, stop_after=1):
                pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
