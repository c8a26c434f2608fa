"""Best vs best: each subject at its best setting, each at its default log level.

listener: ``listener run --concurrency N`` for N <= 1000 (INFO logs); PgQueuer:
``batch_size`` 10, 100 and 1000; procrastinate: ``concurrency``; Oban: the queue limit.
Each drain in a fresh database, no ANALYZE after the fill (a burst, as in the
defaults item). A subject's best is its setting with the highest median.
"""

from __future__ import annotations

from bench import subjects
from bench.context import Context, ItemResult
from bench.stats import Figure, Target
from bench.subjects import Subject

PGQUEUER_FACTOR = 2.0


def catalogue(ctx: Context) -> dict[str, list[Subject]]:
    sizes = ctx.sizes
    return {
        "listener": [
            subjects.listener(f"listener_c{c}", f"listener run --concurrency {c}",
                              "--concurrency", str(c))
            for c in sizes.best_concurrency
        ],
        "pgqueuer": [
            Subject(f"pgqueuer_b{b}", f"PgQueuer 1.6, batch_size={b}", "pgqueuer", b)
            for b in sizes.best_pgqueuer_batches
        ],
        "procrastinate": [
            Subject(f"procrastinate_c{c}", f"procrastinate 3.10, concurrency={c}",
                    "procrastinate", c)
            for c in sizes.best_procrastinate
        ],
        "oban": [
            Subject(f"oban_l{n}", f"Oban-py 0.7, queue limit {n}", "oban", n)
            for n in sizes.best_oban_limits
        ],
    }  # fmt: skip


def run(ctx: Context, result: ItemResult) -> None:
    tasks = ctx.sizes.peer_jobs
    result.title = f"Best vs best: {tasks:,} pending no-op tasks, each subject at its best setting"
    figures: dict[str, list[Figure]] = {}
    for kind, options in catalogue(ctx).items():
        why = subjects.unavailable(ctx, options[0])
        if why:
            result.notes.append(why)
            continue
        figures[kind] = [Figure(f"best.{s.key}", s.label, "tasks/s") for s in options]
    for i in range(ctx.runs):
        for kind, options in catalogue(ctx).items():
            for subject, figure in zip(options, figures.get(kind, []), strict=False):
                ctx.say(f"best: {subject.label}, run {i + 1}/{ctx.runs}")
                jobs = subjects.jobs_for(ctx, subject, tasks)
                done = subjects.drain_or_note(ctx, result, subject, jobs, analyze=False)
                if done:
                    figure.runs.append(done.rate)
    bests = {}
    for kind, figs in figures.items():
        measured = [f for f in figs if f.runs]
        if measured:
            top = max(measured, key=lambda f: f.median)
            bests[kind] = Figure(f"best.{kind}", f"best {kind}: {top.label}", "tasks/s", top.runs)
    result.figures = [*bests.values(), *(f for figs in figures.values() for f in figs)]
    _targets(result, bests)
    result.notes.append(
        "rates as in the defaults item (listener and Oban from their tables, PgQueuer and "
        "procrastinate from their handlers' clock); no ANALYZE after the fill"
    )


def _targets(result: ItemResult, bests: dict[str, Figure]) -> None:
    ours = bests.get("listener")
    for kind, best in bests.items():
        if kind == "listener" or ours is None:
            continue
        factor = PGQUEUER_FACTOR if kind == "pgqueuer" else 1.0
        wanted = f">= {factor:g}x {best.label}" if factor > 1 else f"ahead of {best.label}"
        ratio = ours.median / best.median
        result.targets.append(
            Target(
                f"best vs best: listener vs {kind}",
                wanted,
                f"{ours.label.removeprefix('best listener: ')}: {ours.text()} = {ratio:.2f}x",
                ratio >= factor if factor > 1 else ratio > 1.0,
            )
        )
    for kind in ("pgqueuer", "procrastinate", "oban"):
        if kind not in bests:
            result.targets.append(
                Target(f"best vs best: listener vs {kind}", "measured", "not run", None)
            )
