"""Item 4, pickup latency: commit to handler start, for listener, the floor and the peers.

A separate producer process inserts one task per transaction at a fixed rate and
records each commit's time.time(); the handler records time.time() when it starts
(same machine, same clock). The first tasks of each run are a warm-up and dropped.
Modes, all in the same run: the worker with NOTIFY ("notify"), ``listener run`` with
no flags ("defaults"), polling only ("poll"), the bare LISTEN + claim loop ("bare",
bench/bare_listener.py) and the steps between it and the worker (the same loop on
asyncio, "bare_async"; and with the worker's claim, "bare_async_claim"), PgQueuer at
``batch_size=10`` and Oban at its default limit,
each fed by the same producer with plain-SQL inserts into its own table (their
notifications included), each in a database of its own.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench import env, oban_venv, subjects, workers
from bench.context import Context, ItemResult
from bench.noop_handlers import PICKUP_LOG_ENV
from bench.producers import ProducerPool
from bench.stats import Figure, Target, percentile
from listener.sqlfiles import query

LATENCY_TYPE = "bench.latency"
WARMUP = 10
CONCURRENCY = 50
PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
TARGETS_MS = {"p50": 1.5, "p99": 3.0}
BARE_RATIOS = {"p50": 1.15, "p99": 1.25}
# The steps from the bare loop to the worker, each a bare loop with one thing more.
BARE_STEPS = {
    "bare": [],
    "bare_async": ["--asyncio"],
    "bare_async_claim": ["--asyncio", "--worker-claim"],
}
PEERS = {  # mode: (subject, insert query, job name the producer inserts)
    "pgqueuer": (subjects.PGQUEUER_DEFAULT, "bench_pgqueuer_insert_one", "latency"),
    "oban": (subjects.OBAN_DEFAULT, "bench_oban_insert_one", "bench.oban_workers.Latency"),
}
READY_TIMEOUT_S = 60.0
TRUNCATE = {"pgqueuer": "bench_truncate_pgqueuer", "oban": "bench_truncate_oban"}


def measure(
    dsn: str, pool: ProducerPool, count: int, rate: float, mode: str, poll_interval_s: float
) -> list[float]:
    """One run: pickup latencies in milliseconds, warm-up dropped."""
    env.run_sql(dsn, TRUNCATE.get(mode, "bench_truncate_tasks"))
    fd, path = tempfile.mkstemp(prefix="bench-pickup-", suffix=".log")
    os.close(fd)
    ready = Path(path + ".ready")
    insert, kind = query_for(mode)
    command = _command(dsn, mode, poll_interval_s)
    try:
        with workers.running_workers([command], _env(mode, path)) as procs:
            if mode in BARE_STEPS:
                workers.wait_for_file(ready, procs)
            elif mode in PEERS:
                _wait_for_pickup(dsn, insert, kind, Path(path), procs)
            else:
                workers.wait_until_registered(dsn, procs)
            pool.start_paced(dsn, count + WARMUP, rate, kind, insert)
            (committed,) = pool.collect(1)
            if mode in PEERS:
                _wait_until_logged(Path(path), [i for i, _ in committed], procs)
            else:
                workers.wait_until_drained(dsn, procs)
        started = dict(line.split() for line in Path(path).read_text().splitlines())
    finally:
        os.unlink(path)
        ready.unlink(missing_ok=True)
    missing = [task_id for task_id, _ in committed if task_id not in started]
    if missing:
        raise RuntimeError(f"{len(missing)} tasks have no recorded handler start")
    return [(float(started[i]) - t) * 1000 for i, t in committed[WARMUP:]]


def run_order(modes: list[str], run: int) -> list[str]:
    """notify and bare back to back (their ratio is a target), alternating which goes
    first; the other modes rotate, so that no mode always meets the same moment."""
    pair = ["notify", "bare"] if run % 2 == 0 else ["bare", "notify"]
    rest = [m for m in modes if m not in pair]
    k = run % len(rest) if rest else 0
    return pair + rest[k:] + rest[:k]


def query_for(mode: str) -> tuple[str, str]:
    """(the producer's insert query, the task type or job name it inserts)."""
    if mode in PEERS:
        _, insert, kind = PEERS[mode]
        return insert, kind
    return "bench_insert_one", LATENCY_TYPE


def _command(dsn: str, mode: str, poll_interval_s: float) -> list[str]:
    if mode in BARE_STEPS:
        return [sys.executable, "-m", "bench.bare_listener", dsn, *BARE_STEPS[mode]]
    if mode == "defaults":
        return workers.user_command(dsn)
    if mode == "pgqueuer":
        return [sys.executable, "-m", "bench.peer_subjects", "pgqueuer", "serve", dsn, "10"]
    if mode == "oban":
        return oban_venv.command(dsn, 10)
    return workers.worker_command(
        dsn, CONCURRENCY, listen=mode == "notify", poll_interval_s=poll_interval_s
    )


def _env(mode: str, path: str) -> dict[str, str]:
    return {PICKUP_LOG_ENV: path, **(oban_venv.run_env() if mode == "oban" else {})}


def _wait_for_pickup(
    dsn: str, insert: str, kind: str, log: Path, procs: Sequence[subprocess.Popen[bytes]]
) -> None:
    """A peer is ready once a probe job inserted as the producer will has run."""
    with env.connect(dsn) as conn:
        row = conn.execute(query(insert), {"type": kind}).fetchone()
    _wait_until_logged(log, [str(row[0]) if row else ""], procs)


def _wait_until_logged(log: Path, ids: list[str], procs: Sequence[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    wanted = set(ids)
    while True:
        seen = {line.split(" ", 1)[0] for line in log.read_text().splitlines()}
        if wanted <= seen:
            return
        workers.check_alive(procs)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(wanted - seen)} jobs not started within the deadline")
        time.sleep(0.05)


@contextlib.contextmanager
def _peer_databases(ctx: Context, modes: list[str]) -> Iterator[dict[str, str]]:
    """A database per peer mode, with the peer's schema installed."""
    with contextlib.ExitStack() as stack:
        dsns = {}
        for mode in modes:
            if mode in PEERS:
                dsn = stack.enter_context(env.scratch_database(ctx.admin_dsn, mode, migrate=False))
                subjects.FILL[mode](dsn, 0)
                dsns[mode] = dsn
        yield dsns


def _targets(
    result: ItemResult,
    figures: dict[tuple[str, str], Figure],
    ratios: dict[str, Figure],
    modes: list[str],
) -> None:
    for name, limit in TARGETS_MS.items():
        fig = figures["notify", name]
        result.targets.append(
            Target(
                f"pickup latency {name} (NOTIFY)", f"<= {limit} ms", fig.text(), fig.median <= limit
            )
        )
    for name, limit in BARE_RATIOS.items():
        fig = ratios[name]
        result.targets.append(
            Target(
                f"pickup latency {name}, listener vs the bare loop",
                f"<= {limit:g}x",
                fig.text(),
                fig.median <= limit,
            )
        )
    for peer in PEERS:
        for name in BARE_RATIOS:
            ours = figures["notify", name]
            theirs = figures.get((peer, name))
            result.targets.append(
                Target(
                    f"pickup latency {name}, listener below {peer}",
                    f"< {peer}'s",
                    f"{ours.text()} vs {theirs.text() if theirs else 'not run'}",
                    ours.median < theirs.median if theirs and theirs.runs else None,
                )
            )


def run(ctx: Context, result: ItemResult) -> None:
    sizes = ctx.sizes
    result.title = (
        f"Pickup latency at {sizes.latency_rate:.0f} tasks/s, {sizes.latency_tasks:,} tasks per run"
    )
    modes = ["notify", "defaults", *BARE_STEPS, "poll"]
    for mode, (subject, _, _) in PEERS.items():
        why = subjects.unavailable(ctx, subject)
        if why:
            result.notes.append(why)
        else:
            modes.append(mode)
    figures = {
        (m, name): Figure(f"latency.{m}.{name}", f"{m}: {name}", "ms")
        for m in modes
        for name, _ in PERCENTILES
    }
    ratios = {
        name: Figure(f"latency.notify_vs_bare.{name}", f"notify / bare: {name}", "x")
        for name in BARE_RATIOS
    }
    result.figures = [*figures.values(), *ratios.values()]
    with (
        env.scratch_database(ctx.admin_dsn, "latency") as dsn,
        _peer_databases(ctx, modes) as peer_dsns,
        ProducerPool(1) as pool,
    ):
        dsns = {m: peer_dsns.get(m, dsn) for m in modes}
        for target in set(dsns.values()):
            pool.connect(target)
        for i in range(ctx.runs):
            for mode in run_order(modes, i):
                ctx.say(f"latency: {mode}, run {i + 1}/{ctx.runs}")
                values = measure(
                    dsns[mode], pool, sizes.latency_tasks, sizes.latency_rate, mode,
                    sizes.poll_interval_s,
                )  # fmt: skip
                for name, fraction in PERCENTILES:
                    figures[mode, name].runs.append(percentile(values, fraction))
            for name, ratio in ratios.items():
                ratio.runs.append(figures["notify", name].runs[-1] / figures["bare", name].runs[-1])
    _targets(result, figures, ratios, modes)
    result.notes.append(
        f"notify: listener run --concurrency {CONCURRENCY} --log-level warning "
        f"--poll-interval-s {sizes.poll_interval_s:g}; poll adds --no-listen; defaults: "
        "listener run with no flags (INFO logs); bare: bench/bare_listener.py, a "
        "synchronous LISTEN + claim loop with no engine (the floor on this machine); "
        "bare_async: the same loop on asyncio and async psycopg; bare_async_claim: and "
        "the worker's claim (store.claim, its types, the outlook); "
        "pgqueuer: QueueManager.run(batch_size=10); oban: oban start --queues default:10; "
        f"first {WARMUP} tasks of each run dropped as warm-up; notify and bare run back to "
        "back, the order alternating, the other modes rotating"
    )
