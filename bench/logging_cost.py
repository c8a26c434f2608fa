"""Logging cost: the same drain at the default log level (INFO) and at WARNING.

``listener run --concurrency N`` against ``listener run --concurrency N --log-level
warning``, paired in each run (the order alternates between runs), each drain in a
fresh database with ANALYZE after the fill, so that the claim plan is not what is
measured. The logs go to a file, as a container's do. Cost = 1 - rate(INFO) /
rate(WARNING); also the bytes the default level writes per task.
"""

from __future__ import annotations

from bench import subjects
from bench.context import Context, ItemResult
from bench.stats import Figure, Target

COST_LIMIT_PCT = 10.0


def run(ctx: Context, result: ItemResult) -> None:
    tasks = ctx.sizes.logging_tasks
    result.title = f"Logging cost: {tasks:,} pending no-op tasks, INFO vs WARNING"
    for concurrency in ctx.sizes.logging_concurrency:
        _measure(ctx, result, tasks, concurrency)
    result.notes.append(
        "listener run --concurrency N [--log-level warning]; logs (stdout, JSON) to a file; "
        "ANALYZE after each fill; paired runs, order alternating"
    )


def _measure(ctx: Context, result: ItemResult, tasks: int, concurrency: int) -> None:
    flags = ("--concurrency", str(concurrency))
    info = subjects.listener(f"c{concurrency}_info", f"--concurrency {concurrency}, INFO", *flags)
    quiet = subjects.listener(
        f"c{concurrency}_warning", f"--concurrency {concurrency}, WARNING",
        *flags, "--log-level", "warning",
    )  # fmt: skip
    rates = {s.key: Figure(f"logging.{s.key}", s.label, "tasks/s") for s in (info, quiet)}
    cost = Figure(f"logging.cost_c{concurrency}", f"INFO cost at --concurrency {concurrency}", "%")
    size = Figure(
        f"logging.bytes_c{concurrency}", f"INFO log per task at --concurrency {concurrency}", "B"
    )
    for i in range(ctx.runs):
        pair = (info, quiet) if i % 2 == 0 else (quiet, info)
        rate: dict[str, float] = {}
        for subject in pair:
            ctx.say(f"logging: {subject.label}, run {i + 1}/{ctx.runs}")
            done = subjects.drain(ctx, subject, tasks, analyze=True)
            rate[subject.key] = done.rate
            rates[subject.key].runs.append(done.rate)
            if subject is info and done.log_bytes is not None:
                size.runs.append(done.log_bytes / tasks)
        cost.runs.append(100.0 * (1 - rate[info.key] / rate[quiet.key]))
    result.figures += [*rates.values(), cost, size]
    result.targets.append(
        Target(
            f"INFO logging cost at --concurrency {concurrency}",
            f"< {COST_LIMIT_PCT:.0f}%",
            cost.text(),
            cost.median < COST_LIMIT_PCT,
        )
    )
