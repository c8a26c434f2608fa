"""`listener run`: the worker process, with signals, logs and the metrics endpoint."""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import signal
import sys
import time
from typing import Any, NoReturn

import anyio
import psycopg
from prometheus_client import CollectorRegistry

from listener import config, db, logs, migrations
from listener.cli import parse_duration
from listener.errors import ConfigError, DatabaseUnavailableError
from listener.limits import LimitOverride, parse_limit_override
from listener.metrics import Metrics
from listener.registry import Registry, default_registry
from listener.worker import Worker, WorkerSettings

log = logs.get_logger("listener.run")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    run = sub.add_parser("run", parents=[common], help="run a worker until SIGTERM/SIGINT")
    run.add_argument(
        "--handlers", action="append", metavar="MODULE",
        help="importable module that registers handlers (repeatable; default: handlers)",
    )  # fmt: skip
    run.add_argument("--concurrency", type=_positive_int, default=10, help="tasks at once")
    run.add_argument("--types", nargs="+", metavar="T", help="only these task types")
    run.add_argument(
        "--limit", action="append", type=_limit_override, default=[],
        metavar="TYPE=global:N,rate:N/s|m|h",
        help="fleet-wide limits for TYPE, over its handler's (repeatable; KEY:off removes one)",
    )  # fmt: skip
    run.add_argument(
        "--metrics-port", type=int, default=9108,
        help="port for /metrics, /healthz, /readyz (default 9108; 0 disables)",
    )  # fmt: skip
    run.add_argument(
        "--metrics-host", default=os.environ.get("LISTENER_METRICS_HOST") or "127.0.0.1",
        help="bind address (default $LISTENER_METRICS_HOST, else 127.0.0.1: loopback only; "
        "the container image sets 0.0.0.0)",
    )  # fmt: skip
    run.add_argument("--grace-s", type=float, default=30.0, help="drain time on SIGTERM")
    run.add_argument(
        "--lease-s", type=float, default=30.0, help="task lease, renewed while running"
    )
    run.add_argument("--poll-interval-s", type=float, default=2.0, help="fallback poll")
    run.add_argument(
        "--rescue-interval-s", type=float, default=10.0, help="how often to rescue lost tasks"
    )
    run.add_argument(
        "--prune-older-than", type=parse_duration, metavar="DURATION",
        help="also delete finished tasks older than this, e.g. 7d (default: keep them)",
    )  # fmt: skip
    run.add_argument("--claim-batch", type=_positive_int, help="max tasks per claim")
    run.add_argument("--timeout-s", type=float, help="default handler timeout")
    run.add_argument(
        "--max-attempts", type=_attempts, default=5, help="default attempts (1 to 1000)"
    )
    run.add_argument("--no-listen", action="store_true", help="poll only (no LISTEN/NOTIFY)")
    run.add_argument("--log-level", default="info", help="debug, info, warning, error")
    run.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    run.set_defaults(handler=cmd_run)


def _attempts(text: str) -> int:
    value = _positive_int(text)
    if value > config.MAX_ATTEMPTS_LIMIT:
        raise argparse.ArgumentTypeError(
            f"must be at most {config.MAX_ATTEMPTS_LIMIT} (the schema's limit), got {value}"
        )
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _limit_override(text: str) -> LimitOverride:
    try:
        return parse_limit_override(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def apply_limits(registry: Registry, overrides: list[LimitOverride]) -> None:
    """Put each ``--limit`` on its type's spec, over the decorator's values."""
    for override in overrides:
        spec = registry.apply_limits(override)
        log.info(
            "worker.limits_set", type=spec.type,
            global_concurrency=spec.options.global_concurrency,
            rate_limit=None if spec.options.rate_limit is None else str(spec.options.rate_limit),
        )  # fmt: skip


def import_handlers(modules: list[str]) -> None:
    """Import each module so its @handler decorators register."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"cannot import handlers module {name!r}: {exc}") from None


class _StopBeforeStart(Exception):
    """A stop signal arrived while the worker was still starting (e.g. connecting)."""


def _stop_before_start(signum: int, frame: object) -> None:
    raise _StopBeforeStart(signal.Signals(signum).name)


def cmd_run(args: argparse.Namespace) -> int:
    try:
        logs.configure(args.log_level, args.log_format)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    # Until the worker's own signal receiver runs, a stop signal ends start-up at once
    # (an unreachable database can keep a connect waiting), as a requested stop.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop_before_start)
    try:
        worker = _prepare(args)
    except _StopBeforeStart as stop:
        log.info("worker.stopped", before_start=True, signal=str(stop))
        return 0
    _settle_garbage_collector()
    anyio.run(_serve, worker, args.metrics_host, args.metrics_port)
    return 0  # not reached: _serve leaves the process itself


def _prepare(args: argparse.Namespace) -> Worker:
    import_handlers(args.handlers or ["handlers"])
    apply_limits(default_registry, args.limit)
    target = db.resolve_dsn(args.dsn)
    ensure_schema(target)
    settings = WorkerSettings(
        dsn=target.dsn,
        concurrency=args.concurrency,
        types=args.types,
        claim_batch=args.claim_batch,
        lease_s=args.lease_s,
        poll_interval_s=args.poll_interval_s,
        listen=not args.no_listen,
        grace_s=args.grace_s,
        rescue_interval_s=args.rescue_interval_s,
        prune_older_than_s=(
            args.prune_older_than.total_seconds() if args.prune_older_than else None
        ),
        default_timeout_s=args.timeout_s,
        default_max_attempts=args.max_attempts,
    )
    return Worker(settings, default_registry, Metrics(CollectorRegistry()))


def _settle_garbage_collector() -> None:
    """Keep the collector off the start-up objects, which live as long as the process.

    Every full collection otherwise walks the ~200,000 objects that imports leave
    behind: a pause of tens of milliseconds, at random, in the middle of a pickup.
    """
    gc.collect()
    gc.freeze()


# A database that fails over, restarts or cuts sessions while a worker starts: try
# again for a few seconds before giving up (a supervisor then restarts the worker).
START_ATTEMPTS = 5


def ensure_schema(target: config.DatabaseTarget) -> None:
    """Refuse to start on an unmigrated database; the embedded sandbox migrates itself."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return _check_schema(target)
        except (psycopg.OperationalError, DatabaseUnavailableError) as exc:
            if attempt == START_ATTEMPTS:
                if isinstance(exc, DatabaseUnavailableError):
                    raise
                raise db.unavailable(target.dsn, exc) from None
            retry_in_s = 0.2 * 2 ** (attempt - 1)
            log.warning(
                "worker.waiting_for_database", attempt=attempt, retry_in_s=retry_in_s,
                error=str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            )  # fmt: skip
            time.sleep(retry_in_s)


def _check_schema(target: config.DatabaseTarget) -> None:
    with db.connect(target.dsn, autocommit=True) as conn:
        if not migrations.pending(conn):
            return
        if target.source == "embedded":
            for applied in migrations.migrate(conn):
                log.info("schema.migrated", migration=f"{applied.version:04d}_{applied.name}")
            return
    raise ConfigError("the database schema is not up to date: run `listener migrate` first")


async def _serve(worker: Worker, metrics_host: str, metrics_port: int) -> None:
    """Run the worker; leave the process with 0 for a requested stop, 1 for a fault."""
    server = _start_metrics(worker, metrics_host, metrics_port)
    code = 1
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_handle_signals, worker)
            await worker.run()
            if not worker.stop_requested:
                log.error("worker.crashed", error="the worker stopped without being asked to")
            code = 0 if worker.stop_requested else 1
            # Drained, tasks put back, connections closed: leave from here, with the
            # signal receiver still installed. Closing it (the task group's cancel)
            # puts back the default action, and a stop signal in the moment before
            # the exit killed the process (exit -15 after a clean drain).
            _exit_now(code, server)
    except BaseException as exc:  # an engine fault: supervisors must restart us
        log.error("worker.crashed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        code = 1
    finally:
        # The interpreter's own shutdown would wait for any thread still running an
        # abandoned (timed-out) sync handler.
        _exit_now(code, server)


async def _handle_signals(worker: Worker) -> None:
    """First SIGTERM/SIGINT: drain within the grace period. Second: stop now."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        count = 0
        async for signum in signals:
            count += 1
            log.info("worker.signal", signal=signal.Signals(signum).name, count=count)
            worker.request_stop(None if count == 1 else 0.0)


def _exit_now(code: int, server: Any) -> NoReturn:
    # Stop signals from here on change nothing: the process is leaving with ``code``.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    if server is not None:
        with contextlib.suppress(Exception):
            server.close()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _start_metrics(worker: Worker, host: str, port: int) -> Any:
    if port == 0:
        return None
    from listener import http

    registry, dsn = worker.metrics.registry, worker.settings.dsn
    try:
        return http.serve(registry, worker.health, host=host, port=port, queue_dsn=dsn)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
