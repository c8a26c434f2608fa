"""The handler registry: ``@handler("type")`` maps a task type to a function."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from listener.errors import ConfigError
from listener.limits import LimitOverride, RateLimit, parse_global_concurrency, parse_rate_limit
from listener.models import Task
from listener.schedules import Schedule, parse_schedule

# Matched with fullmatch: a "$" anchor would accept a trailing newline, which the
# database constraint rejects.
TYPE_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")
MAX_TYPE_LENGTH = 128

HandlerFunc = Callable[..., Any] | Callable[..., Awaitable[Any]]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class HandlerOptions:
    """Per-type execution settings; ``None`` means the worker's default (or no limit).

    ``global_concurrency`` and ``rate_limit`` hold across every worker on the
    database; ``schedule`` makes the fleet enqueue one task per instant.
    """

    timeout_s: float | None = None
    max_attempts: int | None = None
    backoff_base_s: float | None = None
    backoff_max_s: float | None = None
    global_concurrency: int | None = None  # at most N processing with a live lease
    rate_limit: RateLimit | None = None  # at most count starts per window_s
    schedule: Schedule | None = None  # cron= or every=


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A registered handler and how to run it."""

    type: str
    func: HandlerFunc
    is_async: bool
    transactional: bool
    options: HandlerOptions
    # Raises ConfigError when the handler's settings are missing; `listener run`
    # calls it once at start-up to warn (tasks still wait, unharmed, for the fix).
    check_settings: Callable[[], object] | None = None


class Registry:
    """Task type -> handler. A module registers by being imported."""

    def __init__(self) -> None:
        self._specs: dict[str, HandlerSpec] = {}

    def register(self, spec: HandlerSpec) -> None:
        existing = self._specs.get(spec.type)
        if existing is not None and existing.func is not spec.func:
            raise ConfigError(
                f"two handlers for task type {spec.type!r}: "
                f"{_qualname(existing.func)} and {_qualname(spec.func)}"
            )
        self._specs[spec.type] = spec

    def get(self, task_type: str) -> HandlerSpec | None:
        return self._specs.get(task_type)

    def apply_limits(self, override: LimitOverride) -> HandlerSpec:
        """Replace a registered type's limits (``--limit``); keys not given are kept."""
        spec = self._specs.get(override.type)
        if spec is None:
            known = ", ".join(self.types()) or "none"
            raise ConfigError(
                f"--limit {override.type}: no handler registered for that type (known: {known})"
            )
        options = spec.options
        global_concurrency = options.global_concurrency
        if override.clear_global or override.global_concurrency is not None:
            global_concurrency = override.global_concurrency
        rate_limit = options.rate_limit
        if override.clear_rate or override.rate_limit is not None:
            rate_limit = override.rate_limit
        updated = dataclasses.replace(
            spec,
            options=dataclasses.replace(
                options, global_concurrency=global_concurrency, rate_limit=rate_limit
            ),
        )
        self._specs[spec.type] = updated
        return updated

    def types(self) -> list[str]:
        return sorted(self._specs)

    def clear(self) -> None:
        self._specs.clear()

    def __len__(self) -> int:
        return len(self._specs)


default_registry = Registry()


def validate_task_type(task_type: object) -> str:
    """Return ``task_type`` if it is a valid type name, else raise ValueError naming why."""
    if not isinstance(task_type, str):
        raise ValueError(f"task type must be a string, got {type(task_type).__name__}")
    if not task_type:
        raise ValueError("task type must not be empty")
    if len(task_type) > MAX_TYPE_LENGTH:
        raise ValueError(f"task type is longer than {MAX_TYPE_LENGTH} characters")
    if not TYPE_PATTERN.fullmatch(task_type):
        raise ValueError(
            f"task type {task_type!r} has characters outside letters, digits and _ . : -"
        )
    return task_type


def handler(
    task_type: str,
    *,
    timeout_s: float | None = None,
    max_attempts: int | None = None,
    backoff_base_s: float | None = None,
    backoff_max_s: float | None = None,
    transactional: bool = False,
    global_concurrency: int | None = None,
    rate_limit: str | RateLimit | None = None,
    cron: str | None = None,
    cron_tz: str | None = None,
    every: str | None = None,
    check_settings: Callable[[], object] | None = None,
    registry: Registry | None = None,
) -> Callable[[F], F]:
    """Register the decorated function as the handler for ``task_type``.

    ``async def f(task)`` runs on the event loop; ``def f(task)`` runs in a worker
    thread. With ``transactional=True`` an async handler is called as
    ``f(task, conn)`` inside the transaction that marks the task completed.
    ``global_concurrency=N`` and ``rate_limit="30/m"`` limit the type across all
    workers; ``cron="0 8 * * *"`` (UTC, or ``cron_tz=``) or ``every="15s"`` enqueue
    one task per scheduled instant, fleet-wide. ``check_settings`` raises ConfigError
    if the handler's settings are missing (``listener run`` warns at start-up).
    """
    try:
        validate_task_type(task_type)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    try:
        options = HandlerOptions(
            timeout_s, max_attempts, backoff_base_s, backoff_max_s,
            global_concurrency=(
                None if global_concurrency is None
                else parse_global_concurrency(global_concurrency)
            ),
            rate_limit=None if rate_limit is None else parse_rate_limit(rate_limit),
            schedule=parse_schedule(cron, every, cron_tz),
        )  # fmt: skip
    except ValueError as exc:
        raise ConfigError(f"handler for {task_type!r}: {exc}") from None
    _check_options(task_type, options)

    def decorate(func: F) -> F:
        is_async = inspect.iscoroutinefunction(func)
        if transactional and not is_async:
            raise ConfigError(
                f"handler for {task_type!r}: transactional handlers must be async functions"
            )
        spec = HandlerSpec(task_type, func, is_async, transactional, options, check_settings)
        # Not `registry or default_registry`: an empty Registry is falsy (__len__).
        (default_registry if registry is None else registry).register(spec)
        return func

    return decorate


def _check_options(task_type: str, options: HandlerOptions) -> None:
    for name in ("timeout_s", "backoff_base_s", "backoff_max_s"):
        value = getattr(options, name)
        if value is not None and not value > 0:
            raise ConfigError(f"handler for {task_type!r}: {name} must be > 0, got {value!r}")
    if options.max_attempts is not None and not 1 <= options.max_attempts <= 1000:
        raise ConfigError(f"handler for {task_type!r}: max_attempts must be between 1 and 1000")


def _qualname(func: HandlerFunc) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


__all__ = [
    "HandlerOptions",
    "HandlerSpec",
    "RateLimit",
    "Registry",
    "Schedule",
    "Task",
    "default_registry",
    "handler",
]
