"""Run one claimed task: call its handler with a timeout, then acknowledge the outcome."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
from psycopg_pool import AsyncConnectionPool

from listener import logs, policy
from listener.acks import Acks, Finished
from listener.logs import get_logger
from listener.metrics import Metrics
from listener.models import Task
from listener.registry import HandlerSpec
from listener.store import engine as store

log = get_logger("listener.executor")


class HandlerTimeout(Exception):
    """The handler ran past its timeout and was cancelled."""


class LeaseLost(Exception):
    """The task is no longer ours (rescued, or taken by another worker)."""


@dataclass(frozen=True, slots=True)
class ExecutionSettings:
    default_timeout_s: float | None
    default_policy: policy.RetryPolicy


class Executor:
    """Runs tasks; one instance per worker, shared by all slots."""

    def __init__(
        self,
        acks: Acks,
        handler_pool: AsyncConnectionPool[Any] | None,
        metrics: Metrics,
        settings: ExecutionSettings,
        thread_limiter: anyio.CapacityLimiter,
    ) -> None:
        self.acks = acks
        self.handler_pool = handler_pool  # None when no handler is transactional
        self.metrics = metrics
        self.settings = settings
        self.thread_limiter = thread_limiter
        # Set by the dispatcher: a retry's run_at arms its timer.
        self.on_scheduled: Callable[[datetime], None] | None = None

    def retry_policy(self, spec: HandlerSpec, task: Task) -> policy.RetryPolicy:
        base = self.settings.default_policy
        return policy.RetryPolicy(
            max_attempts=task.max_attempts,
            backoff_base_s=spec.options.backoff_base_s or base.backoff_base_s,
            backoff_max_s=spec.options.backoff_max_s or base.backoff_max_s,
        )

    async def execute(self, spec: HandlerSpec, task: Task) -> None:
        """Run the handler and write its outcome. Cancellation (shutdown) propagates."""
        logs.current_task.set(task)  # handlers' own log lines carry the task
        if task.attempt > task.max_attempts:  # e.g. max_attempts lowered since it was queued
            exhausted = f"AttemptsExhausted: attempt {task.attempt} of {task.max_attempts}"
            if await self.acks.fail(task.id, exhausted):
                self.metrics.finished(task.type, "failed")
                log.warning("task.failed", error=exhausted)
            return
        started = time.perf_counter()
        error = await self._call(spec, task)
        duration_s = time.perf_counter() - started
        if error is None and not spec.transactional:  # the hot path: nothing to decide
            self.acks.complete_later(Finished(task.id, task.type, task.attempt, duration_s))
            return  # the completer counts and logs it once its batch commits
        if isinstance(error, LeaseLost):
            log.warning("task.lease_lost", duration_s=round(duration_s, 6))
            return
        decision = policy.decide(task.attempt, self.retry_policy(spec, task), error)
        await self._acknowledge(task, decision, duration_s)

    async def _call(self, spec: HandlerSpec, task: Task) -> BaseException | None:
        """The handler's exception (or None); cancellation is re-raised, never swallowed."""
        timeout_s = spec.options.timeout_s or self.settings.default_timeout_s
        try:
            if timeout_s is None:  # no scope to enter: it costs more than a no-op handler
                await self._run_handler(spec, task)
                return None
            with anyio.move_on_after(timeout_s) as deadline:
                await self._run_handler(spec, task)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            return exc
        if deadline.cancelled_caught:
            return HandlerTimeout(f"handler ran past its {timeout_s:g}s timeout")
        return None

    async def _run_handler(self, spec: HandlerSpec, task: Task) -> None:
        if spec.transactional:
            await self._call_in_transaction(spec, task)
        elif spec.is_async:
            await spec.func(task)
        else:
            # A sync handler can't be interrupted: past its timeout the thread
            # is abandoned (it holds a thread slot until it returns).
            await anyio.to_thread.run_sync(
                spec.func, task, abandon_on_cancel=True, limiter=self.thread_limiter
            )

    async def _call_in_transaction(self, spec: HandlerSpec, task: Task) -> None:
        """Handler writes and the completion commit together, or not at all.

        The transaction is opened before the handler runs, so a ``conn.transaction()``
        block inside the handler is a savepoint of it, never a commit of its own.
        """
        assert self.handler_pool is not None, "the worker opens it for transactional types"
        async with self.handler_pool.connection() as conn, conn.transaction():
            await spec.func(task, conn)
            done = await store.complete(conn, [task.id], self.acks.worker_id)
            if task.id not in done:
                raise LeaseLost(str(task.id))

    async def _acknowledge(self, task: Task, decision: policy.Outcome, duration_s: float) -> None:
        fields: dict[str, Any] = {"duration_s": round(duration_s, 6)}
        if decision.action == "complete":  # a transactional handler's, already committed
            ok, outcome, event = True, "completed", "task.completed"
        elif decision.action == "retry":
            run_at = await self.acks.retry(
                task.id, decision.delay_s, decision.error or "", counted=decision.counted
            )
            ok, outcome, event = run_at is not None, "retried", "task.retry_scheduled"
            if run_at is not None and self.on_scheduled is not None:
                self.on_scheduled(run_at)
            fields.update(retry_in_s=round(decision.delay_s, 3), error=decision.error)
        else:
            ok = await self.acks.fail(task.id, decision.error or "")
            outcome, event = "failed", "task.failed"
            fields["error"] = decision.error
        if not ok:
            log.warning("task.ack_ignored", outcome=outcome, **fields)
            return
        self.metrics.finished(task.type, outcome, duration_s)
        (log.warning if outcome == "failed" else log.info)(event, **fields)


# jsonb::text is exactly one JSON value with no surrounding whitespace, so the
# decoder can skip json.loads's whitespace scans (2 us of 3 for a small payload).
_JSON = json.JSONDecoder()


def task_from_row(row: tuple[Any, ...], default_max_attempts: int) -> tuple[Task, float]:
    """A Task and its pickup delay (s) from a ``claim_tasks`` row."""
    (id_, type_, payload, attempts, max_attempts, created_at, run_at, priority,
     dedupe_key, lease_expires_at, worker_id, pickup_delay_s) = row  # fmt: skip
    task = Task(
        id=id_ if isinstance(id_, uuid.UUID) else uuid.UUID(str(id_)),
        type=type_,
        payload=_JSON.raw_decode(payload)[0],
        attempt=attempts,
        max_attempts=max_attempts or default_max_attempts,
        created_at=created_at,
        run_at=run_at,
        priority=priority,
        dedupe_key=dedupe_key,
        lease_expires_at=lease_expires_at,
        worker_id=worker_id,
    )
    return task, pickup_delay_s or 0.0
