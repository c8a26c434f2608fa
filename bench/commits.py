"""Commits and statements per task, every subject at ``--concurrency 10`` or its equivalent.

Each subject drains a backlog (filled, then ANALYZE, so the claim plan is not what is
measured) in a fresh database. Commits: ``pg_stat_database.xact_commit`` of that
database from before the subject starts to after it exits (its start-up and shutdown
included: a few dozen over the whole drain), the harness's own polls taken off.
Statements: ``pg_stat_statements``, only on a server that preloads it (see
bench/meters.py). The raw loop (one transaction per batch: complete k + claim k+1,
pipelined) is the shape to aim for: 0.1 per task at batches of 10.
"""

from __future__ import annotations

from bench import env, meters, raw, subjects
from bench.context import Context, ItemResult
from bench.stats import Figure, Target
from bench.subjects import Subject

BATCH = 10
COMMITS_LIMIT = 0.12
SUBJECTS = (
    subjects.listener("listener_c10", "listener run --concurrency 10 (the default)"),
    Subject("pgqueuer_b10", "PgQueuer 1.6, batch_size=10 (default)", "pgqueuer", BATCH),
    Subject("procrastinate_c10", "procrastinate 3.10, concurrency=10", "procrastinate", BATCH),
    Subject("oban_l10", "Oban-py 0.7, queue limit 10 (default)", "oban", BATCH),
)


def run(ctx: Context, result: ItemResult) -> None:
    tasks = ctx.sizes.commits_tasks
    result.title = f"Commits and statements per task: {tasks:,} tasks, batches/limits of {BATCH}"
    with_statements = meters.statements_available(ctx.admin_dsn)
    figures: dict[str, tuple[Figure, Figure]] = {}

    def figure_pair(key: str, label: str) -> tuple[Figure, Figure]:
        if key not in figures:
            figures[key] = (
                Figure(f"commits.{key}.commits", f"{label}: commits per task", "/task"),
                Figure(f"commits.{key}.statements", f"{label}: statements per task", "/task"),
            )
        return figures[key]

    runnable = subjects.runnable(ctx, result, SUBJECTS)
    for i in range(ctx.runs):
        ctx.say(f"commits: raw loop, run {i + 1}/{ctx.runs}")
        commits, statements = _raw_counts(ctx, tasks)
        _record(figure_pair("raw_b10", f"raw SQL loop, batch {BATCH}"), commits, statements)
        for subject in runnable:
            ctx.say(f"commits: {subject.label}, run {i + 1}/{ctx.runs}")
            jobs = subjects.jobs_for(ctx, subject, tasks)
            done = subjects.drain_or_note(ctx, result, subject, jobs, analyze=True)
            counts = done.counts if done else None
            if counts is None:
                continue
            per_task = counts.statements / jobs if counts.statements is not None else None
            _record(figure_pair(subject.key, subject.label), counts.commits / jobs, per_task)
            if counts.top:
                result.details[f"statements: {subject.label} (last run)"] = "\n".join(
                    f"{calls / jobs:8.3f} /task {ms / calls:8.3f} ms each  {text}"
                    for text, calls, ms in counts.top
                )
    result.figures = [f for pair in figures.values() for f in pair if f.runs]
    ours = figures.get("listener_c10")
    if ours:
        result.targets.append(
            Target(
                "commits per task, listener at --concurrency 10 under a backlog",
                f"<= {COMMITS_LIMIT:g}",
                ours[0].text(),
                ours[0].median <= COMMITS_LIMIT,
            )
        )
    if not with_statements:
        result.notes.append(
            "statements not measured: this server does not preload pg_stat_statements "
            "(the benchmark never changes server settings; run this item with --dsn on a "
            "server started with shared_preload_libraries=pg_stat_statements)"
        )
    result.notes.append(
        f"commits include each subject's start-up and shutdown; procrastinate drains "
        f"{ctx.sizes.procrastinate_jobs:,} tasks; statements are top-level (BEGIN and COMMIT "
        "counted), not round trips: a pipeline sends several statements in one"
    )


def _record(pair: tuple[Figure, Figure], commits: float, statements: float | None) -> None:
    pair[0].runs.append(commits)
    if statements is not None:
        pair[1].runs.append(statements)


def _raw_counts(ctx: Context, tasks: int) -> tuple[float, float | None]:
    """The raw loop's commits and statements per task (its connection's start included)."""
    with env.scratch_database(ctx.admin_dsn, "commits") as dsn:
        env.run_sql(dsn, "bench_add_pending", {"type": env.NOOP_TYPE, "n": tasks})
        env.run_sql(dsn, "bench_analyze_tasks")
        meter = meters.Meter(ctx.admin_dsn, dsn)
        meter.start()
        done = raw.claim_complete_loop(dsn, BATCH, "bench-raw", "bench_claim_ids")
        counts = meter.stop(0, 0)
    if done != tasks:
        raise RuntimeError(f"raw loop: {done} of {tasks} tasks completed")
    statements = counts.statements / tasks if counts.statements is not None else None
    return counts.commits / tasks, statements
