"""Worker processes under test: ``listener run`` started as a user would, and watched."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import psutil

from bench import env
from listener.sqlfiles import query

DRAIN_TIMEOUT_S = 900.0
_stderr: dict[int, IO[bytes]] = {}
_stdout: dict[int, IO[bytes]] = {}
STOP_TIMEOUT_S = 30.0


def worker_command(
    dsn: str,
    concurrency: int,
    *,
    claim_batch: int | None = None,
    listen: bool = True,
    poll_interval_s: float = 2.0,
) -> list[str]:
    """``listener run`` with the benchmark's handlers, quiet logs and no metrics port."""
    cmd = [
        sys.executable,
        "-m",
        "listener.cli",
        "run",
        "--dsn",
        dsn,
        "--handlers",
        "bench.noop_handlers",
        "--concurrency",
        str(concurrency),
        "--metrics-port",
        "0",
        "--log-level",
        "warning",
        "--log-format",
        "json",
        "--poll-interval-s",
        str(poll_interval_s),
    ]
    if claim_batch is not None:
        cmd += ["--claim-batch", str(claim_batch)]
    if not listen:
        cmd.append("--no-listen")
    return cmd


def user_command(dsn: str, *flags: str) -> list[str]:
    """``listener run`` as a user starts it: the benchmark's handlers, then only ``flags``.

    Everything else stays at its default (INFO logs, JSON on a non-TTY, the metrics
    endpoint on); the endpoint gets a free port, so workers on a shared machine don't
    collide on 9108.
    """
    return [
        sys.executable,
        "-m",
        "listener.cli",
        "run",
        "--dsn",
        dsn,
        "--handlers",
        "bench.noop_handlers",
        "--metrics-port",
        str(free_port()),
        *flags,
    ]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def output_bytes(proc: subprocess.Popen[bytes]) -> int:
    """How much a process started by running_workers has written so far (stdout + stderr)."""
    return sum(os.fstat(f[proc.pid].fileno()).st_size for f in (_stdout, _stderr))


@contextlib.contextmanager
def running_workers(
    commands: Sequence[list[str]], extra_env: dict[str, str] | None = None
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start the worker processes; stop them with SIGTERM (then SIGKILL) on exit.

    Their stdout (listener's logs) and stderr go to files, as a container's logs
    would: writing them costs what it costs in production, and a pipe nobody reads
    could fill and stall the worker.
    """
    environ = {**os.environ, **(extra_env or {})}
    with contextlib.ExitStack() as stack:
        outs = [stack.enter_context(tempfile.TemporaryFile()) for _ in commands]
        logs = [stack.enter_context(tempfile.TemporaryFile()) for _ in commands]
        procs = [
            subprocess.Popen(cmd, env=environ, stdout=out, stderr=log)
            for cmd, out, log in zip(commands, outs, logs, strict=True)
        ]
        _stderr.update({proc.pid: log for proc, log in zip(procs, logs, strict=True)})
        _stdout.update({proc.pid: out for proc, out in zip(procs, outs, strict=True)})
        try:
            yield procs
        finally:
            _stop(procs)
            for proc in procs:
                _stderr.pop(proc.pid, None)
                _stdout.pop(proc.pid, None)


def _stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM (the worker drains), then SIGKILL after STOP_TIMEOUT_S."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check_alive(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """Raise with the worker's last stderr line if one has exited."""
    for proc in procs:
        if proc.poll() is not None:
            log = _stderr[proc.pid]
            log.seek(0)
            err = log.read().decode(errors="replace")
            tail = (err.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"worker exited with {proc.returncode}: {tail}")


def wait_until_drained(
    dsn: str,
    procs: Sequence[subprocess.Popen[bytes]],
    timeout_s: float = DRAIN_TIMEOUT_S,
    *,
    unfinished: str = "bench_any_unfinished",
    params: dict[str, Any] | None = None,
    interval_s: float = 0.05,
) -> int:
    """Poll until the named query says nothing is left (the workers must stay alive).

    Returns the polls made: each is one transaction in the database, which the
    commit counts (bench/meters.py) leave out. Never prepared, so that a poll is
    exactly one transaction.
    """
    deadline = time.monotonic() + timeout_s
    polls = 0
    with env.connect(dsn, prepare_threshold=None) as conn:
        check = query(unfinished)
        while True:
            polls += 1
            row = conn.execute(check, params).fetchone()
            if not (row and row[0]):
                return polls
            check_alive(procs)
            if time.monotonic() > deadline:
                raise RuntimeError(f"queue not drained within {timeout_s:.0f} s")
            time.sleep(interval_s)


def wait_for_file(
    path: Path, procs: Sequence[subprocess.Popen[bytes]], timeout_s: float = 30.0
) -> None:
    """Wait until a process says it is ready by creating ``path``."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        check_alive(procs)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path.name} not created within {timeout_s:.0f} s")
        time.sleep(0.05)


def rss_mb(proc: subprocess.Popen[Any]) -> float:
    """Resident memory of a worker process, in MiB."""
    return float(psutil.Process(proc.pid).memory_info().rss / 2**20)


def wait_until_registered(
    dsn: str, procs: Sequence[subprocess.Popen[bytes]], expected: int = 1, timeout_s: float = 30.0
) -> None:
    """Wait until the workers have registered, i.e. are listening and claiming."""
    deadline = time.monotonic() + timeout_s
    with env.connect(dsn) as conn:
        while True:
            row = conn.execute(query("bench_live_worker_count")).fetchone()
            if row and row[0] >= expected:
                return
            check_alive(procs)
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not registered within {timeout_s:.0f} s")
            time.sleep(0.05)
