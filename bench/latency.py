"""Item 4, pickup latency: commit to handler start, with NOTIFY and polling only.

A separate producer process inserts one task per transaction at a fixed rate and
records each commit's time.time(); the handler records time.time() when it starts
(same machine, same clock). The first tasks of each run are a warm-up and dropped.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from bench import env, workers
from bench.context import Context, ItemResult
from bench.noop_handlers import PICKUP_LOG_ENV
from bench.producers import ProducerPool
from bench.stats import Figure, Target, percentile

LATENCY_TYPE = "bench.latency"
WARMUP = 10
CONCURRENCY = 50
PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
TARGETS_MS = {"p50": 1.5, "p99": 3.0}


def measure(
    dsn: str, pool: ProducerPool, count: int, rate: float, mode: str, poll_interval_s: float
) -> list[float]:
    """One run: pickup latencies in milliseconds, warm-up dropped.

    mode: "notify" (the worker), "poll" (the worker with --no-listen), or "bare"
    (bench/bare_listener.py: the floor that the worker is measured against).
    """
    env.run_sql(dsn, "bench_truncate_tasks")
    fd, path = tempfile.mkstemp(prefix="bench-pickup-", suffix=".log")
    os.close(fd)
    ready = Path(path + ".ready")
    try:
        if mode == "bare":
            command = [sys.executable, "-m", "bench.bare_listener", dsn]
        else:
            command = workers.worker_command(
                dsn, CONCURRENCY, listen=mode == "notify", poll_interval_s=poll_interval_s
            )
        with workers.running_workers([command], {PICKUP_LOG_ENV: path}) as procs:
            if mode == "bare":
                workers.wait_for_file(ready, procs)
            else:
                workers.wait_until_registered(dsn, procs)
            pool.start_paced(dsn, count + WARMUP, rate, LATENCY_TYPE)
            (committed,) = pool.collect(1)
            workers.wait_until_drained(dsn, procs)
        started = dict(line.split() for line in Path(path).read_text().splitlines())
    finally:
        os.unlink(path)
        ready.unlink(missing_ok=True)
    missing = [task_id for task_id, _ in committed if task_id not in started]
    if missing:
        raise RuntimeError(f"{len(missing)} tasks have no recorded handler start")
    return [(float(started[i]) - t) * 1000 for i, t in committed[WARMUP:]]


def run(ctx: Context, result: ItemResult) -> None:
    sizes = ctx.sizes
    result.title = (
        f"Pickup latency at {sizes.latency_rate:.0f} tasks/s, {sizes.latency_tasks:,} tasks per run"
    )
    modes = ("notify", "bare", "poll")
    figures = {
        (m, name): Figure(f"latency.{m}.{name}", f"{m}: {name}", "ms")
        for m in modes
        for name, _ in PERCENTILES
    }
    result.figures = list(figures.values())
    with env.scratch_database(ctx.admin_dsn, "latency") as dsn, ProducerPool(1) as pool:
        pool.connect(dsn)
        for i in range(ctx.runs):
            for mode in modes:
                ctx.say(f"latency: {mode}, run {i + 1}/{ctx.runs}")
                values = measure(
                    dsn,
                    pool,
                    sizes.latency_tasks,
                    sizes.latency_rate,
                    mode,
                    sizes.poll_interval_s,
                )
                for name, fraction in PERCENTILES:
                    figures[mode, name].runs.append(percentile(values, fraction))
    for name, limit in TARGETS_MS.items():
        fig = figures["notify", name]
        result.targets.append(
            Target(
                f"pickup latency {name} (NOTIFY)", f"<= {limit} ms", fig.text(), fig.median <= limit
            )
        )
    result.notes.append(
        f"worker: listener run --concurrency {CONCURRENCY} "
        f"--poll-interval-s {sizes.poll_interval_s:g}; poll mode adds --no-listen; "
        f"bare: bench/bare_listener.py, a synchronous LISTEN + claim loop with no engine "
        f"(the floor on this machine); first {WARMUP} tasks of each run dropped as warm-up"
    )
