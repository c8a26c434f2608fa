"""Keep the worker's service loops alive: whatever a loop raises, log it, count it, back off.

Every long-lived loop (claims, acknowledgements, heartbeat, rescuer, notifier,
retention) runs under ``supervised``. A database error of any class -- a failover's
read-only transactions, an idle-session timeout, a constraint a new migration added
-- or a bug in the loop is a reason to wait and try again, never to take the worker
down. Cancellation (shutdown) always propagates.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import psycopg
from anyio.abc import TaskStatus

from listener.errors import DatabaseUnavailableError
from listener.logs import get_logger
from listener.metrics import Metrics

log = get_logger("listener.supervise")

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 10.0
# A loop that ran this long since its last failure starts over with a short backoff.
HEALTHY_AFTER_S = 60.0


class Failures:
    """What the loops report: counted per loop and error class; the last database error."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.last_database_error: float = float("-inf")  # time.monotonic()

    def report(self, loop: str, exc: BaseException, *, retry_in_s: float | None = None) -> None:
        """Log and count one failure of ``loop``; remember when the database last failed."""
        if is_database_error(exc):
            self.last_database_error = time.monotonic()
        self.metrics.loop_failed(loop, type(exc).__name__)
        fields: dict[str, Any] = {"loop": loop, "error": one_line(exc)}
        if retry_in_s is not None:
            fields["retry_in_s"] = round(retry_in_s, 3)
        if is_database_error(exc):
            log.warning("loop.database_error", **fields)
        else:  # a bug of ours: keep the traceback
            log.error("loop.failed", exc_info=exc, **fields)

    def database_quiet_for(self) -> float:
        """Seconds since any loop last saw a database error."""
        return time.monotonic() - self.last_database_error


async def supervised(
    loop: str,
    run: Callable[..., Awaitable[None]],
    failures: Failures,
    *,
    task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED,
    backoff: Callable[[int], float] | None = None,
) -> None:
    """Run ``run()`` until it returns; restart it after a backoff whenever it raises.

    With ``task_status`` (``tg.start``), ``run`` is called with a status object whose
    ``started()`` reaches the caller once, whichever restart calls it first.
    """
    status = _StartedOnce(task_status)
    attempt = 0
    while True:
        began = time.monotonic()
        try:
            if task_status is anyio.TASK_STATUS_IGNORED:
                await run()
            else:
                await run(task_status=status)
            return
        except Exception as exc:
            attempt = 1 if time.monotonic() - began > HEALTHY_AFTER_S else attempt + 1
            delay_s = (backoff or backoff_s)(attempt)
            failures.report(loop, exc, retry_in_s=delay_s)
            await anyio.sleep(delay_s)


def backoff_s(attempt: int) -> float:
    """Exponential from 0.1 s, capped at 10 s, jittered down by up to half."""
    ceiling = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2.0 ** max(attempt - 1, 0))
    return ceiling * random.uniform(0.5, 1.0)


def is_database_error(exc: BaseException) -> bool:
    return isinstance(exc, psycopg.Error | DatabaseUnavailableError | TimeoutError) or (
        type(exc).__module__.startswith("psycopg_pool")
    )


def is_connection_error(exc: BaseException) -> bool:
    """The statement may not have reached the server: try it again as it is."""
    return isinstance(exc, psycopg.OperationalError | DatabaseUnavailableError | TimeoutError) or (
        type(exc).__module__.startswith("psycopg_pool")
    )


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class _StartedOnce:
    """A TaskStatus that passes the first ``started()`` on and ignores the rest."""

    def __init__(self, status: TaskStatus[Any]) -> None:
        self._status = status
        self._done = False

    def started(self, value: Any = None) -> None:
        if not self._done:
            self._done = True
            self._status.started(value)
