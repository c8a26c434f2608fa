"""Item 1, the raw limit: the fastest plain-SQL claim+complete loop on this server.

Each loop owns one connection in pipeline mode: completing batch k and claiming batch
k+1 travel together, in one round trip and one transaction (one commit), using the
engine's own claim function and completion query. Several batch sizes and connection
counts are tried; the best one is the reference for the worker.
"""

from __future__ import annotations

import threading

from bench import env
from bench.context import Context, ItemResult
from bench.stats import Figure
from listener.sqlfiles import query

# (label, claim query). The by-primary-key variant measured here earlier now ships
# as migration 0003, so only the shipped function is measured.
CLAIMS = {
    "shipped": ("listener.claim_tasks", "bench_claim_ids"),
}


def claim_complete_loop(
    dsn: str, batch: int, worker_id: str, claim_query: str, stop_after: int | None = None
) -> int:
    """Claim and complete until the queue is empty, or ``stop_after`` tasks are done;
    returns the tasks completed."""
    claim, complete = query(claim_query), query("complete_tasks")

    def claim_args(done: int) -> dict[str, object]:
        limit = batch if stop_after is None else min(batch, stop_after - done)
        return {"worker_id": worker_id, "limit": limit}

    done = 0
    with env.connect(dsn, prepare_threshold=0) as conn, conn.pipeline() as p:
        cur = conn.execute(claim, claim_args(done))
        p.sync()
        ids = [row[0] for row in cur.fetchall()]
        while ids:
            conn.execute(complete, {"ids": ids, "worker_id": worker_id})
            done += len(ids)
            cur = conn.execute(claim, claim_args(done))
            p.sync()
            ids = [row[0] for row in cur.fetchall()]
    return done


def drain(dsn: str, batch: int, connections: int, claim_query: str = "bench_claim_ids") -> float:
    """Run ``connections`` loops at once until the queue is empty; tasks/s from the database."""
    errors: list[BaseException] = []

    def loop(worker_id: str) -> None:
        try:
            claim_complete_loop(dsn, batch, worker_id, claim_query)
        except BaseException as exc:  # reported by the caller, not lost in a thread
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(f"raw-{i}",)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    count, seconds = env.drain_window(dsn)
    return count / seconds if seconds > 0 else float("nan")


def run(ctx: Context, result: ItemResult) -> None:
    sizes = ctx.sizes
    result.title = f"Raw limit: plain-SQL claim+complete of {sizes.raw_tasks:,} tasks"
    with env.scratch_database(ctx.admin_dsn, "raw") as dsn:
        for run_no in range(ctx.runs):
            for claim, (_, claim_query) in CLAIMS.items():
                for connections in sizes.raw_connections:
                    for batch in sizes.raw_batches:
                        figure = _figure(result, claim, batch, connections)
                        ctx.say(f"raw: {figure.label}, run {run_no + 1}/{ctx.runs}")
                        env.seed_pending(dsn, sizes.raw_tasks)
                        figure.runs.append(drain(dsn, batch, connections, claim_query))
    for claim in reversed(CLAIMS):
        mine = [f for f in result.figures if f.key.startswith(f"raw.{claim}.")]
        best = max(mine, key=lambda f: f.median)
        key = "raw.best" if claim == "shipped" else f"raw.best_{claim}"
        result.figures.insert(0, Figure(key, f"best: {best.label}", "tasks/s", list(best.runs)))
    result.notes.append(
        "one transaction per batch: complete(k) + claim(k+1) pipelined; "
        "rate = completed / (max(completed_at) - min(started_at))"
    )


def _figure(result: ItemResult, claim: str, batch: int, connections: int) -> Figure:
    key = f"raw.{claim}.b{batch}_c{connections}"
    found = result.figure(key)
    if found is None:
        plural = "s" if connections > 1 else ""
        label = f"{CLAIMS[claim][0]}, batch {batch}, {connections} connection{plural}"
        found = Figure(key, label, "tasks/s")
        result.figures.append(found)
    return found
