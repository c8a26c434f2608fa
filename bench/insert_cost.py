"""Item 5: what the statement-level NOTIFY trigger costs single-row producers.

Single-row inserts (one per transaction) from 1, 4 and 16 producer processes, with the
shipped trigger, with it disabled, and with a coalescing variant (a scratch experiment,
see sql/queries/bench.sql). A listener consumes the notifications meanwhile, as a
worker would. Cost = 1 - rate(trigger) / rate(no trigger), paired within each run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from bench import env
from bench.context import Context, ItemResult
from bench.producers import ProducerPool
from bench.stats import Figure, Target
from listener.config import NOTIFY_CHANNEL

VARIANTS = {
    "trigger": "shipped trigger",
    "none": "trigger disabled",
    "coalesced": "coalescing trigger (scratch)",
}
COST_LIMIT_PCT = 10.0


@contextmanager
def draining_listener(dsn: str) -> Iterator[None]:
    """LISTEN on the task channel and discard what arrives, like an idle worker."""
    stop = threading.Event()
    ready = threading.Event()

    def listen() -> None:
        with env.connect(dsn) as conn:
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")  # constant channel name, not input
            ready.set()
            while not stop.is_set():
                for _ in conn.notifies(timeout=0.2, stop_after=1000):
                    pass

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def run(ctx: Context, result: ItemResult) -> None:
    sizes = ctx.sizes
    result.title = "Insert cost of the notify trigger (single-row inserts)"
    rates = {
        (v, p): Figure(f"insert.{v}.p{p}", f"{VARIANTS[v]}, {p} producers", "rows/s")
        for p in sizes.insert_producers
        for v in VARIANTS
    }
    costs = {
        (v, p): Figure(f"insert.cost_{v}.p{p}", f"{VARIANTS[v]} cost, {p} producers", "%")
        for p in sizes.insert_producers
        for v in ("trigger", "coalesced")
    }
    result.figures = [*rates.values(), *costs.values()]
    with (
        env.scratch_database(ctx.admin_dsn, "insert") as shipped,
        env.scratch_database(ctx.admin_dsn, "insertco") as coalesced,
        ProducerPool(max(sizes.insert_producers)) as pool,
        draining_listener(shipped),
        draining_listener(coalesced),
    ):
        env.run_sql(coalesced, "bench_install_coalescing_trigger")
        pool.connect(shipped)
        pool.connect(coalesced)
        for run_no in range(ctx.runs):
            for producers in sizes.insert_producers:
                ctx.say(f"insert cost: {producers} producers, run {run_no + 1}/{ctx.runs}")
                rate = {
                    v: _measure(pool, shipped, coalesced, v, producers, sizes.insert_seconds)
                    for v in VARIANTS
                }
                for v, value in rate.items():
                    rates[v, producers].runs.append(value)
                for v in ("trigger", "coalesced"):
                    costs[v, producers].runs.append(100.0 * (1 - rate[v] / rate["none"]))
    for producers in sizes.insert_producers:
        if producers >= 4:
            cost = costs["trigger", producers]
            result.targets.append(
                Target(
                    f"notify trigger cost at {producers} producers",
                    f"< {COST_LIMIT_PCT:.0f}%",
                    cost.text(),
                    cost.median < COST_LIMIT_PCT,
                )
            )
    result.notes.append("the coalescing trigger is a scratch experiment, not the shipped schema")


def _measure(
    pool: ProducerPool, shipped: str, coalesced: str, variant: str, producers: int, seconds: float
) -> float:
    dsn = coalesced if variant == "coalesced" else shipped
    env.run_sql(dsn, "bench_truncate_tasks")
    if variant == "none":
        env.run_sql(dsn, "bench_disable_notify_trigger")
    try:
        return pool.insert_rate(dsn, producers, seconds)
    finally:
        if variant == "none":
            env.run_sql(dsn, "bench_enable_notify_trigger")
