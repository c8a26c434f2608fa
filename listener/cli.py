"""The `listener` command: one subcommand per job, one clear line per error."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from listener import __version__, db, migrations, producer, verify
from listener.errors import ConfigError, DatabaseUnavailableError, InvalidTaskError
from listener.redaction import redact_text
from listener.store import enqueue
from listener.store import status as queue_status
from listener.store.schedules import LimitStatus, ScheduleStatus

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_DURATION = re.compile(r"^\+?(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """'30s', '5m', '2h', '7d', '250ms' -> timedelta."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30s, 5m, 2h or 7d")
    return timedelta(seconds=float(match[1]) * _UNIT_S[match[2]])


def parse_run_at(text: str) -> datetime | timedelta:
    """An ISO-8601 time with a zone, or a delay such as '10m'."""
    if _DURATION.match(text.strip()):
        return parse_duration(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--run-at {text!r} is neither an ISO time (2030-01-01T09:00:00+00:00) "
            "nor a delay (10m)"
        ) from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"--run-at {text!r} needs a time zone, e.g. +00:00")
    return when


def parse_payload(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--payload is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"--payload must be a JSON object, got {type(value).__name__}"
        )
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, like every other error
        self.exit(EXIT_USAGE, f"listener: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="listener", description=__doc__)
    parser.add_argument("--version", action="version", version=f"listener {__version__}")
    common = _Parser(add_help=False)
    common.add_argument(
        "--dsn", help="PostgreSQL connection string (default: $DATABASE_URL, else embedded)"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("migrate", parents=[common], help="apply pending schema migrations")
    sub.add_parser("schema", help="print the whole schema as one re-runnable SQL script")
    sub.add_parser("verify", parents=[common], help="check the schema, trigger and security")

    enqueue = sub.add_parser("enqueue", parents=[common], help="add one task")
    enqueue.add_argument("type", help="task type, e.g. send_email")
    enqueue.add_argument("--payload", type=parse_payload, default={}, help="JSON object")
    enqueue.add_argument("--run-at", type=parse_run_at, help="ISO time with zone, or a delay: 10m")
    enqueue.add_argument("--priority", type=int, default=0, help="higher runs first (default 0)")
    enqueue.add_argument("--max-attempts", type=int, help="attempts before the task fails")
    enqueue.add_argument("--dedupe-key", help="at most one unfinished task per key")

    status = sub.add_parser("status", parents=[common], help="queue counts and live workers")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    _add_engine_commands(sub, common)
    return parser


def _add_engine_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Subcommands that live in other modules register here (the worker, admin)."""
    from listener import cli_admin, cli_demo, cli_doctor, cli_run, cli_ui

    cli_run.add_parser(sub, common)
    cli_admin.add_parser(sub, common)
    cli_doctor.add_parser(sub, common)
    cli_demo.add_parser(sub, common)
    cli_ui.add_parser(sub, common)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = COMMANDS.get(args.command) or args.handler
    try:
        return command(args)
    except (DatabaseUnavailableError, ConfigError, InvalidTaskError) as exc:
        return _fail(str(exc))
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
        return _fail(f"database error: {_first_line(exc)}: run `listener migrate` first")
    except psycopg.Error as exc:
        return _fail(f"database error: {_first_line(exc)}")
    except KeyboardInterrupt:
        return 130


def _fail(message: str) -> int:
    # The last line of defence: whatever the message quotes, no password is printed.
    print(f"listener: error: {redact_text(message)}", file=sys.stderr)
    return EXIT_FAILED


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _connect(args: argparse.Namespace, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    return db.connect(db.resolve_dsn(args.dsn).dsn, autocommit=autocommit)


def cmd_migrate(args: argparse.Namespace) -> int:
    with _connect(args) as conn:
        applied = migrations.migrate(conn)
    if applied:
        for m in applied:
            print(f"applied {m.version:04d}_{m.name}")
    else:
        print("schema is up to date")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(migrations.schema_script())
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    with _connect(args) as conn:
        checks = verify.run_checks(conn)
    for check in checks:
        print(check.line())
    return EXIT_OK if all(c.ok for c in checks) else EXIT_FAILED


def cmd_enqueue(args: argparse.Namespace) -> int:
    task = producer.new_task(
        args.type,
        args.payload,
        run_at=args.run_at,
        priority=args.priority,
        max_attempts=args.max_attempts,
        dedupe_key=args.dedupe_key,
    )
    with _connect(args) as conn:
        (task_id,) = enqueue.insert_tasks(conn, [task])
    print(task_id)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with _connect(args) as conn:
        status = queue_status.queue_status(conn)
    if args.json:
        print(json.dumps(_status_json(status), default=str, indent=2))
        return EXIT_OK
    print(_status_text(status))
    return EXIT_OK


def _status_json(status: queue_status.QueueStatus) -> dict[str, Any]:
    return {
        "counts": [{"status": s, "type": t, "count": c} for s, t, c in status.counts],
        "oldest_pending_age_s": status.oldest_pending_age_s,
        "unhandled_pending": [{"type": t, "count": c} for t, c in status.unhandled_pending],
        "workers": status.workers,
        "limits": [_limit_json(limit) for limit in status.limits],
        "schedules": [_schedule_json(s) for s in status.schedules],
    }


def _schedule_json(s: ScheduleStatus) -> dict[str, Any]:
    return s.as_json()


def _limit_json(limit: LimitStatus) -> dict[str, Any]:
    return limit.as_json()


def _status_text(status: queue_status.QueueStatus) -> str:
    window_min = queue_status.FINISHED_WINDOW_S // 60
    lines = [f"tasks (pending and processing: all; finished: last {window_min} min)"]
    if not status.counts:
        lines.append("  (none)")
    width = max((len(t) for _, t, _ in status.counts), default=4)
    for state, task_type, count in status.counts:
        lines.append(f"  {state:<10} {task_type:<{width}} {count:>9}")
    age = status.oldest_pending_age_s
    lines.append(f"oldest due pending task: {'none' if age is None else f'{age:.1f}s old'}")
    lines.append(f"live workers: {len(status.workers)}")
    for w in status.workers:
        types = ", ".join(w["types"]) or "(none)"
        lines.append(f"  {w['id']} on {w['hostname']} pid {w['pid']}: {types}")
    if status.unhandled_pending:
        lines.append("pending types no live worker handles:")
        lines.extend(f"  {t}: {c}" for t, c in status.unhandled_pending)
    lines.extend(_limits_text(status.limits))
    lines.extend(_schedules_text(status.schedules))
    return "\n".join(lines)


def _limits_text(limits: list[LimitStatus]) -> list[str]:
    if not limits:
        return []
    lines = ["limits (fleet-wide, as live workers run them):"]
    width = max(len(limit.type) for limit in limits)
    for limit in limits:
        j = _limit_json(limit)
        running = f"running {limit.running}/{limit.global_concurrency or 'unlimited'}"
        if limit.global_concurrency_varies:
            running += " (workers disagree: the strictest shown)"
        rate = "rate unlimited"
        if j["rate_limit"] is not None:
            per = {1: "second", 60: "minute", 3600: "hour"}[j["rate_limit_window_s"]]
            rate = f"rate {limit.started_in_window}/{j['rate_limit_count']} per {per}"
            if j["rate_limit_varies"]:
                rate += " (workers disagree: the strictest shown)"
        lines.append(f"  {limit.type:<{width}}  {running}  {rate}")
    return lines


def _schedules_text(schedules: list[ScheduleStatus]) -> list[str]:
    if not schedules:
        return []
    lines = ["schedules:"]
    width = max(len(s.type) for s in schedules)
    spec_width = max(len(s.schedule) for s in schedules)
    for s in schedules:
        last = "never" if s.last_run is None else _utc(s.last_run)
        upcoming = _utc(s.next_run) if s.next_run else "none: no live worker runs it"
        lines.append(
            f"  {s.type:<{width}}  {s.schedule:<{spec_width}}  last {last}  next {upcoming}"
        )
    return lines


def _utc(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "migrate": cmd_migrate,
    "schema": cmd_schema,
    "verify": cmd_verify,
    "enqueue": cmd_enqueue,
    "status": cmd_status,
}


if __name__ == "__main__":
    sys.exit(main())
