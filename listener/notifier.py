"""The LISTEN connection: wakes the dispatcher on every NOTIFY and every (re)connect.

A dedicated autocommit connection (never pooled, never in a transaction) with
TCP keepalives on both ends; a periodic probe on it notices a dead peer even when
idle. Reconnects back off with jitter, forever: a database restart is an event to
survive, not a reason to exit.

The session also carries the worker's watch locks (listener/watcher.py): short
statements handed to ``on_session`` run between two waits for notifications, so
the locks live and die with the session that hears the notifications.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import psycopg
import tenacity
from anyio.abc import TaskStatus

from listener import db
from listener.errors import DatabaseUnavailableError
from listener.logs import get_logger
from listener.metrics import Metrics
from listener.store import engine as store
from listener.store import wake as wake_store

log = get_logger("listener.notifier")

# Lets operators (and `listener doctor`) tell the LISTEN session from pooled ones.
LISTEN_APPLICATION_NAME = "listener:listen"

T = TypeVar("T")
SessionStatement = Callable[[psycopg.AsyncConnection[Any], int], Awaitable[T]]


class SessionLost(Exception):
    """The LISTEN session is down, or went down before the statement finished."""


class _Request:
    """A statement waiting for its turn on the LISTEN session, and its outcome."""

    def __init__(self, statement: SessionStatement[Any]) -> None:
        self.statement = statement
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


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
        self.session = 0  # counts (re)connections: which session a lock was taken on
        self._session_watchers: list[Callable[[bool], None]] = []
        self._requests: list[_Request] = []
        self._waiting: anyio.CancelScope | None = None

    def watch_session(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(up)`` each time the LISTEN session comes up or goes down."""
        self._session_watchers.append(callback)

    async def on_session(self, statement: SessionStatement[T]) -> T:
        """Run ``statement(conn, backend_pid)`` on the LISTEN session, between two waits.

        Raises SessionLost if the session is down or drops meanwhile. Keep it short:
        notifications are read again only once it returns.
        """
        if not self.listening:
            raise SessionLost("the LISTEN session is down")
        request = _Request(statement)
        self._requests.append(request)
        if self._waiting is not None:
            self._waiting.cancel()  # leaves the connection idle and usable (tests prove it)
        await request.done.wait()
        if request.error is not None:
            raise request.error
        return request.result  # type: ignore[no-any-return]

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; ``task_status.started()`` once the first LISTEN is up."""
        started = False
        while True:
            conn = await self._connect_with_retry(reconnecting=started)
            try:
                pid = await wake_store.setup_listen_session(conn)
                await store.listen(conn, self.channel)
                self.session += 1
                self._set_listening(True)
                log.info("listener.connected", channel=self.channel)
                if not started:
                    task_status.started()
                    started = True
                self.on_wake()  # drain whatever arrived while we were away
                await self._listen_forever(conn, pid)
            except (psycopg.OperationalError, TimeoutError) as exc:
                log.warning("listener.disconnected", error=_one_line(exc))
            finally:
                self._set_listening(False)
                self._fail_requests()
                with anyio.CancelScope(shield=True):
                    await conn.close()

    async def _listen_forever(self, conn: psycopg.AsyncConnection[Any], pid: int) -> None:
        while True:
            timed_out = False
            with anyio.CancelScope() as self._waiting:
                if not self._requests:
                    async for _ in conn.notifies(timeout=self.probe_interval_s):
                        # The payload is ignored: a NOTIFY is a hint to claim, never a message.
                        self.metrics.notifications.inc()
                        self.on_wake()
                        # The woken claim goes out before this session waits again.
                        # Shielded: a cancel here would leave notifies() suspended,
                        # holding the connection's lock.
                        with anyio.CancelScope(shield=True):
                            await anyio.lowlevel.checkpoint()
                    timed_out = True
            self._waiting = None
            await self._serve_requests(conn, pid)
            if timed_out:
                with anyio.fail_after(self.probe_timeout_s):
                    await store.probe(conn)

    async def _serve_requests(self, conn: psycopg.AsyncConnection[Any], pid: int) -> None:
        while self._requests:
            request = self._requests[0]
            try:
                # Shielded: cancelling a running statement would cost the session.
                with anyio.CancelScope(shield=True), anyio.fail_after(self.probe_timeout_s):
                    request.result = await request.statement(conn, pid)
            except (psycopg.OperationalError, TimeoutError):
                raise  # the session is lost: _fail_requests answers this one too
            except Exception as exc:
                request.error = exc
            self._requests.pop(0)
            request.done.set()

    def _fail_requests(self) -> None:
        while self._requests:
            request = self._requests.pop(0)
            request.error = SessionLost("the LISTEN session went down")
            request.done.set()

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
        if up == self.listening:
            return
        self.listening = up
        self.metrics.listening.set(1 if up else 0)
        if self.on_listening is not None:
            self.on_listening(up)
        for callback in self._session_watchers:
            callback(up)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _nothing(state: tenacity.RetryCallState) -> None:
    """A tenacity hook that does nothing."""
