"""structlog, configured once at start-up: JSON lines off a TTY, console on one.

Event names are fixed dotted strings (``task.completed``); values go in fields.
Payloads, email addresses and secrets are never logged.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import uuid
from collections.abc import Iterable, MutableMapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TextIO

import structlog

from listener.redaction import REDACTED, SECRET_KEYS, redact_text

if TYPE_CHECKING:
    from listener.models import Task

LogFormat = Literal["auto", "json", "console"]

# The task a slot is running: every line logged while it runs (the engine's and the
# handler's own) carries its id, type and attempt. One set() per task; the fields
# are only built for lines actually logged.
current_task: contextvars.ContextVar[Task | None] = contextvars.ContextVar(
    "listener_current_task", default=None
)


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if depth > 5:  # deeper structures are never logged on purpose
        return REDACTED
    if isinstance(value, dict):
        return {
            k: REDACTED if SECRET_KEYS.search(str(k)) else _redact_value(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v, depth + 1) for v in value]
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: a last line of defence for what slipped into a field.

    Payload and secret-named fields are dropped to ``[redacted]``; e-mail addresses and
    secrets inside any string (messages, errors, tracebacks) are masked.
    """
    for key, value in event_dict.items():
        if key != "event" and SECRET_KEYS.search(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact_value(value)
    return event_dict


class _CompletionLines:
    """Where ``completed()`` writes pre-rendered lines: set by ``configure`` for JSON output
    at INFO or below (None otherwise: the ordinary logger is used)."""

    stream: TextIO | None = None


_completions = _CompletionLines()


def completed(entries: Iterable[tuple[uuid.UUID, str, int, float]]) -> None:
    """One ``task.completed`` line per finished task: (task id, type, attempt, seconds).

    The one line the worker writes per task, so the hot path: rendered by hand, the
    same fields and JSON as the ordinary logger's line, one write for a whole batch.
    Nothing in it needs redaction (an id, a type the schema restricts to letters,
    digits and ``_ . : -``, numbers).
    """
    stream = _completions.stream
    if stream is None:
        log = structlog.get_logger("listener.acks")  # as configured now, not at import
        for task_id, task_type, attempt, duration_s in entries:
            log.info(
                "task.completed", task_id=str(task_id), type=task_type, attempt=attempt,
                duration_s=round(duration_s, 6),
            )  # fmt: skip
        return
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    tail = f'"event": "task.completed", "level": "info", "timestamp": "{stamp}"}}\n'
    lines = "".join(
        f'{{"task_id": "{task_id}", "type": "{task_type}", "attempt": {attempt}, '
        f'"duration_s": {round(duration_s, 6)!r}, {tail}'
        for task_id, task_type, attempt, duration_s in entries
    )
    if lines:
        stream.write(lines)
        stream.flush()


def configure(level: str = "info", fmt: LogFormat = "auto", stream: TextIO | None = None) -> None:
    """Route structlog, stdlib logging and uncaught exceptions to ``stream`` at ``level``.

    Every line, whoever logs it (psycopg_pool, asyncio, a crash), goes through the
    same redaction and renderer: one format, no secret or address in any of them.
    """
    out = stream or sys.stdout
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r} (use debug, info, warning or error)")
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    context: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_current_task,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    rendering: list[structlog.types.Processor] = [
        structlog.processors.format_exc_info,
        _stringify_uuids,
        redact,
        renderer,
    ]
    structlog.configure(
        processors=[*context, *rendering],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    _route_stdlib_logging(out, max(numeric, logging.WARNING), context, rendering)
    _route_uncaught_exceptions()
    _completions.stream = out if not use_console and numeric <= logging.INFO else None


class _StdlibHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler ``configure`` installs (replaced, not stacked, on a second call)."""


def _route_stdlib_logging(
    out: TextIO,
    level: int,
    context: list[structlog.types.Processor],
    rendering: list[structlog.types.Processor],
) -> None:
    handler = _StdlibHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*context, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def _route_uncaught_exceptions() -> None:
    """A crash's traceback is a log line too: redacted, in the configured format."""
    crash_log = structlog.get_logger("listener.crash")

    def process_crashed(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, tb)
            return
        crash_log.critical("process.crashed", exc_info=(kind, exc, tb))

    def thread_crashed(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or issubclass(args.exc_type, SystemExit):
            return
        thread = args.thread.name if args.thread is not None else None
        crash_log.error(
            "thread.crashed",
            thread=thread,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    sys.excepthook = process_crashed
    threading.excepthook = thread_crashed


def reset() -> None:
    """Undo ``configure``: structlog's defaults, our root handler gone, default hooks back."""
    structlog.reset_defaults()
    _completions.stream = None
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
    sys.excepthook = sys.__excepthook__
    threading.excepthook = threading.__excepthook__


def _add_current_task(
    logger: object, method: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    task = current_task.get()
    if task is not None:
        event_dict.setdefault("task_id", task.id)
        event_dict.setdefault("type", task.type)
        event_dict.setdefault("attempt", task.attempt)
    return event_dict


def _stringify_uuids(
    logger: object, method: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    """Ids are bound as UUID objects (cheap); render them as plain strings."""
    for key, value in event_dict.items():
        if isinstance(value, uuid.UUID):
            event_dict[key] = str(value)
    return event_dict


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
