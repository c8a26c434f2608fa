"""Run one claimed task: call its handler with its timeout and decide the attempt's outcome.

Whatever the handler does -- return, raise any exception, raise SystemExit or another
BaseException, let out a cancellation the worker did not ask for, run past its
timeout -- ends in an outcome for this attempt only; the worker goes on. Only a
cancellation the worker itself asked for (shutdown, a lost lease) propagates.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import anyio
from psycopg_pool import AsyncConnectionPool

from listener import logs, policy
from listener.config import MAX_PAYLOAD_BYTES
from listener.errors import ConfigError
from listener.inflight import Claim, InFlight
from listener.logs import get_logger
from listener.metrics import Metrics
from listener.models import Task
from listener.registry import HandlerSpec
from listener.store import engine as store

log = get_logger("listener.executor")


class HandlerTimeout(Exception):
    """The handler ran past its timeout."""


class LeaseLost(Exception):
    """The task is no longer this claim's (rescued, or taken by another worker)."""


@dataclass(frozen=True, slots=True)
class ExecutionSettings:
    default_timeout_s: float | None
    default_policy: policy.RetryPolicy


class Executor:
    """Runs claims; one instance per worker, shared by all slots."""

    def __init__(
        self,
        inflight: InFlight,
        handler_pool: AsyncConnectionPool[Any] | None,
        metrics: Metrics,
        settings: ExecutionSettings,
        thread_limiter: anyio.CapacityLimiter,
    ) -> None:
        self.inflight = inflight
        self.handler_pool = handler_pool  # None when no handler is transactional
        self.metrics = metrics
        self.settings = settings
        self.thread_limiter = thread_limiter
        self._config_failures: collections.Counter[str] = collections.Counter()

    def retry_policy(self, spec: HandlerSpec | None, task: Task) -> policy.RetryPolicy:
        base = self.settings.default_policy
        options = spec.options if spec is not None else None
        return policy.RetryPolicy(
            max_attempts=task.max_attempts,
            backoff_base_s=(options and options.backoff_base_s) or base.backoff_base_s,
            backoff_max_s=(options and options.backoff_max_s) or base.backoff_max_s,
        )

    def timed_out(self, spec: HandlerSpec | None, claim: Claim) -> policy.Outcome:
        """The outcome of a claim whose handler ran past its timeout."""
        timeout = HandlerTimeout("handler ran past its timeout")
        return policy.decide(claim.task.attempt, self.retry_policy(spec, claim.task), timeout)

    async def execute(self, spec: HandlerSpec, claim: Claim) -> policy.Outcome | None:
        """Run the claim's handler; its outcome (None: a transactional one, committed)."""
        task = claim.task
        logs.current_task.set(task)  # handlers' own log lines carry the task
        self.inflight.start(claim)
        if task.attempt > task.max_attempts:  # e.g. max_attempts lowered since it was queued
            return policy.exhausted(task.attempt, task.max_attempts)
        started = time.perf_counter()
        error = await self._call(spec, claim)
        claim.duration_s = time.perf_counter() - started
        if error is None:
            self._config_failures.pop(task.type, None)
            return None if spec.transactional else policy.COMPLETE
        if isinstance(error, LeaseLost):
            raise error
        if isinstance(error, ConfigError):
            self._config_failures[task.type] += 1
        return policy.decide(
            task.attempt,
            self.retry_policy(spec, task),
            error,
            config_failures=self._config_failures[task.type],
        )

    async def _call(self, spec: HandlerSpec, claim: Claim) -> BaseException | None:
        """The handler's exception, or None. Only our own cancellations propagate."""
        timeout_s = spec.options.timeout_s or self.settings.default_timeout_s
        try:
            if not spec.is_async:
                return await self._call_sync(spec, claim, timeout_s)
            if timeout_s is None:  # no scope to enter: it costs more than a no-op handler
                await self._call_async(spec, claim)
                return None
            with anyio.move_on_after(timeout_s) as deadline:
                await self._call_async(spec, claim)
            if deadline.cancelled_caught:
                return HandlerTimeout(f"handler ran past its {timeout_s:g}s timeout")
            return None
        except BaseException as exc:  # every outcome of a handler is data, even these
            if _is_cancellation(exc):
                if _cancellation_requested():
                    raise
                return _stray(exc)
            return exc

    async def _call_async(self, spec: HandlerSpec, claim: Claim) -> None:
        if spec.transactional:
            await self._call_in_transaction(spec, claim)
        else:
            await spec.func(claim.task)

    async def _call_in_transaction(self, spec: HandlerSpec, claim: Claim) -> None:
        """Handler writes and the completion commit together, or not at all.

        The transaction is opened before the handler runs, so a ``conn.transaction()``
        block inside the handler is a savepoint of it, never a commit of its own.
        """
        assert self.handler_pool is not None, "the worker opens it for transactional types"
        async with self.handler_pool.connection() as conn, conn.transaction():
            await spec.func(claim.task, conn)
            if not await store.complete_claim(conn, claim.key):
                raise LeaseLost(str(claim.task.id))

    async def _call_sync(
        self, spec: HandlerSpec, claim: Claim, timeout_s: float | None
    ) -> BaseException | None:
        """Run a plain function in a thread; past its timeout, wait for the thread anyway.

        A thread can't be interrupted. Until it returns, the task stays leased by this
        worker (nobody may run it beside its abandoned run) and keeps its slot and its
        thread token (never more handler threads than --concurrency).
        """
        claim.scope = None  # a lost lease can't stop a thread: it keeps its slot until done
        outcome: list[BaseException | None] = []
        finished = anyio.Event()
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else math.inf)
        returned_at: list[float] = []

        def timed() -> None:
            try:
                spec.func(claim.task)
            finally:
                returned_at.append(time.monotonic())

        async def in_thread() -> None:
            try:
                await anyio.to_thread.run_sync(
                    timed, abandon_on_cancel=True, limiter=self.thread_limiter
                )
                outcome.append(None)
            except BaseException as exc:  # reported as the handler's outcome
                if _is_cancellation(exc) and _cancellation_requested():
                    raise
                outcome.append(_stray(exc) if _is_cancellation(exc) else exc)
            finally:
                finished.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(in_thread)
            with anyio.move_on_after(timeout_s):
                await finished.wait()
            if not finished.is_set():
                await self._wait_abandoned(claim, finished, timeout_s or 0.0)
                return HandlerTimeout(f"handler ran past its {timeout_s:g}s timeout")
        if returned_at and returned_at[0] > deadline:  # the loop noticed late: still late
            return HandlerTimeout(f"handler ran past its {timeout_s:g}s timeout")
        return outcome[0] if outcome else None

    async def _wait_abandoned(self, claim: Claim, finished: anyio.Event, timeout_s: float) -> None:
        self.inflight.abandon(claim)
        self.metrics.abandoned_threads.inc()
        log.warning("task.timed_out", timeout_s=timeout_s, thread="still running")
        try:
            await finished.wait()
        finally:
            self.metrics.abandoned_threads.dec()


def _is_cancellation(exc: BaseException) -> bool:
    return isinstance(exc, anyio.get_cancelled_exc_class())


def _cancellation_requested() -> bool:
    """Is the current task inside a cancel scope that was cancelled (a real cancellation)?"""
    return anyio.current_effective_deadline() == -math.inf


def _stray(exc: BaseException) -> policy.StrayCancellation:
    """A cancellation nobody asked for: a failure of the handler, not of the worker."""
    task = asyncio.current_task()
    while task is not None and task.cancelling():  # a library called Task.cancel() on us
        task.uncancel()
    reason = str(exc).strip()
    return policy.StrayCancellation(
        "the handler raised CancelledError that the worker did not ask for"
        + (f" ({reason})" if reason else "")
    )


# jsonb::text is exactly one JSON value with no surrounding whitespace, so the
# decoder can skip json.loads's whitespace scans (2 us of 3 for a small payload).
_JSON = json.JSONDecoder()


def task_from_row(
    row: tuple[Any, ...], default_max_attempts: int
) -> tuple[Task, float, policy.PayloadError | None]:
    """A Task, its pickup delay (s), and why its payload can't be decoded (or None).

    A task whose payload the worker won't decode (over the size limit, nested deeper
    than the decoder allows, not an object) comes with an empty payload and the error:
    it fails alone, the rest of its claim runs.
    """
    (id_, type_, payload_text, attempts, max_attempts, created_at, run_at, priority,
     dedupe_key, lease_expires_at, worker_id, pickup_delay_s, *rest) = row  # fmt: skip
    try:
        payload, error = decode_payload(payload_text), None
    except policy.PayloadError as exc:
        payload, error = {}, exc
    task = Task(
        id=id_ if isinstance(id_, uuid.UUID) else uuid.UUID(str(id_)),
        type=type_,
        payload=payload,
        attempt=attempts,
        max_attempts=(rest[0] if rest else None) or max_attempts or default_max_attempts,
        created_at=created_at,
        run_at=run_at,
        priority=priority,
        dedupe_key=dedupe_key,
        lease_expires_at=lease_expires_at,
        worker_id=worker_id,
    )
    return task, pickup_delay_s or 0.0, error


def decode_payload(text: str) -> dict[str, Any]:
    """The payload of a claimed row, bounded: PayloadError names what is wrong with it."""
    if len(text) > MAX_PAYLOAD_BYTES and len(text.encode()) > MAX_PAYLOAD_BYTES:
        raise policy.PayloadError(
            f"payload is {len(text.encode())} bytes as JSON, over the "
            f"{MAX_PAYLOAD_BYTES}-byte limit; the worker does not decode it"
        )
    try:
        value = _JSON.raw_decode(text)[0]
    except RecursionError:
        raise policy.PayloadError(
            "payload is nested too deeply to decode (the limit for new tasks is 64 levels)"
        ) from None
    except ValueError as exc:
        raise policy.PayloadError(f"payload is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise policy.PayloadError(f"payload is a JSON {type(value).__name__}, not an object")
    return value
