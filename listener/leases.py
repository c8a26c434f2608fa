"""Leases: the heartbeat that keeps this worker's claims, and the rescuer of lost ones.

A claimed task carries ``lease_expires_at``. Every ``lease_s / 3`` the heartbeat renews
the lease of every claim in the registry and refreshes the worker's row in
``listener.workers``, in one statement; after a failure it tries again within a second,
so that an owner back from a database outage renews before anyone rescues its tasks.
If a worker dies or freezes, its leases run out and any worker's rescuer (safe to run
concurrently: SKIP LOCKED) puts the task back to pending -- counting the attempt -- or
fails it when none is left, a margin of one beat after the lease ran out.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable
from typing import Any

import anyio
from psycopg_pool import AsyncConnectionPool

from listener.inflight import InFlight
from listener.logs import get_logger
from listener.metrics import Metrics
from listener.store import engine as store
from listener.supervise import Failures

log = get_logger("listener.leases")

RETRY_AFTER_FAILURE_S = 0.5
STALE_WORKER_S = 300.0
SWEEP_EVERY_BEATS = 30


class Heartbeat:
    """Renews this worker's leases and presence; marks the claims it lost."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        inflight: InFlight,
        metrics: Metrics,
        failures: Failures,
        *,
        worker_id: str,
        types: list[str],
        concurrency: int,
        lease_s: float,
        on_beat: Callable[[bool], None],
    ) -> None:
        self.pool = pool
        self.inflight = inflight
        self.metrics = metrics
        self.failures = failures
        self.worker_id = worker_id
        self.lease_s = lease_s
        self.on_beat = on_beat  # told whether each beat reached the database
        self.presence = {
            "worker_id": worker_id, "hostname": socket.gethostname(), "pid": os.getpid(),
            "types": types, "concurrency": concurrency,
        }  # fmt: skip
        self._beats = 0

    @property
    def interval_s(self) -> float:
        return self.lease_s / 3

    async def run(self) -> None:
        while True:
            ok = await self.beat()
            await anyio.sleep(self.interval_s if ok else RETRY_AFTER_FAILURE_S)

    async def beat(self) -> bool:
        """One beat; False if the database could not be reached or refused it."""
        claims = self.inflight.leased()
        try:
            async with self.pool.connection() as conn:
                results = await store.heartbeat(
                    conn, self.presence, [c.key for c in claims], self.lease_s
                )
                self._beats += 1
                if self._beats % SWEEP_EVERY_BEATS == 1:
                    await store.delete_stale_workers(conn, stale_s=STALE_WORKER_S)
        except Exception as exc:  # any database error: try again within a second
            self.failures.report("heartbeat", exc, retry_in_s=RETRY_AFTER_FAILURE_S)
            self.on_beat(False)
            return False
        self.on_beat(True)
        for result in results:
            if not result.written and not result.ours:  # locked rows are still ours
                claim = self.inflight.get(result.key)
                if claim is not None:
                    self._lost(claim)
        return True

    def _lost(self, claim: Any) -> None:
        """The database gave the task to someone else: stop working on it."""
        claim.lease_lost = True
        self.metrics.leases_lost.labels(claim.task.type).inc()
        log.warning(
            "task.lease_lost", task_id=str(claim.task.id), type=claim.task.type,
            attempt=claim.task.attempt, state=claim.state,
        )  # fmt: skip
        if claim.state == "running" and claim.scope is not None:
            claim.scope.cancel()  # an async handler stops; a thread runs on, unleased


class Rescuer:
    """Returns tasks with expired leases to pending (or fails them), periodically."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        metrics: Metrics,
        failures: Failures,
        *,
        max_attempts_by_type: dict[str, int],
        default_max_attempts: int,
        interval_s: float,
        margin_s: float,
        on_rescued: Callable[[], None],
        batch: int = 1000,
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.failures = failures
        self.max_attempts_by_type = max_attempts_by_type
        self.default_max_attempts = default_max_attempts
        self.interval_s = interval_s
        self.margin_s = margin_s
        self.on_rescued = on_rescued
        self.batch = batch

    async def run(self) -> None:
        while True:
            await anyio.sleep(self.interval_s * random.uniform(0.5, 1.5))
            # Right after an outage every lease looks expired: give the owners, whose
            # heartbeats retry within a second, the time to renew first.
            if self.failures.database_quiet_for() > self.margin_s:
                await self.rescue_once()

    async def rescue_once(self) -> int:
        """One rescue pass; returns how many tasks it moved."""
        async with self.pool.connection() as conn:
            rows = await store.rescue_expired(
                conn, self.max_attempts_by_type, self.default_max_attempts,
                self.batch, self.margin_s,
            )  # fmt: skip
            if any(status == "pending" for _, _, status, _ in rows):
                await store.notify_workers(conn)
        for task_id, task_type, status, attempts in rows:
            self.metrics.finished(task_type, "rescued")
            log.warning(
                "task.rescued", task_id=str(task_id), type=task_type,
                attempt=attempts, now=status,
            )  # fmt: skip
        if rows:
            self.on_rescued()
        return len(rows)
