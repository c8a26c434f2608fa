"""Defaults vs defaults: every subject as its users start it, draining a burst.

Three states of the table, each drain in a fresh database: "no ANALYZE" (what a burst
meets: this machine's PostgreSQL runs with autovacuum off, so nothing analyzes the
table; in production, a burst filled and drained within autovacuum's naptime),
"ANALYZE" after the fill, and "mid burn-down" (twice the tasks, no ANALYZE, the rate
of the second half: the first half's dead tuples and a plan made before them). Then
the head of a large backlog: listener's first N tasks of a 200,000-task backlog
against a backlog of N, with and without ANALYZE.
"""

from __future__ import annotations

from bench import env, subjects, workers
from bench.context import Context, ItemResult
from bench.stats import Figure, Target
from bench.subjects import Subject
from listener.sqlfiles import query

CONDITIONS = (
    ("fresh", "no ANALYZE"),
    ("analyzed", "ANALYZE after the fill"),
    ("midburn", "mid burn-down (2nd half of twice the tasks, no ANALYZE)"),
)
PEER_FACTOR = 2.0
HEAD_SHARE = 0.80
# A head of 5,000 drains in a quarter of a second, so one pair's share spread 62-119%
# in one probe of 8 pairs: each run measures several pairs, the order alternating.
HEAD_PAIRS_PER_RUN = 3
LISTENER = subjects.listener(
    "listener", "listener run, no flags (--concurrency 10, INFO logs to a file)"
)
SUBJECTS = (
    LISTENER,
    subjects.PGQUEUER_DEFAULT,
    subjects.PROCRASTINATE_DEFAULT,
    subjects.OBAN_DEFAULT,
)


def run(ctx: Context, result: ItemResult) -> None:
    tasks = ctx.sizes.defaults_tasks
    result.title = f"Defaults vs defaults: {tasks:,} pending no-op tasks, each subject as shipped"
    runnable = subjects.runnable(ctx, result, SUBJECTS)
    rates = {
        (s.key, c): Figure(f"defaults.{s.key}.{c}", f"{s.label}; {text}", "tasks/s")
        for c, text in CONDITIONS
        for s in runnable
    }
    ratios = {
        c: Figure(f"defaults.vs_pgqueuer.{c}", f"listener / PgQueuer default; {text}", "x")
        for c, text in CONDITIONS
    }
    result.figures = [*rates.values(), *ratios.values()]
    shares = _head_figures(ctx, result)
    for i in range(ctx.runs):
        for cond, _ in CONDITIONS:
            measured = {}
            for subject in runnable:
                ctx.say(f"defaults: {subject.key}, {cond}, run {i + 1}/{ctx.runs}")
                value = _measure(ctx, result, subject, cond)
                if value is not None:
                    rates[subject.key, cond].runs.append(value)
                    measured[subject.key] = value
            pgq = measured.get(subjects.PGQUEUER_DEFAULT.key)
            if pgq and LISTENER.key in measured:
                ratios[cond].runs.append(measured[LISTENER.key] / pgq)
        _head_run(ctx, result, shares, i)
    _targets(result, ratios, shares)
    result.notes.append(
        "listener and Oban: rate from their tables (completed / (last completion - first "
        "claim)); PgQueuer and procrastinate: from their handlers' clock (first to last job "
        f"start, generous to them); procrastinate drains {ctx.sizes.procrastinate_jobs:,} "
        "(one job per round trip); each drain in a fresh database"
    )


def _measure(ctx: Context, result: ItemResult, subject: Subject, cond: str) -> float | None:
    jobs = subjects.jobs_for(ctx, subject, ctx.sizes.defaults_tasks)
    if cond == "midburn":
        done = subjects.drain_or_note(ctx, result, subject, 2 * jobs, analyze=False)
        return done.half_rate if done else None
    done = subjects.drain_or_note(ctx, result, subject, jobs, analyze=cond == "analyzed")
    return done.rate if done else None


def _head_figures(ctx: Context, result: ItemResult) -> dict[str, tuple[Figure, ...]]:
    head, backlog = ctx.sizes.defaults_head, ctx.sizes.defaults_backlog
    large, small = f"first {head:,} of {backlog:,}", f"a {head:,}-task backlog"
    figures: dict[str, tuple[Figure, ...]] = {}
    for cond, text in CONDITIONS[:2]:
        figures[cond] = (
            Figure(f"defaults.head.{cond}", f"listener, {large}; {text}", "tasks/s"),
            Figure(f"defaults.small.{cond}", f"listener, {small}; {text}", "tasks/s"),
            Figure(f"defaults.head_share.{cond}", f"{large} / {small}; {text}", "%"),
        )
        result.figures += figures[cond]
    return figures


def _head_run(
    ctx: Context, result: ItemResult, shares: dict[str, tuple[Figure, ...]], i: int
) -> None:
    head, backlog = ctx.sizes.defaults_head, ctx.sizes.defaults_backlog
    pairs = 1 if ctx.quick else HEAD_PAIRS_PER_RUN
    for cond, (large, small, share) in shares.items():
        for j in range(pairs):
            ctx.say(
                f"defaults: first {head:,} of {backlog:,} vs {head:,}, {cond}, "
                f"run {i + 1}, pair {j + 1}/{pairs}"
            )
            drains = [(large, backlog), (small, head)]
            if (i * pairs + j) % 2:
                drains.reverse()
            for figure, size in drains:
                figure.runs.append(head_rate(ctx, size, head, analyze=cond == "analyzed"))
            share.runs.append(100 * large.runs[-1] / small.runs[-1])


def head_rate(ctx: Context, backlog: int, head: int, *, analyze: bool) -> float:
    """Tasks/s of a default worker over the first ``head`` tasks of ``backlog``."""
    with env.scratch_database(ctx.admin_dsn, "head") as dsn:
        env.run_sql(dsn, "bench_add_pending", {"type": env.NOOP_TYPE, "n": backlog})
        if analyze:
            env.run_sql(dsn, "bench_analyze_tasks")
        with workers.running_workers([workers.user_command(dsn)]) as procs:
            workers.wait_until_drained(
                dsn, procs, unfinished="bench_fewer_completed_than", params={"n": head},
                interval_s=0.1,
            )  # fmt: skip
        with env.connect(dsn) as conn:
            params = {"type": env.NOOP_TYPE, "n": head}
            row = conn.execute(query("bench_first_completions"), params).fetchone()
    if row is None or not row[0]:
        raise RuntimeError(f"no window for the first {head} completions")
    return head / float(row[0])


def _targets(
    result: ItemResult, ratios: dict[str, Figure], shares: dict[str, tuple[Figure, ...]]
) -> None:
    for cond, text in CONDITIONS:
        fig = ratios[cond]
        result.targets.append(
            Target(
                f"defaults: listener vs PgQueuer's default, {text}",
                f">= {PEER_FACTOR:g}x",
                fig.text() if fig.runs else "not measured (PgQueuer not run)",
                fig.median >= PEER_FACTOR if fig.runs else None,
            )
        )
    for cond, (_, _, share) in shares.items():
        result.targets.append(
            Target(
                f"defaults: head of a large backlog vs a small one, {dict(CONDITIONS)[cond]}",
                f">= {HEAD_SHARE:.0%}",
                share.text(),
                share.median >= 100 * HEAD_SHARE,
            )
        )
