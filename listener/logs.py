"""structlog, configured once at start-up: JSON lines off a TTY, console on one.

Event names are fixed dotted strings (``task.completed``); values go in fields.
Payloads, email addresses and secrets are never logged.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import uuid
from collections.abc import MutableMapping
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


def configure(level: str = "info", fmt: LogFormat = "auto", stream: TextIO | None = None) -> None:
    """Route structlog (and stdlib logging) to ``stream`` at ``level``."""
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
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _add_current_task,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _stringify_uuids,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)


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
