"""The handler registry: ``@handler("type")`` maps a task type to a function."""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from listener.errors import ConfigError
from listener.models import Task

# Matched with fullmatch: a "$" anchor would accept a trailing newline, which the
# database constraint rejects.
TYPE_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")
MAX_TYPE_LENGTH = 128

HandlerFunc = Callable[..., Any] | Callable[..., Awaitable[Any]]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class HandlerOptions:
    """Per-type execution settings; ``None`` means the worker's default."""

    timeout_s: float | None = None
    max_attempts: int | None = None
    backoff_base_s: float | None = None
    backoff_max_s: float | None = None


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
    check_settings: Callable[[], object] | None = None,
    registry: Registry | None = None,
) -> Callable[[F], F]:
    """Register the decorated function as the handler for ``task_type``.

    ``async def f(task)`` runs on the event loop; ``def f(task)`` runs in a worker
    thread. With ``transactional=True`` an async handler is called as
    ``f(task, conn)`` inside the transaction that marks the task completed.
    ``check_settings`` raises ConfigError if the handler's settings are missing.
    """
    try:
        validate_task_type(task_type)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    options = HandlerOptions(timeout_s, max_attempts, backoff_base_s, backoff_max_s)
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


__all__ = ["HandlerOptions", "HandlerSpec", "Registry", "Task", "default_registry", "handler"]
