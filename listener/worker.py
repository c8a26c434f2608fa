"""The composition root: wires registry, notifier, dispatcher, executor, leases and acks.

Data flows one way: NOTIFY -> notifier (wake) -> dispatcher (claim into free slots)
-> executor (run, timeout, decide) -> registry -> acks (write) -> metrics + logs.

Whatever ends a worker -- a requested stop, a fault, a cancellation of ``run()`` from
outside -- its shutdown runs in a shielded scope with a deadline: outcomes already
earned are written, claims that never started are put back (attempt given back),
interrupted ones are put back counted, and rows claimed under its id that it doesn't
know of are released.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anyio
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool

from listener import admin, db, policy
from listener.acks import Acks
from listener.config import DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS_LIMIT, NOTIFY_CHANNEL
from listener.dispatcher import Dispatcher
from listener.errors import ConfigError
from listener.executor import ExecutionSettings, Executor
from listener.inflight import InFlight
from listener.leases import Heartbeat, Rescuer
from listener.logs import get_logger
from listener.metrics import Metrics
from listener.notifier import Notifier
from listener.registry import Registry, default_registry
from listener.scheduler import Scheduler
from listener.store import engine as store
from listener.supervise import Failures, supervised
from listener.watcher import Watcher

log = get_logger("listener.worker")

SHUTDOWN_DEADLINE_S = 15.0  # to write outcomes and put tasks back, after the grace period
CLAIMS_RETURN_S = 2.0  # past the grace, claims still on their way get this long to return


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How one worker process runs. Durations are in seconds."""

    dsn: str
    concurrency: int = 10
    types: list[str] | None = None  # None: every registered type
    claim_batch: int | None = None  # None: as much as there is room for (slots, claim-ahead)
    lease_s: float = 30.0
    poll_interval_s: float = 2.0
    listen: bool = True  # False: poll only (benchmarks, poolers without LISTEN)
    grace_s: float = 30.0
    rescue_interval_s: float = 10.0
    default_timeout_s: float | None = None
    default_max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
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
        if not 1 <= self.default_max_attempts <= MAX_ATTEMPTS_LIMIT:
            raise ConfigError(
                f"max attempts must be between 1 and {MAX_ATTEMPTS_LIMIT} (the schema's "
                f"limit), got {self.default_max_attempts}"
            )


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


@dataclass(slots=True)
class _Engine:
    """The parts of one running worker, built once its pools are open."""

    inflight: InFlight
    acks: Acks
    executor: Executor
    dispatcher: Dispatcher
    heartbeat: Heartbeat
    rescuer: Rescuer


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
        self.failures = Failures(self.metrics)
        self.types = self._types()
        self.stop_requested = False
        self._stop_event = anyio.Event()
        self._grace_s = settings.grace_s
        self._grace_changed = anyio.Event()
        self._starting: anyio.CancelScope | None = None
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
        self.stop_requested = True
        self._stop_event.set()
        if self._starting is not None:  # still waiting for the database: give up now
            self._starting.cancel()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._warn_about_missing_settings()
        async with _open_pool(self.settings) as pool, self._open_handler_pool() as handler_pool:
            engine = self._build(pool, handler_pool)
            try:
                await self._serve(engine, task_status)
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_DEADLINE_S):
                    await self._shut_down(engine, pool)
        log.info("worker.stopped", worker_id=self.settings.worker_id)

    def _build(
        self, pool: AsyncConnectionPool[Any], handler_pool: AsyncConnectionPool[Any] | None
    ) -> _Engine:
        s = self.settings
        inflight = InFlight()
        dispatcher_box: list[Dispatcher] = []
        acks = Acks(
            pool, inflight, self.metrics, self.failures,
            on_retry_due=lambda delay_s: dispatcher_box[0].schedule_in(delay_s),
            on_written=lambda: dispatcher_box[0].outcomes_written(),
            claim_will_carry=lambda: dispatcher_box[0].will_claim_soon(),
        )  # fmt: skip
        executor = Executor(
            inflight, handler_pool, self.metrics,
            ExecutionSettings(
                s.default_timeout_s,
                policy.RetryPolicy(s.default_max_attempts, s.backoff_base_s, s.backoff_max_s),
            ),
            anyio.CapacityLimiter(s.concurrency),
        )  # fmt: skip
        dispatcher = Dispatcher(
            pool=pool, registry=self.registry, inflight=inflight, executor=executor,
            acks=acks, metrics=self.metrics, failures=self.failures,
            worker_id=s.worker_id, claim_spec=self._claim_spec(),
            concurrency=s.concurrency, claim_batch=s.claim_batch,
            lease_s=s.lease_s, poll_interval_s=s.poll_interval_s,
        )  # fmt: skip
        dispatcher_box.append(dispatcher)
        self.dispatcher = dispatcher
        heartbeat = Heartbeat(
            pool, inflight, self.metrics, self.failures,
            worker_id=s.worker_id, types=self.types, concurrency=s.concurrency,
            lease_s=s.lease_s, on_beat=self._set_db_ok,
        )  # fmt: skip
        rescuer = Rescuer(
            pool, self.metrics, self.failures,
            max_attempts_by_type=self._attempt_limits(),
            default_max_attempts=s.default_max_attempts,
            interval_s=s.rescue_interval_s, margin_s=heartbeat.interval_s + 1.0,
            on_rescued=dispatcher.wakeup.kick,
        )  # fmt: skip
        self.metrics.count_in_flight(
            lambda: inflight.occupying,
            inflight.oldest_running_s,
            lambda: len(inflight) - inflight.occupying,
        )
        return _Engine(inflight, acks, executor, dispatcher, heartbeat, rescuer)

    async def _serve(self, engine: _Engine, task_status: TaskStatus[None]) -> None:
        s = self.settings
        async with anyio.create_task_group() as services:
            services.start_soon(supervised, "acks", engine.acks.run, self.failures)
            services.start_soon(self._tick)
            if not await self._start_up(services, engine):
                services.cancel_scope.cancel()
                return
            services.start_soon(supervised, "heartbeat", engine.heartbeat.run, self.failures)
            services.start_soon(supervised, "rescuer", engine.rescuer.run, self.failures)
            if s.prune_older_than_s is not None:
                retention = functools.partial(self._retention, engine.dispatcher.pool)
                services.start_soon(supervised, "retention", retention, self.failures)
            # Schedules (cron=/every=) and published limits: listener/scheduler.py.
            specs = [spec for t in self.types if (spec := self.registry.get(t)) is not None]
            scheduler = Scheduler(engine.dispatcher.pool, s.worker_id, specs, self.metrics)
            services.start_soon(supervised, "scheduler", scheduler.run, self.failures)
            log.info(
                "worker.started", worker_id=s.worker_id, types=self.types,
                concurrency=s.concurrency, listen=s.listen,
            )  # fmt: skip
            task_status.started()
            async with anyio.create_task_group() as draining:
                draining.start_soon(self._drain_when_asked, engine)
                await engine.dispatcher.run()
                draining.cancel_scope.cancel()
            services.cancel_scope.cancel()

    async def _start_up(self, services: Any, engine: _Engine) -> bool:
        """LISTEN, then a first heartbeat; False if a stop came first."""
        with anyio.CancelScope() as starting:
            self._starting = starting
            if self.stop_requested:
                starting.cancel()
            if self.settings.listen:
                notifier = Notifier(
                    self.settings.dsn, NOTIFY_CHANNEL, engine.dispatcher.wakeup.kick,
                    self.metrics, on_listening=self._set_listening,
                )  # fmt: skip
                # Wake-up protocol (docs/notify.md): only a listening worker watches.
                dispatcher = engine.dispatcher
                dispatcher.watch = watcher = Watcher(
                    notifier, dispatcher.pool, self.types, dispatcher.wakeup.kick, self.metrics
                )
                services.start_soon(supervised, "watcher", watcher.run, self.failures)
                await services.start(supervised, "notifier", notifier.run, self.failures)
            await self._register(engine.heartbeat)
        self._starting = None
        return not starting.cancelled_caught

    async def _register(self, heartbeat: Heartbeat) -> None:
        """The first heartbeat: this worker's row in listener.workers (retried)."""
        for attempt in itertools.count(1):
            if await heartbeat.beat():
                return
            await anyio.sleep(min(1.0, 0.1 * attempt))

    async def _drain_when_asked(self, engine: _Engine) -> None:
        """On stop: claim no more, give running tasks the grace period, then interrupt."""
        await self._stop_event.wait()
        dispatcher = engine.dispatcher
        in_flight = engine.inflight.occupying
        dispatcher.stop_claiming()  # what never started goes back at once, not after the grace
        log.info("worker.stopping", in_flight=in_flight, grace_s=self._grace_s)
        deadline = anyio.current_time() + self._grace_s
        while engine.inflight.busy and anyio.current_time() < deadline:
            # Wake on the grace deadline, a second signal, or the last task finishing.
            async with anyio.create_task_group() as wait:
                wait.start_soon(_set_after, self._grace_changed, wait, deadline)
                wait.start_soon(_cancel_when_idle, dispatcher, wait)
            if self._grace_changed.is_set():
                self._grace_changed = anyio.Event()
                deadline = min(deadline, anyio.current_time() + self._grace_s)
        # Claims on their way go back once they return; cancelled, the server could
        # still commit them after the shutdown's reconcile had looked.
        with anyio.move_on_after(max(deadline - anyio.current_time(), CLAIMS_RETURN_S)):
            await dispatcher.claims_returned()
        dispatcher.cancel_running()

    async def _shut_down(self, engine: _Engine, pool: AsyncConnectionPool[Any]) -> None:
        """Write what was earned, put back the rest, forget this worker. Never raises."""
        inflight = engine.inflight
        for claim in inflight:
            if claim.lease_lost:
                inflight.remove(claim)  # someone else's now: nothing of ours to write
            elif claim.state in ("queued", "held", "running"):
                outcome = policy.interrupted(
                    claim.task.attempt, claim.task.max_attempts, started=claim.started is not None
                )
                inflight.decide(claim, outcome)
            elif claim.state == "abandoned":  # timed out; its thread dies with the process
                spec = self.registry.get(claim.task.type)
                inflight.decide(claim, engine.executor.timed_out(spec, claim))
        try:
            await engine.acks.flush()
            await engine.dispatcher.reconcile()
            async with pool.connection() as conn:
                await store.delete_worker(conn, self.settings.worker_id)
        except Exception as exc:  # a dead database: the rescuer of another worker takes over
            self.failures.report("shutdown", exc)

    async def _tick(self) -> None:
        while True:
            self.health.loop_tick = time.monotonic()
            await anyio.sleep(1.0)

    def _set_listening(self, up: bool) -> None:
        self.health.listening = up

    def _set_db_ok(self, ok: bool) -> None:
        self.health.db_ok = ok

    async def _retention(self, pool: AsyncConnectionPool[Any]) -> None:
        """Prune finished tasks periodically (safe on every worker: batches SKIP LOCKED)."""
        older_than = timedelta(seconds=self.settings.prune_older_than_s or 0)
        while True:
            await anyio.sleep(self.settings.prune_interval_s * random.uniform(0.5, 1.5))
            async with pool.connection() as conn:
                deleted = await admin.aprune_once(conn, older_than)
            if deleted:
                log.info(
                    "retention.pruned", deleted=deleted, older_than_s=older_than.total_seconds()
                )

    def _warn_about_missing_settings(self) -> None:
        """Once per handler at start-up: a handler that can't run as configured."""
        for task_type in self.types:
            spec = self.registry.get(task_type)
            if spec is None or spec.check_settings is None:
                continue
            try:
                spec.check_settings()
            except ConfigError as exc:
                log.warning("handler.misconfigured", type=task_type, error=str(exc))

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

    def _claim_spec(self) -> store.ClaimSpec:
        """What this worker claims: each type's attempt limit and fleet-wide limits."""
        specs = [self.registry.get(t) for t in self.types]
        options = [spec.options if spec is not None else None for spec in specs]
        limits = self._attempt_limits()
        rates = [o.rate_limit if o is not None else None for o in options]
        return store.ClaimSpec(
            types=list(self.types),
            attempt_limits=[limits[t] for t in self.types],
            concurrency=[o.global_concurrency if o is not None else None for o in options],
            rate_counts=[r.count if r is not None else None for r in rates],
            rate_windows_s=[r.window_s if r is not None else None for r in rates],
        )

    def _attempt_limits(self) -> dict[str, int]:
        """Each type's effective max attempts: its handler's, else the worker's default."""
        limits = {}
        for task_type in self.types:
            spec = self.registry.get(task_type)
            own = spec.options.max_attempts if spec is not None else None
            limits[task_type] = own or self.settings.default_max_attempts
        return limits


def _open_pool(s: WorkerSettings) -> AsyncConnectionPool[Any]:
    # Claims, acks, heartbeats and retention share this pool; the LISTEN connection
    # and transactional handlers have their own. Autocommit: one round trip per
    # statement.
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
