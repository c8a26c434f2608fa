"""Item 2, burn-down: pending no-op tasks drained by `listener run` processes.

Throughput comes from the database: completed tasks / (max(completed_at) -
min(started_at)), so process start-up and shutdown are not counted.
"""

from __future__ import annotations

from bench import env, workers
from bench.context import Context, ItemResult
from bench.stats import Figure


def drain_once(dsn: str, tasks: int, processes: int, concurrency: int) -> float:
    """Seed ``tasks``, run the workers until the queue is empty; tasks per second."""
    env.seed_pending(dsn, tasks)
    commands = [workers.worker_command(dsn, concurrency) for _ in range(processes)]
    with workers.running_workers(commands) as procs:
        workers.wait_until_drained(dsn, procs)
    count, seconds = env.drain_window(dsn)
    if count != tasks:
        raise RuntimeError(f"{count} of {tasks} tasks completed")
    return count / seconds


def run(ctx: Context, result: ItemResult) -> None:
    sizes = ctx.sizes
    result.title = f"Burn-down: {sizes.burndown_tasks:,} pending no-op tasks"
    with env.scratch_database(ctx.admin_dsn, "burndown") as dsn:
        for concurrency in sizes.burndown_concurrency:
            figure = Figure(
                f"burndown.p1_c{concurrency}", f"1 process, --concurrency {concurrency}", "tasks/s"
            )
            result.figures.append(figure)
            for i in range(ctx.runs):
                ctx.say(f"burn-down: {figure.label}, run {i + 1}/{ctx.runs}")
                figure.runs.append(drain_once(dsn, sizes.burndown_tasks, 1, concurrency))
        best = max(result.figures, key=lambda f: f.median)
        best_concurrency = int(best.key.rsplit("_c", 1)[1])
        label = f"best single process ({best.label})"
        result.figures.insert(0, Figure("burndown.p1_best", label, "tasks/s", list(best.runs)))
        two = Figure(
            "burndown.p2", f"2 processes, --concurrency {best_concurrency} each", "tasks/s"
        )
        result.figures.append(two)
        for i in range(ctx.runs):
            ctx.say(f"burn-down: {two.label}, run {i + 1}/{ctx.runs}")
            two.runs.append(drain_once(dsn, sizes.burndown_tasks, 2, best_concurrency))
    result.notes.append(
        "workers: listener run --log-level warning --metrics-port 0; "
        "--claim-batch defaults to the concurrency"
    )
