"""`listener retry | cancel | prune | tasks`: operator commands on the queue."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from listener import admin, db
from listener.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, parse_duration
from listener.models import TaskStatus

Handler = Callable[[argparse.Namespace], int]


def parse_task_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a task id (a UUID)") from None


def parse_positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register the four admin subcommands."""
    for name, verb, state, handler in (
        ("retry", "move failed tasks back to pending", "failed", cmd_retry),
        ("cancel", "cancel pending tasks so they never run", "pending", cmd_cancel),
    ):
        p = sub.add_parser(name, parents=[common], help=verb)
        _add_selection(p, state)
        p.add_argument(
            "--dry-run", action="store_true", help="show what would change, change nothing"
        )
        p.set_defaults(handler=handler)

    prune = sub.add_parser(
        "prune", parents=[common], help="delete completed, failed and cancelled tasks"
    )
    prune.add_argument(
        "--older-than", type=parse_duration, required=True, help="finished before this long ago: 7d"
    )
    prune.add_argument(
        "--batch-size",
        type=parse_positive_int,
        default=admin.DEFAULT_PRUNE_BATCH,
        help=f"rows per short transaction (default {admin.DEFAULT_PRUNE_BATCH})",
    )
    prune.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    prune.set_defaults(handler=cmd_prune)
    _add_tasks_parser(sub, common)


def _add_selection(p: argparse.ArgumentParser, state: str) -> None:
    p.add_argument(
        "--id", dest="ids", action="append", type=parse_task_id, default=[], help="a task id"
    )
    p.add_argument(
        "--type", dest="types", action="append", default=[], help=f"every {state} task of a type"
    )
    p.add_argument("--all", action="store_true", help=f"every {state} task")


def _add_tasks_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("tasks", parents=[common], help="list tasks, newest first")
    p.add_argument(
        "--status",
        dest="statuses",
        action="append",
        choices=[s.value for s in TaskStatus],
        help="only this status (repeatable)",
    )
    p.add_argument("--type", dest="types", action="append", help="only this type (repeatable)")
    p.add_argument("--older-than", type=parse_duration, help="created before this long ago: 1h")
    p.add_argument("--newer-than", type=parse_duration, help="created within the last: 10m")
    p.add_argument("--limit", type=parse_positive_int, default=50, help="at most (default 50)")
    p.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    p.add_argument("--payload", action="store_true", help="include payloads (may be personal data)")
    p.set_defaults(handler=cmd_tasks)


def _usage_error(message: str) -> int:
    print(f"listener: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _selection(args: argparse.Namespace) -> admin.Selection:
    return admin.Selection(ids=tuple(args.ids), types=tuple(args.types), all=args.all)


def cmd_retry(args: argparse.Namespace) -> int:
    return _change(args, admin.retry, "retried", "retry", "failed")


def cmd_cancel(args: argparse.Namespace) -> int:
    return _change(args, admin.cancel, "cancelled", "cancel", "pending")


def _change(
    args: argparse.Namespace,
    action: Callable[..., admin.Outcome],
    done: str,
    verb: str,
    state: str,
) -> int:
    try:
        selection = _selection(args)
    except admin.SelectionError as exc:
        return _usage_error(str(exc))
    with db.connect(db.resolve_dsn(args.dsn).dsn, autocommit=True) as conn:
        outcome = action(conn, selection, dry_run=args.dry_run)
    print(_summary(outcome, done, verb, state))
    if outcome.blocked:
        print(
            f"left {_tasks(outcome.blocked)} failed: another unfinished task holds the "
            "same dedupe key (or a newer failed one does, and was retried instead)"
        )
    for task_id, reason in outcome.skipped:
        print(f"not {done}: {task_id} {reason}")
    if outcome.skipped:
        print(
            f"listener: error: {len(outcome.skipped)} of {len(set(args.ids))} named "
            f"tasks could not be {done}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def _summary(outcome: admin.Outcome, done: str, verb: str, state: str) -> str:
    if not outcome.total:
        return f"no {state} tasks match: nothing {done}"
    head = f"would {verb}" if outcome.dry_run else done
    tail = " (dry run: nothing changed)" if outcome.dry_run else ""
    return f"{head} {_tasks(outcome.total, state)}{_of_types(outcome.by_type)}{tail}"


def _tasks(n: int, state: str = "") -> str:
    adjective = f"{state} " if state else ""
    return f"{n} {adjective}task{'' if n == 1 else 's'}"


def _of_types(by_type: dict[str, int]) -> str:
    if len(by_type) == 1:
        return f" of type {next(iter(by_type))}"
    return " (" + ", ".join(f"{t}: {n}" for t, n in sorted(by_type.items())) + ")"


def cmd_prune(args: argparse.Namespace) -> int:
    with db.connect(db.resolve_dsn(args.dsn).dsn, autocommit=True) as conn:
        if args.dry_run:
            outcome = admin.prune_preview(conn, args.older_than)
        else:
            outcome = admin.prune_once(conn, args.older_than, args.batch_size)
    cutoff = outcome.cutoff.astimezone(UTC).isoformat(timespec="seconds")
    if not outcome.total:
        print(f"no tasks finished before {cutoff}: nothing pruned")
        return EXIT_OK
    detail = ", ".join(f"{s}: {n}" for s, n in sorted(outcome.by_status.items()))
    if outcome.dry_run:
        print(f"would prune {_tasks(outcome.total)} finished before {cutoff} ({detail})")
        print("dry run: nothing deleted")
    else:
        batches = f"{outcome.batches} batch{'' if outcome.batches == 1 else 'es'}"
        print(f"pruned {_tasks(outcome.total)} finished before {cutoff} ({detail}) in {batches}")
    return EXIT_OK


def cmd_tasks(args: argparse.Namespace) -> int:
    try:
        task_filter = admin.TaskFilter(
            args.statuses, args.types, args.older_than, args.newer_than, args.limit, args.payload
        )
    except admin.SelectionError as exc:
        return _usage_error(str(exc))
    with db.connect(db.resolve_dsn(args.dsn).dsn, autocommit=True) as conn:
        rows = admin.list_tasks(conn, task_filter)
    if args.json:
        print(json.dumps(rows, default=_json_value, indent=2))
        return EXIT_OK
    for line in _task_lines(rows, args.payload):
        print(line)
    if len(rows) == args.limit:
        print(f"(showing the newest {args.limit}; use --limit to see more)")
    return EXIT_OK


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _task_lines(rows: list[dict[str, Any]], with_payload: bool) -> list[str]:
    if not rows:
        return ["no tasks match"]
    width = max(len(r["type"]) for r in rows)
    now = datetime.now(UTC)
    lines = [f"{'ID':<36}  {'STATUS':<10}  {'TYPE':<{width}}  {'TRIES':>5}  {'AGE':>6}  ERROR"]
    for r in rows:
        tries = f"{r['attempts']}/{r['max_attempts'] or '-'}"
        error = (r["error"] or "").strip().splitlines()[:1]
        lines.append(
            f"{r['id']!s:<36}  {r['status']:<10}  {r['type']:<{width}}  {tries:>5}  "
            f"{_age(now - r['created_at']):>6}  {error[0][:80] if error else ''}".rstrip()
        )
        if with_payload:
            lines.append(f"    payload: {json.dumps(r['payload'], sort_keys=True)}")
    return lines


def _age(delta: Any) -> str:
    seconds = max(delta.total_seconds(), 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"
