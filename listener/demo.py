"""`listener demo`: a real worker, a stream of tasks (some flaky, one poison), live numbers.

Everything is real: tasks are INSERTed, the trigger NOTIFYs, the worker claims
them with SKIP LOCKED, retries the flaky ones with backoff and fails the poison
one after its last attempt. Only the handlers are toys.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import psycopg
from prometheus_client import CollectorRegistry

from listener import producer
from listener.metrics import Metrics
from listener.models import Task
from listener.registry import Registry, handler
from listener.sqlfiles import query
from listener.worker import Worker, WorkerSettings

POISON_ATTEMPTS = 3
FINISHED = ("completed", "failed")


@dataclass
class Stats:
    """What the demo's handlers saw, for the live view."""

    pickup_s: list[float] = field(default_factory=list)  # INSERT to first handler start
    retries: int = 0


@dataclass(frozen=True, slots=True)
class Frame:
    """One refresh of the live view."""

    total: int
    counts: dict[str, int]
    elapsed_s: float
    throughput_per_s: float
    pickup_ms: tuple[float, float, float] | None  # p50, p95, p99
    retries: int

    @property
    def finished(self) -> int:
        return sum(self.counts.get(s, 0) for s in FINISHED)


def demo_registry(stats: Stats) -> Registry:
    """Four toy handlers: fast async, sync (threads), flaky once, and a poison pill."""
    registry = Registry()

    def seen(task: Task) -> None:
        if task.attempt == 1:
            stats.pickup_s.append(time.time() - task.created_at.timestamp())
        else:
            stats.retries += 1

    @handler("demo.send_email", registry=registry)
    async def send_email(task: Task) -> None:
        seen(task)
        await anyio.sleep(0.005 + (task.payload["n"] % 7) / 1000)

    @handler("demo.thumbnail", registry=registry)
    def thumbnail(task: Task) -> None:  # a plain function: runs in a thread
        seen(task)
        time.sleep(0.01)

    @handler("demo.webhook", backoff_base_s=0.3, backoff_max_s=1.0, registry=registry)
    async def webhook(task: Task) -> None:
        seen(task)
        if task.attempt == 1:
            raise ConnectionError("503 from the partner API (the retry will succeed)")

    @handler("demo.poison", max_attempts=POISON_ATTEMPTS, backoff_base_s=0.3, registry=registry)
    async def poison(task: Task) -> None:
        seen(task)
        raise ValueError("this payload can never be processed")

    return registry


def task_types(count: int) -> list[str]:
    """The mix, in enqueue order: one poison task a third of the way in, 1 in 8 flaky."""
    kinds = []
    for n in range(count):
        if n == count // 3:
            kinds.append("demo.poison")
        elif n % 8 == 3:
            kinds.append("demo.webhook")
        elif n % 4 == 1:
            kinds.append("demo.thumbnail")
        else:
            kinds.append("demo.send_email")
    return kinds


async def produce(dsn: str, run: str, count: int, rate: float) -> None:
    """INSERT ``count`` tasks at ``rate`` per second, in small batches."""
    kinds = task_types(count)
    sent, start = 0, time.monotonic()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while sent < count:
            due = min(count, int((time.monotonic() - start) * rate) + 1)
            batch = [
                producer.new_task(kinds[n], {"demo_run": run, "n": n}) for n in range(sent, due)
            ]
            if batch:
                await producer.create_tasks_async(batch, conn=conn)
                sent = due
            await anyio.sleep(0.02)


def percentiles_ms(samples: list[float]) -> tuple[float, float, float] | None:
    if len(samples) < 2:
        return None
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return (cuts[49] * 1000, cuts[94] * 1000, cuts[98] * 1000)


async def run_demo(
    dsn: str, count: int, rate: float, show: Callable[[Frame], None], timeout_s: float
) -> Frame:
    """Run the worker and the producer until every task finished (or the deadline)."""
    stats, run = Stats(), uuid.uuid4().hex
    settings = WorkerSettings(dsn=dsn, concurrency=16, poll_interval_s=1.0, grace_s=1.0)
    worker = Worker(settings, registry=demo_registry(stats), metrics=Metrics(CollectorRegistry()))
    window: deque[tuple[float, int]] = deque(maxlen=8)  # (time, finished), ~2 s
    start = time.monotonic()
    watch = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    async with watch, anyio.create_task_group() as tg:
        await tg.start(worker.run)
        producing = anyio.CancelScope()
        tg.start_soon(_within, producing, produce, dsn, run, count, rate)
        while True:
            frame = await _frame(watch, run, count, stats, start, window)
            show(frame)
            if frame.finished >= count or frame.elapsed_s > timeout_s:
                break
            await anyio.sleep(0.25)
        producing.cancel()
        worker.request_stop(0.5)  # drains, releases anything left, unregisters
    return frame


async def _within(scope: anyio.CancelScope, func: Callable[..., Any], *args: Any) -> None:
    with scope:
        await func(*args)


async def _frame(
    watch: psycopg.AsyncConnection[Any],
    run: str,
    count: int,
    stats: Stats,
    start: float,
    window: deque[tuple[float, int]],
) -> Frame:
    cur = await watch.execute(query("demo_counts"), {"run": run})
    counts = {str(s): int(n) for s, n in await cur.fetchall()}
    now = time.monotonic()
    finished = sum(counts.get(s, 0) for s in FINISHED)
    window.append((now, finished))
    (t0, f0), (t1, f1) = window[0], window[-1]
    throughput = (f1 - f0) / (t1 - t0) if t1 > t0 else 0.0
    pickup = percentiles_ms(stats.pickup_s)
    return Frame(count, counts, now - start, throughput, pickup, stats.retries)
