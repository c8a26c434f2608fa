"""Item 3, steady state: 4 plain-SQL producers at full speed while a worker runs.

Producer rate from the producers' own counts; worker rate from the rows completed
inside the same wall-clock window; the backlog (pending + processing) is sampled.
"""

from __future__ import annotations

import time

from bench import env, workers
from bench.context import Context, ItemResult
from bench.producers import ProducerPool
from bench.stats import Figure
from listener.sqlfiles import query

PRODUCERS = 4
CONCURRENCY = 200
SAMPLE_S = 0.25


def measure(dsn: str, pool: ProducerPool, seconds: float) -> tuple[float, float, list[int]]:
    """(producer rows/s, worker tasks/s, backlog samples) for one window."""
    env.run_sql(dsn, "bench_truncate_tasks")
    with workers.running_workers([workers.worker_command(dsn, CONCURRENCY)]) as procs:
        workers.wait_until_registered(dsn, procs)
        start, end = pool.start_inserting(dsn, PRODUCERS, seconds)
        backlog = _sample_backlog(dsn, start, end)
        inserted = sum(pool.collect(PRODUCERS))
        workers.check_alive(procs)
    with env.connect(dsn) as conn:
        row = conn.execute(query("bench_completed_between"), {"start": start, "end": end})
        completed = (row.fetchone() or (0,))[0]
    return inserted / seconds, completed / seconds, backlog


def _sample_backlog(dsn: str, start: float, end: float) -> list[int]:
    samples = []
    with env.connect(dsn) as conn:
        time.sleep(max(0.0, start - time.time()))
        while time.time() < end:
            samples.append(env.unfinished(conn))
            time.sleep(SAMPLE_S)
    return samples


def run(ctx: Context, result: ItemResult) -> None:
    seconds = ctx.sizes.steady_seconds
    result.title = (
        f"Steady state: {PRODUCERS} producers for {seconds:g} s "
        f"+ 1 worker (--concurrency {CONCURRENCY})"
    )
    produced = Figure("steady.producer_rate", "producer rate", "rows/s")
    worked = Figure("steady.worker_rate", "worker rate", "tasks/s")
    final = Figure("steady.backlog_end", "backlog at the end of the window", "tasks")
    peak = Figure("steady.backlog_max", "largest backlog sampled", "tasks")
    result.figures = [produced, worked, final, peak]
    with env.scratch_database(ctx.admin_dsn, "steady") as dsn, ProducerPool(PRODUCERS) as pool:
        pool.connect(dsn)
        for i in range(ctx.runs):
            ctx.say(f"steady state: run {i + 1}/{ctx.runs}")
            p_rate, w_rate, backlog = measure(dsn, pool, seconds)
            produced.runs.append(p_rate)
            worked.runs.append(w_rate)
            final.runs.append(float(backlog[-1] if backlog else 0))
            peak.runs.append(float(max(backlog, default=0)))
    # Bounded: the worker keeps up, so the backlog ends about where it peaks early on.
    bounded = worked.median >= 0.95 * produced.median
    verdict = "yes: the worker keeps up" if bounded else "NO: the worker falls behind"
    result.notes.append(
        f"backlog bounded: {verdict} (bounded = worker rate >= 95% of producer rate)"
    )
