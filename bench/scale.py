"""Item 6, scale: claim latency with 0 and with millions of finished rows; worker memory.

Claim latency is one `listener.claim_tasks(worker, 1)` round trip (autocommit, so it
includes the commit), probed repeatedly until the probe count or a time budget runs out.
Worker memory is the RSS of one `listener run` process after two task counts.
"""

from __future__ import annotations

import statistics
import time

from bench import env, workers
from bench.context import Context, ItemResult
from bench.stats import Figure, Target
from listener.sqlfiles import query

PROBE_BUDGET_S = 10.0
RSS_CONCURRENCY = 200
RSS_CHUNK = 50_000


def claim_latency_ms(dsn: str, probes: int, claim_query: str) -> float:
    """Median milliseconds per single-task claim over up to ``probes`` probes."""
    env.run_sql(dsn, "bench_add_pending", {"type": env.NOOP_TYPE, "n": probes})
    env.run_sql(dsn, "bench_analyze_tasks")
    args = {"worker_id": "bench-probe", "limit": 1}
    timings: list[float] = []
    budget_end = time.monotonic() + PROBE_BUDGET_S
    with env.connect(dsn, prepare_threshold=0) as conn:
        claim = query(claim_query)
        while len(timings) < probes and time.monotonic() < budget_end:
            t0 = time.perf_counter()
            conn.execute(claim, args).fetchall()
            timings.append((time.perf_counter() - t0) * 1000)
    return statistics.median(timings)


def claim_latencies(ctx: Context, result: ItemResult) -> None:
    probes, finished = ctx.sizes.scale_probes, ctx.sizes.scale_finished
    claims = {"shipped": "bench_claim_one"}
    with env.scratch_database(ctx.admin_dsn, "scale") as dsn:
        for rows, label in ((0, "empty table"), (finished, f"{finished:,} finished rows")):
            if rows:
                ctx.say(f"scale: inserting {rows:,} finished rows")
                env.run_sql(dsn, "bench_seed_finished", {"n": rows})
                env.run_sql(dsn, "bench_vacuum_analyze_tasks")
            for claim, name in claims.items():
                fig = Figure(f"scale.claim_{claim}.rows{rows}", f"claim ({claim}), {label}", "ms")
                result.figures.append(fig)
                for i in range(ctx.runs):
                    ctx.say(f"scale: {fig.label}, run {i + 1}/{ctx.runs}")
                    fig.runs.append(claim_latency_ms(dsn, probes, name))
    empty = result.figure("scale.claim_shipped.rows0")
    full = result.figure(f"scale.claim_shipped.rows{finished}")
    if empty is None or full is None:
        raise RuntimeError("claim latency figures missing")
    ratio = full.median / empty.median
    result.targets.append(
        Target(
            f"claim latency with {finished:,} finished rows",
            "<= 2x the empty table",
            f"{ratio:.1f}x",
            ratio <= 2.0,
        )
    )


def worker_memory(ctx: Context, result: ItemResult) -> None:
    first, last = ctx.sizes.rss_tasks
    chunk = min(RSS_CHUNK, first)
    early = Figure("scale.rss_early", f"worker RSS after {first:,} tasks", "MiB")
    late = Figure("scale.rss_late", f"worker RSS after {last:,} tasks", "MiB")
    result.figures += [early, late]
    with env.scratch_database(ctx.admin_dsn, "rss") as dsn:
        env.seed_pending(dsn, chunk)
        with workers.running_workers([workers.worker_command(dsn, RSS_CONCURRENCY)]) as procs:
            done = 0
            while done < last:
                if done:
                    env.seed_pending(dsn, chunk)  # empties the table: memory, not table size
                workers.wait_until_drained(dsn, procs)
                done += chunk
                ctx.say(f"scale: worker has run {done:,} tasks")
                if done == first:
                    early.runs.append(workers.rss_mb(procs[0]))
            late.runs.append(workers.rss_mb(procs[0]))
    growth = 100 * (late.median / early.median - 1)
    result.targets.append(
        Target(
            f"worker memory {first:,} -> {last:,} tasks",
            "within 10%",
            f"{growth:+.1f}%",
            abs(growth) <= 10,
        )
    )


def run(ctx: Context, result: ItemResult) -> None:
    result.title = "Scale: claim latency vs finished rows; worker memory"
    claim_latencies(ctx, result)
    worker_memory(ctx, result)
    result.notes.append(
        f"claim probes stop after {PROBE_BUDGET_S:.0f} s; "
        "worker memory is one run (a level, not a rate)"
    )
