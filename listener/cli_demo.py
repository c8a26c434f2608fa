"""`listener demo`: see the queue work in 30 seconds, with nothing configured."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import anyio

from listener import config, db, demo, embedded, logs
from listener.cli import EXIT_FAILED, EXIT_OK
from listener.cli_admin import parse_positive_int
from listener.cli_run import ensure_schema
from listener.demo_view import LiveView

SANDBOX_HINTS = (
    "look around: listener tasks --status failed   listener status   listener doctor",
    "then:        listener retry --type demo.poison --dry-run   listener prune --older-than 0s",
)


def parse_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 100_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate between 0 and 100000 per second")
    return value


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `listener demo`."""
    p = sub.add_parser(
        "demo",
        help="run a worker on a stream of demo tasks and watch it live",
        description="Uses the embedded PostgreSQL unless --dsn is given "
        "($DATABASE_URL is ignored, so the demo never writes into your database by accident).",
    )
    p.add_argument("--dsn", help="a migrated database to run the demo in (default: embedded)")
    p.add_argument("--tasks", type=parse_positive_int, default=1000, help="how many (1000)")
    p.add_argument("--rate", type=parse_rate, default=100.0, help="tasks per second (100)")
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    logs.configure("critical", "json", stream=sys.stderr)  # the live view is the output
    if args.dsn:
        target = config.DatabaseTarget(args.dsn, "--dsn")
    else:
        dsn = embedded.start(config.embedded_data_dir())
        target = config.DatabaseTarget(dsn, "embedded")
    ensure_schema(target)  # the embedded sandbox migrates itself
    count, rate = args.tasks, args.rate
    print(f"listener demo: {count} tasks at {rate:g}/s on {_where(target)}")
    print("  mix: fast async handlers, sync handlers in threads, 1 in 8 flaky once, 1 poison\n")
    view = LiveView(sys.stdout, sys.stdout.isatty())
    timeout_s = count / rate + 60
    frame = anyio.run(demo.run_demo, target.dsn, count, rate, view, timeout_s)
    view.finish(frame)
    if frame.finished < count:
        return EXIT_FAILED
    if target.source == "embedded":
        print("\n" + "\n".join(SANDBOX_HINTS))
    return EXIT_OK


def _where(target: config.DatabaseTarget) -> str:
    if target.source == "embedded":
        return f"the embedded PostgreSQL in {config.embedded_data_dir()}"
    return db.describe_target(target.dsn)
