"""Plain-SQL producers in their own processes: one row per transaction.

A pool of processes is started once and reused, so process start-up never falls
inside a measurement. Every process starts and stops on the same wall-clock instants.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from typing import Any

import psycopg

from bench import env
from bench.env import NOOP_TYPE
from listener.sqlfiles import query

START_DELAY_S = 0.1  # time for every producer to receive its order before the start


def _insert_until(conn: psycopg.Connection[Any], start: float, end: float, kind: str) -> int:
    """Insert single rows as fast as possible between two wall-clock instants."""
    insert, params = query("bench_insert_one"), {"type": kind}
    time.sleep(max(0.0, start - time.time()))
    done = 0
    while time.time() < end:
        conn.execute(insert, params)
        done += 1
    return done


def _insert_paced(
    conn: psycopg.Connection[Any],
    start: float,
    count: int,
    rate: float,
    kind: str,
    insert_query: str = "bench_insert_one",
) -> list[tuple[str, float]]:
    """Insert ``count`` rows at ``rate``/s; each row's id and its commit time (time.time())."""
    insert, params = query(insert_query), {"type": kind}
    committed = []
    for i in range(count):
        time.sleep(max(0.0, start + i / rate - time.time()))
        row = conn.execute(insert, params).fetchone()
        committed.append((str(row[0]) if row else "", time.time()))
    return committed


def _serve(pipe: Connection) -> None:
    """A producer process: obey orders until told to stop."""
    conns: dict[str, psycopg.Connection[Any]] = {}
    while True:
        order = pipe.recv()
        if order[0] == "stop":
            break
        kind, dsn, *args = order
        try:
            if dsn not in conns:
                conns[dsn] = env.connect(dsn, prepare_threshold=0)
            if kind == "connect":
                pipe.send(0)
            elif kind == "insert":
                pipe.send(_insert_until(conns[dsn], *args))
            else:
                pipe.send(_insert_paced(conns[dsn], *args))
        except psycopg.Error as exc:
            pipe.send(exc.__class__.__name__ + ": " + str(exc).strip().splitlines()[0])
    for conn in conns.values():
        conn.close()


class ProducerPool:
    """``size`` producer processes, reused across measurements."""

    def __init__(self, size: int) -> None:
        ctx = mp.get_context("spawn")
        self._pipes: list[Connection] = []
        self._procs = []
        for _ in range(size):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(child,), daemon=True)
            proc.start()
            self._pipes.append(parent)
            self._procs.append(proc)

    def __enter__(self) -> ProducerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self, dsn: str) -> None:
        """Connect every process to ``dsn`` now, so no connect falls inside a measurement."""
        for pipe in self._pipes:
            pipe.send(("connect", dsn))
        self.collect(len(self._pipes))

    def start_inserting(
        self, dsn: str, producers: int, seconds: float, kind: str = NOOP_TYPE
    ) -> tuple[float, float]:
        """Order ``producers`` processes to insert for ``seconds``; returns (start, end)."""
        start = time.time() + START_DELAY_S
        for pipe in self._pipes[:producers]:
            pipe.send(("insert", dsn, start, start + seconds, kind))
        return start, start + seconds

    def collect(self, producers: int) -> list[Any]:
        """Each ordered producer's answer (a count, a list, or an error string)."""
        try:
            answers = [pipe.recv() for pipe in self._pipes[:producers]]
        except (EOFError, OSError) as exc:
            raise RuntimeError(f"a producer process died: {exc!r}") from None
        errors = [a for a in answers if isinstance(a, str)]
        if errors:
            raise RuntimeError(f"producer failed: {errors[0]}")
        return answers

    def insert_rate(self, dsn: str, producers: int, seconds: float) -> float:
        """Rows per second from ``producers`` concurrent single-row producers."""
        self.start_inserting(dsn, producers, seconds)
        return float(sum(self.collect(producers))) / seconds

    def start_paced(
        self, dsn: str, count: int, rate: float, kind: str, insert_query: str = "bench_insert_one"
    ) -> None:
        """Order the first process to insert ``count`` rows at ``rate`` per second, each
        with the named query (it returns the new row's id)."""
        start = time.time() + START_DELAY_S
        self._pipes[0].send(("paced", dsn, start, count, rate, kind, insert_query))

    def close(self) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(BrokenPipeError, OSError):
                pipe.send(("stop",))
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
