"""The composition root: wires notifier, dispatcher, executor, leases and acks.

Data flows one way: NOTIFY -> notifier (wake) -> dispatcher (claim into free
slots) -> executor (run, timeout) -> policy (decide) -> acks (write) -> metrics.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anyio
import psycopg
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool

from listener import admin, db, policy
from listener.acks import Acks
from listener.config import DEFAULT_MAX_ATTEMPTS, NOTIFY_CHANNEL
from listener.dispatcher import Dispatcher
from listener.errors import ConfigError
from listener.executor import ExecutionSettings, Executor
from listener.leases import Heartbeat, Rescuer
from listener.logs import get_logger
from listener.metrics import Metrics
from listener.notifier import Notifier
from listener.registry import Registry, default_registry
from listener.store import engine as store
from listener.watcher import Watcher

log = get_logger("listener.worker")


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How one worker process runs. Durations are in seconds."""

    dsn: str
    concurrency: int = 10
    types: list[str] | None = None  # None: every registered type
    claim_batch: int | None = None  # None: up to the free slots
    lease_s: float = 30.0
    poll_interval_s: float = 2.0
    listen: bool = True  # False: poll only (benchmarks, poolers without LISTEN)
    grace_s: float = 30.0
    rescue_interval_s: float = 10.0
    default_timeout_s: float | None = None
    default_max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    ack_deadline_s: float = 30.0
    prune_older_than_s: float | None = None  # retention: delete finished tasks this old
    prune_interval_s: float = 600.0
    worker_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    )

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        for name in ("lease_s", "poll_interval_s", "rescue_interval_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0")
        if self.grace_s < 0:
            raise ConfigError("grace_s must be >= 0")


class Health:
    """What /healthz and /readyz report; safe to call from any thread."""

    def __init__(self, stale_after_s: float = 10.0) -> None:
        self.stale_after_s = stale_after_s
        self.loop_tick = time.monotonic()
        self.listening = False
        self.listen_required = True
        self.db_ok = False

    def alive(self) -> tuple[bool, str]:
        lag = time.monotonic() - self.loop_tick
        if lag > self.stale_after_s:
            return False, f"event loop unresponsive for {lag:.1f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if not self.db_ok:
            return False, "database unreachable"
        if self.listen_required and not self.listening:
            return False, "LISTEN connection down"
        return True, "ok"


class Worker:
    """One worker: ``await run()`` until ``request_stop()`` (or cancellation)."""

    def __init__(
        self,
        settings: WorkerSettings,
        registry: Registry | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.registry = default_registry if registry is None else registry
        self.metrics = metrics or Metrics(CollectorRegistry())
        self.health = Health()
        self.health.listen_required = settings.listen
        self.types = self._types()
        self._stop_requested = anyio.Event()
        self._grace_s = settings.grace_s
        self._grace_changed = anyio.Event()
        self.dispatcher: Dispatcher | None = None

    def _types(self) -> list[str]:
        known = self.registry.types()
        if not known:
            raise ConfigError("no handlers registered: pass --handlers MODULE")
        if self.settings.types is None:
            return known
        unknown = sorted(set(self.settings.types) - set(known))
        if unknown:
            raise ConfigError(f"no handler registered for type(s): {', '.join(unknown)}")
        return sorted(set(self.settings.types))

    def request_stop(self, grace_s: float | None = None) -> None:
        """Stop claiming now; running tasks get ``grace_s`` (default: the setting) to finish."""
        if grace_s is not None:
            self._grace_s = min(self._grace_s, grace_s)
            self._grace_changed.set()
        self._stop_requested.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        s = self.settings
        async with _open_pool(s) as pool, self._open_handler_pool() as handler_pool:
            acks = Acks(pool, s.worker_id, self.metrics, deadline_s=s.ack_deadline_s)
            executor = Executor(
                acks, handler_pool, self.metrics,
                ExecutionSettings(
                    s.default_timeout_s,
                    policy.RetryPolicy(s.default_max_attempts, s.backoff_base_s, s.backoff_max_s),
                ),
                anyio.CapacityLimiter(s.concurrency),
            )  # fmt: skip
            self.dispatcher = dispatcher = self._dispatcher(pool, executor)
            self.metrics.count_in_flight(lambda: len(dispatcher.running))
            async with anyio.create_task_group() as services:
                services.start_soon(acks.run_completer)
                services.start_soon(self._tick)
                if s.listen:
                    notifier = Notifier(
                        s.dsn, NOTIFY_CHANNEL, dispatcher.wakeup.kick, self.metrics,
                        on_listening=self._set_listening,
                    )  # fmt: skip
                    # Wake-up protocol (docs/notify.md): only a listening worker watches.
                    dispatcher.watch = watcher = Watcher(
                        notifier, pool, self.types, dispatcher.wakeup.kick, self.metrics
                    )
                    services.start_soon(watcher.run)
                    await services.start(notifier.run)
                await self._register(pool)
                services.start_soon(self._housekeeping, pool, dispatcher, acks)
                log.info(
                    "worker.started", worker_id=s.worker_id, types=self.types,
                    concurrency=s.concurrency, listen=s.listen,
                )  # fmt: skip
                task_status.started()
                dispatcher.wakeup.kick()
                async with anyio.create_task_group() as draining:
                    draining.start_soon(self._drain_when_asked, dispatcher, acks)
                    await dispatcher.run()
                    draining.cancel_scope.cancel()
                await self._release_unfinished(dispatcher, acks)
                await self._unregister(pool)
                services.cancel_scope.cancel()
        log.info("worker.stopped", worker_id=s.worker_id)

    def _dispatcher(self, pool: AsyncConnectionPool[Any], executor: Executor) -> Dispatcher:
        s = self.settings
        return Dispatcher(
            pool=pool, registry=self.registry, executor=executor, metrics=self.metrics,
            worker_id=s.worker_id, types=self.types, concurrency=s.concurrency,
            claim_batch=s.claim_batch or s.concurrency, lease_s=s.lease_s,
            poll_interval_s=s.poll_interval_s, default_max_attempts=s.default_max_attempts,
        )  # fmt: skip

    async def _drain_when_asked(self, dispatcher: Dispatcher, acks: Acks) -> None:
        """On stop: claim no more, give running tasks the grace period, then interrupt."""
        await self._stop_requested.wait()
        unstarted = dispatcher.stop_claiming()
        log.info("worker.stopping", in_flight=len(dispatcher.running), grace_s=self._grace_s)
        if unstarted:  # claimed, never started: no reason to keep them through the grace
            await self._put_back(unstarted, acks)
        deadline = anyio.current_time() + self._grace_s
        while dispatcher.running and anyio.current_time() < deadline:
            # Wake on the grace deadline, a second signal, or the last task finishing.
            async with anyio.create_task_group() as wait:
                wait.start_soon(_set_after, self._grace_changed, wait, deadline)
                wait.start_soon(_cancel_when_idle, dispatcher, wait)
            if self._grace_changed.is_set():
                self._grace_changed = anyio.Event()
                deadline = min(deadline, anyio.current_time() + self._grace_s)
        dispatcher.cancel_running()

    async def _release_unfinished(self, dispatcher: Dispatcher, acks: Acks) -> None:
        """Write queued completions, then put back what never finished (attempt not counted)."""
        await acks.flush()
        leftover = dict(dispatcher.running)
        dispatcher.running.clear()
        await self._put_back(leftover, acks)

    async def _put_back(self, tasks: dict[uuid.UUID, str], acks: Acks) -> None:
        released = await acks.release(list(tasks))
        for task_id, task_type in tasks.items():
            if task_id in released:
                self.metrics.finished(task_type, "released")
                log.info("task.released", task_id=str(task_id), type=task_type)

    async def _tick(self) -> None:
        while True:
            self.health.loop_tick = time.monotonic()
            await anyio.sleep(1.0)

    def _set_listening(self, up: bool) -> None:
        self.health.listening = up

    async def _housekeeping(
        self, pool: AsyncConnectionPool[Any], dispatcher: Dispatcher, acks: Acks
    ) -> None:
        s = self.settings
        heartbeat = Heartbeat(
            pool, s.worker_id, s.lease_s, lambda: [*dispatcher.running, *acks.unflushed()]
        )
        rescuer = Rescuer(
            pool, self.metrics, self._max_attempts_by_type(), s.default_max_attempts,
            s.rescue_interval_s, dispatcher.wakeup.kick,
        )  # fmt: skip
        async with anyio.create_task_group() as tg:
            tg.start_soon(heartbeat.run)
            tg.start_soon(rescuer.run)
            tg.start_soon(self._presence, pool)
            if s.prune_older_than_s is not None:
                tg.start_soon(self._retention, pool, s.prune_older_than_s)

    async def _retention(self, pool: AsyncConnectionPool[Any], older_than_s: float) -> None:
        """Prune finished tasks periodically (safe on every worker: batches SKIP LOCKED)."""
        while True:
            await anyio.sleep(self.settings.prune_interval_s * random.uniform(0.5, 1.5))
            try:
                async with pool.connection() as conn:
                    deleted = await admin.aprune_once(conn, timedelta(seconds=older_than_s))
            except psycopg.OperationalError as exc:
                log.warning("retention.failed", error=str(exc).strip().splitlines()[0])
                continue
            if deleted:
                log.info("retention.pruned", deleted=deleted, older_than_s=older_than_s)

    def _open_handler_pool(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """Connections for transactional handlers, if this worker runs any.

        Their own pool, so that handlers that hold a connection for their whole run
        (waiting on an API, say) can never starve the claims, acks and lease
        renewals of the engine's pool.
        """
        specs = [self.registry.get(task_type) for task_type in self.types]
        if not any(spec is not None and spec.transactional for spec in specs):
            return contextlib.nullcontext(None)
        s = self.settings
        return AsyncConnectionPool(
            s.dsn,
            min_size=0,
            max_size=s.concurrency,  # at most one per slot
            kwargs=db.connect_kwargs(autocommit=True),
            open=False,
            name=f"listener-{s.worker_id}-handlers",
        )

    def _max_attempts_by_type(self) -> dict[str, int]:
        limits = {}
        for task_type in self.types:
            spec = self.registry.get(task_type)
            if spec is not None and spec.options.max_attempts is not None:
                limits[task_type] = spec.options.max_attempts
        return limits

    async def _presence(self, pool: AsyncConnectionPool[Any]) -> None:
        """Keep this worker's row in listener.workers fresh (for status and doctor)."""
        while True:
            await anyio.sleep(10.0)
            try:
                await self._register(pool)
                async with pool.connection() as conn:
                    await store.delete_stale_workers(conn, stale_s=300.0)
            except psycopg.OperationalError:
                self.health.db_ok = False

    async def _register(self, pool: AsyncConnectionPool[Any]) -> None:
        s = self.settings
        try:
            async with pool.connection() as conn:
                await store.upsert_worker(
                    conn, s.worker_id, socket.gethostname(), os.getpid(),
                    self.types, s.concurrency,
                )  # fmt: skip
            self.health.db_ok = True
        except psycopg.OperationalError as exc:
            self.health.db_ok = False
            log.warning("worker.register_failed", error=str(exc).strip().splitlines()[0])

    async def _unregister(self, pool: AsyncConnectionPool[Any]) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                async with pool.connection() as conn:
                    await store.delete_worker(conn, self.settings.worker_id)
            except psycopg.Error:
                pass  # the row goes stale and is swept by any other worker


def _open_pool(s: WorkerSettings) -> AsyncConnectionPool[Any]:
    # Claims, acks, heartbeats, presence and retention share this pool; the LISTEN
    # connection and transactional handlers have their own. Autocommit: one round
    # trip per statement.
    return AsyncConnectionPool(
        s.dsn,
        min_size=2,
        max_size=min(s.concurrency, 8) + 4,
        kwargs=db.connect_kwargs(autocommit=True),
        open=False,
        name=f"listener-{s.worker_id}",
    )


async def _set_after(event: anyio.Event, group: Any, deadline: float) -> None:
    with anyio.move_on_after(max(deadline - anyio.current_time(), 0)):
        await event.wait()
    group.cancel_scope.cancel()


async def _cancel_when_idle(dispatcher: Dispatcher, group: Any) -> None:
    await dispatcher.wait_until_idle()
    group.cancel_scope.cancel()
