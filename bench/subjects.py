"""The queues under test, drained the same way: a fresh database, a fill, a run.

Each drain gets a new database, so no run inherits another's statistics, dead tuples
or cached plans. The fill is one statement for listener and Oban (plain SQL) and the
peer's own enqueue API for PgQueuer and procrastinate; ``analyze`` runs ANALYZE on the
subject's table after the fill (this machine's PostgreSQL runs with autovacuum off, so
otherwise nothing ever does). Rates: listener and Oban from their tables (completed /
(last completion - first claim)); PgQueuer and procrastinate from their handlers'
clock (first to last job start, generous to them). ``half_rate`` is the second half
of the drain: a burn-down already under way, with its dead tuples.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bench import env, meters, oban_venv, workers
from bench.context import Context, ItemResult
from bench.meters import Counts
from listener.sqlfiles import query

PEER_TIMEOUT_S = 900
OBAN_NOOP = "bench.oban_workers.Noop"
REQUIRES = {"pgqueuer": ("pgqueuer", "asyncpg"), "procrastinate": ("procrastinate",)}
ANALYZE = {
    "listener": "bench_analyze_tasks",
    "pgqueuer": "bench_analyze_pgqueuer",
    "procrastinate": "bench_analyze_procrastinate",
    "oban": "bench_analyze_oban",
}


@dataclass(frozen=True)
class Subject:
    """One queue at one setting. ``setting``: listener ``--concurrency``, PgQueuer
    ``batch_size``, procrastinate ``concurrency``, Oban's queue limit; None: the default.
    ``flags``: further ``listener run`` flags (listener only)."""

    key: str
    label: str
    kind: str
    setting: int | None = None
    flags: tuple[str, ...] = ()


@dataclass
class Drain:
    done: int
    seconds: float
    half_seconds: float
    log_bytes: int | None = None  # what the subject wrote to stdout + stderr (listener, Oban)
    counts: Counts | None = None

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else float("nan")

    @property
    def half_rate(self) -> float:
        return self.done / 2 / self.half_seconds if self.half_seconds > 0 else float("nan")


@dataclass
class _Run:
    """What a run leaves: the peer's own report, or the log size and the harness's
    transactions (the drain is then read from the table once the meter has stopped)."""

    drain: Drain | None = None
    log_bytes: int | None = None
    polls: int = 0
    connections: int = 0


def listener(key: str, label: str, *flags: str) -> Subject:
    return Subject(key, label, "listener", flags=flags)


PGQUEUER_DEFAULT = Subject(
    "pgqueuer_b10", "PgQueuer 1.6 (asyncpg), batch_size=10 (default)", "pgqueuer", 10
)
PROCRASTINATE_DEFAULT = Subject(
    "procrastinate_c1", "procrastinate 3.10, concurrency=1 (default)", "procrastinate", 1
)
OBAN_DEFAULT = Subject("oban_l10", "Oban-py 0.7, oban start, queue limit 10 (default)", "oban", 10)


def jobs_for(ctx: Context, subject: Subject, jobs: int) -> int:
    """procrastinate runs one job per round trip: it gets fewer jobs, at the same rate."""
    return min(jobs, ctx.sizes.procrastinate_jobs) if subject.kind == "procrastinate" else jobs


def unavailable(ctx: Context, subject: Subject) -> str | None:
    """Why this subject cannot run here, or None."""
    if subject.kind == "oban":
        reason = oban_venv.unavailable(not ctx.quick, ctx.say)
        return f"Oban for Python not run: {reason}" if reason else None
    absent = [m for m in REQUIRES.get(subject.kind, ()) if importlib.util.find_spec(m) is None]
    if absent:
        return (
            f"{subject.label}: NOT RUN, not installed ({', '.join(absent)}); "
            "install with pip install -e '.[bench]'"
        )
    return None


def drain(ctx: Context, subject: Subject, jobs: int, *, analyze: bool) -> Drain:
    """Fill a fresh database with ``jobs`` no-op jobs, drain them, count what it took."""
    migrate = subject.kind == "listener"
    with env.scratch_database(ctx.admin_dsn, subject.kind, migrate=migrate) as dsn:
        FILL[subject.kind](dsn, jobs)
        if analyze:
            env.run_sql(dsn, ANALYZE[subject.kind])
        meter = meters.Meter(ctx.admin_dsn, dsn)
        meter.start()
        run = RUN[subject.kind](dsn, subject, jobs)
        counts = meter.stop(run.polls, run.connections)
        result = run.drain or _read_halves(dsn, subject.kind, run.log_bytes)
    result.counts = counts
    if result.done != jobs:
        raise RuntimeError(f"{subject.label}: {result.done} of {jobs} jobs done")
    return result


def drain_or_note(
    ctx: Context, result: ItemResult, subject: Subject, jobs: int, *, analyze: bool
) -> Drain | None:
    """drain(), with a peer's failure noted in the item instead of failing it."""
    try:
        return drain(ctx, subject, jobs, analyze=analyze)
    except RuntimeError as exc:
        if subject.kind == "listener":
            raise
        result.notes.append(f"{subject.label}: a run failed: {exc}")
        return None


def runnable(ctx: Context, result: ItemResult, candidates: Iterable[Subject]) -> list[Subject]:
    """The subjects that can run here; why the others cannot goes in the item's notes."""
    found = []
    for subject in candidates:
        why = unavailable(ctx, subject)
        if why:
            result.notes.append(why)
        else:
            found.append(subject)
    return found


def _fill_listener(dsn: str, jobs: int) -> None:
    env.run_sql(dsn, "bench_add_pending", {"type": env.NOOP_TYPE, "n": jobs})


def _fill_peer(peer: str) -> Callable[[str, int], None]:
    def fill(dsn: str, jobs: int) -> None:
        _peer_process(peer, "fill", dsn, jobs)

    return fill


def _fill_oban(dsn: str, jobs: int) -> None:
    done = subprocess.run(
        [str(oban_venv.oban_cli()), "install", "--dsn", dsn],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"oban install failed: {_tail(done.stderr)}")
    env.run_sql(dsn, "bench_oban_fill", {"worker": OBAN_NOOP, "n": jobs})


def _run_listener(dsn: str, subject: Subject, jobs: int) -> _Run:
    with workers.running_workers([workers.user_command(dsn, *subject.flags)]) as procs:
        polls = workers.wait_until_drained(dsn, procs)
        return _Run(None, workers.output_bytes(procs[0]), polls, 1)


def _run_peer(dsn: str, subject: Subject, jobs: int) -> _Run:
    out = _peer_process(subject.kind, "drain", dsn, jobs, subject.setting or 1)
    report = json.loads(out.strip().splitlines()[-1])
    return _Run(Drain(int(report["done"]), report["seconds"], report["half_seconds"]))


def _run_oban(dsn: str, subject: Subject, jobs: int) -> _Run:
    with workers.running_workers(
        [oban_venv.command(dsn, subject.setting or 10)], oban_venv.run_env()
    ) as procs:
        polls = workers.wait_until_drained(dsn, procs, unfinished="bench_oban_any_unfinished")
        return _Run(None, workers.output_bytes(procs[0]), polls, 1)


def _read_halves(dsn: str, kind: str, log_bytes: int | None) -> Drain:
    """The drain as its table recorded it (listener, Oban)."""
    name = "bench_oban_drain_halves" if kind == "oban" else "bench_drain_halves"
    with env.connect(dsn) as conn:
        row = conn.execute(query(name), {"type": env.NOOP_TYPE}).fetchone()
    if row is None:
        raise RuntimeError("no drain window")
    return Drain(int(row[0]), float(row[1] or 0.0), float(row[2] or 0.0), log_bytes)


def _peer_process(peer: str, action: str, dsn: str, *numbers: int) -> str:
    cmd = [sys.executable, "-m", "bench.peer_subjects", peer, action, dsn, *map(str, numbers)]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=PEER_TIMEOUT_S, env=dict(os.environ)
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{peer} {action} did not finish within {PEER_TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise RuntimeError(f"{peer} {action}: exit {done.returncode}: {_tail(done.stderr)}")
    return done.stdout


def _tail(text: str) -> str:
    return (text.strip().splitlines() or ["no output"])[-1]


FILL: dict[str, Callable[[str, int], None]] = {
    "listener": _fill_listener,
    "pgqueuer": _fill_peer("pgqueuer"),
    "procrastinate": _fill_peer("procrastinate"),
    "oban": _fill_oban,
}
RUN: dict[str, Callable[[str, Subject, int], _Run]] = {
    "listener": _run_listener,
    "pgqueuer": _run_peer,
    "procrastinate": _run_peer,
    "oban": _run_oban,
}
