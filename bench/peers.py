"""Peers: PgQueuer and procrastinate draining pending no-op jobs, same server, same run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

from bench import env
from bench.context import Context, ItemResult
from bench.stats import Figure

# (key, label, peer, setting): setting is PgQueuer's batch_size or procrastinate's concurrency.
SUBJECTS = (
    ("pgqueuer_b100", "PgQueuer 1.6 (asyncpg), batch_size=100", "pgqueuer", 100),
    ("pgqueuer_b10", "PgQueuer 1.6 (asyncpg), batch_size=10 (default)", "pgqueuer", 10),
    ("procrastinate_c1", "procrastinate 3.10, concurrency=1 (default)", "procrastinate", 1),
)
REQUIRES = {"pgqueuer": ("pgqueuer", "asyncpg"), "procrastinate": ("procrastinate",)}
TIMEOUT_S = 600


def missing(peer: str) -> list[str]:
    """Modules a peer needs that are not installed (pip install -e '.[bench]')."""
    return [m for m in REQUIRES[peer] if importlib.util.find_spec(m) is None]


def run(ctx: Context, result: ItemResult) -> None:
    sizes = ctx.sizes
    result.title = (
        f"Peers: drain {sizes.peer_jobs:,} pending no-op jobs "
        f"({sizes.procrastinate_jobs:,} for procrastinate)"
    )
    for key, label, peer, setting in SUBJECTS:
        absent = missing(peer)
        if absent:
            result.notes.append(
                f"{label}: NOT RUN, not installed ({', '.join(absent)}); "
                "install with pip install -e '.[bench]'"
            )
            continue
        figure = Figure(f"peers.{key}", label, "jobs/s")
        result.figures.append(figure)
        for i in range(ctx.runs):
            ctx.say(f"peers: {label}, run {i + 1}/{ctx.runs}")
            try:
                figure.runs.append(_drain_once(ctx, peer, setting))
            except RuntimeError as exc:
                result.notes.append(f"{label}: run {i + 1} failed: {exc}")


def _drain_once(ctx: Context, peer: str, setting: int) -> float:
    """One drain in a fresh database and a fresh process; jobs per second."""
    jobs = ctx.sizes.procrastinate_jobs if peer == "procrastinate" else ctx.sizes.peer_jobs
    with env.scratch_database(ctx.admin_dsn, peer, migrate=False) as dsn:
        cmd = [sys.executable, "-m", "bench.peer_subjects", peer, dsn, str(jobs), str(setting)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"did not drain {jobs} jobs within {TIMEOUT_S} s") from None
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"exit {done.returncode}: {tail}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report["done"] != jobs or report["seconds"] <= 0:
        raise RuntimeError(f"ran {report['done']} of {jobs} jobs")
    return float(report["done"] / report["seconds"])
