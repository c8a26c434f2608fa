"""The LISTEN connection: wakes the dispatcher on every NOTIFY and every (re)connect.

A dedicated autocommit connection (never pooled, never in a transaction) with
TCP keepalives; a periodic probe on it notices a dead peer even when idle.
Reconnects back off with jitter, forever: a database restart is an event to
survive, not a reason to exit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import psycopg
import tenacity
from anyio.abc import TaskStatus

from listener import db
from listener.errors import DatabaseUnavailableError
from listener.logs import get_logger
from listener.metrics import Metrics
from listener.store import engine as store

log = get_logger("listener.notifier")

# Lets operators (and `listener doctor`) tell the LISTEN session from pooled ones.
LISTEN_APPLICATION_NAME = "listener:listen"


class Notifier:
    """Keeps one LISTEN connection alive and calls ``on_wake`` for each notification."""

    def __init__(
        self,
        dsn: str,
        channel: str,
        on_wake: Callable[[], None],
        metrics: Metrics,
        *,
        probe_interval_s: float = 5.0,
        probe_timeout_s: float = 5.0,
        max_backoff_s: float = 5.0,
        on_listening: Callable[[bool], None] | None = None,
    ) -> None:
        self.dsn = dsn
        self.channel = channel
        self.on_wake = on_wake
        self.on_listening = on_listening  # told of every change, e.g. for /readyz
        self.metrics = metrics
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.max_backoff_s = max_backoff_s
        self.listening = False

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; ``task_status.started()`` once the first LISTEN is up."""
        started = False
        while True:
            conn = await self._connect_with_retry(reconnecting=started)
            try:
                await store.listen(conn, self.channel)
                self._set_listening(True)
                log.info("listener.connected", channel=self.channel)
                if not started:
                    task_status.started()
                    started = True
                self.on_wake()  # drain whatever arrived while we were away
                await self._listen_forever(conn)
            except (psycopg.OperationalError, TimeoutError) as exc:
                log.warning("listener.disconnected", error=_one_line(exc))
            finally:
                self._set_listening(False)
                with anyio.CancelScope(shield=True):
                    await conn.close()

    async def _listen_forever(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            async for _ in conn.notifies(timeout=self.probe_interval_s):
                # The payload is ignored: a NOTIFY is a hint to claim, never a message.
                self.metrics.notifications.inc()
                self.on_wake()
            with anyio.fail_after(self.probe_timeout_s):
                await store.probe(conn)

    async def _connect_with_retry(self, *, reconnecting: bool) -> psycopg.AsyncConnection[Any]:
        """Connect, retrying forever; every attempt after a lost connection is counted."""
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(DatabaseUnavailableError),
            wait=tenacity.wait_random_exponential(multiplier=0.1, max=self.max_backoff_s),
            before=self._log_reconnect if reconnecting else _nothing,
            before_sleep=_nothing if reconnecting else self._log_waiting,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await db.aconnect(
                    self.dsn, autocommit=True, application_name=LISTEN_APPLICATION_NAME
                )
        raise AssertionError("unreachable: tenacity retries forever")

    def _log_reconnect(self, state: tenacity.RetryCallState) -> None:
        self.metrics.db_reconnects.inc()
        log.warning("listener.reconnecting", attempt=state.attempt_number)

    def _log_waiting(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "listener.waiting_for_database",
            attempt=state.attempt_number,
            retry_in_s=round(state.upcoming_sleep, 3),
            error=_one_line(exc) if exc else None,
        )

    def _set_listening(self, up: bool) -> None:
        self.listening = up
        self.metrics.listening.set(1 if up else 0)
        if self.on_listening is not None:
            self.on_listening(up)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _nothing(state: tenacity.RetryCallState) -> None:
    """A tenacity hook that does nothing."""
