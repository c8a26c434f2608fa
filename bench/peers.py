"""Peers: PgQueuer and procrastinate draining pending no-op jobs, same server, same run."""

from __future__ import annotations

from bench import subjects
from bench.context import Context, ItemResult
from bench.stats import Figure
from bench.subjects import Subject

# setting: PgQueuer's batch_size or procrastinate's concurrency.
SUBJECTS = (
    Subject("pgqueuer_b100", "PgQueuer 1.6 (asyncpg), batch_size=100", "pgqueuer", 100),
    subjects.PGQUEUER_DEFAULT,
    subjects.PROCRASTINATE_DEFAULT,
)


def run(ctx: Context, result: ItemResult) -> None:
    sizes = ctx.sizes
    result.title = (
        f"Peers: drain {sizes.peer_jobs:,} pending no-op jobs "
        f"({sizes.procrastinate_jobs:,} for procrastinate)"
    )
    for subject in subjects.runnable(ctx, result, SUBJECTS):
        figure = Figure(f"peers.{subject.key}", subject.label, "jobs/s")
        result.figures.append(figure)
        jobs = subjects.jobs_for(ctx, subject, sizes.peer_jobs)
        for i in range(ctx.runs):
            ctx.say(f"peers: {subject.label}, run {i + 1}/{ctx.runs}")
            done = subjects.drain_or_note(ctx, result, subject, jobs, analyze=False)
            if done:
                figure.runs.append(done.rate)
