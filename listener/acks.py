"""The outcome writer: every decided outcome in the registry, written in batches.

A finished attempt does not hold its slot while its outcome is written: the claim
moves to ``acking`` and the writer commits whatever is waiting in one statement, then
the next batch -- an idle worker writes at once, a busy one makes one round trip for
many tasks. Under a backlog the dispatcher's next claim carries the waiting outcomes
in its own transaction instead: one round trip and one commit per batch. Until its
outcome commits the task stays ``processing`` under a lease the heartbeat keeps
renewing; a write that fails (connection lost, database read-only) is tried again,
with a growing delay, for as long as the process lives; a row locked by another
transaction is skipped and tried again, never waited for. A crash before the commit
means the task is rescued and run again (at-least-once).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import anyio
from psycopg_pool import AsyncConnectionPool

from listener import logs
from listener.inflight import Claim, InFlight
from listener.logs import get_logger
from listener.metrics import Metrics
from listener.store import engine as store
from listener.supervise import Failures, backoff_s, is_connection_error

log = get_logger("listener.acks")

MAX_BATCH = 1000
LOCKED_RETRY_S = 0.05  # a row locked by someone else: look again this soon
# Under a backlog the dispatcher's next claim writes waiting outcomes in its own
# transaction (one round trip and one commit per batch); the writer leaves them to it
# for at most this long.
MAX_CARRY_WAIT_S = 0.2
_OUTCOME_NAMES = {"complete": "completed", "fail": "failed", "retry": "retried"}


class Acks:
    """Writes the registry's decided outcomes; one per worker."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        inflight: InFlight,
        metrics: Metrics,
        failures: Failures,
        on_retry_due: Callable[[float], None],
        on_written: Callable[[], None],
        claim_will_carry: Callable[[], bool] = lambda: False,
    ) -> None:
        self.pool = pool
        self.inflight = inflight
        self.metrics = metrics
        self.failures = failures
        self.on_retry_due = on_retry_due  # a retry's delay (s) arms the dispatcher's timer
        self.on_written = on_written  # a batch committed: the dispatcher may claim again
        self.claim_will_carry = claim_will_carry  # the dispatcher is about to claim
        self._wake = anyio.Event()

    def wake(self) -> None:
        """Outcomes are waiting: write them soon."""
        self._wake.set()

    async def run(self) -> None:
        """Write outcomes as they are decided, until cancelled."""
        while True:
            await self._wait_for_work()
            while await self.write_due():
                pass

    async def _wait_for_work(self) -> None:
        retry_in = self._next_try_in()
        if retry_in is None or retry_in > 0:
            with anyio.move_on_after(retry_in):
                await self._wake.wait()
        self._wake = anyio.Event()

    def _next_try_in(self) -> float | None:
        """Seconds until a waiting outcome is due to be written (None: nothing waits)."""
        waiting = [c for c in self.inflight.acking() if not c.writing]
        if not waiting:
            return None
        now = time.monotonic()
        if self.claim_will_carry():  # a claim takes them soon; if not, write them anyway
            return max(0.0, min(c.decided_at for c in waiting) + MAX_CARRY_WAIT_S - now)
        return max(0.0, min(c.not_before for c in waiting) - now)

    def take(self, *, ignore_backoff: bool = False) -> list[Claim]:
        """Outcomes due to be written, now marked as being written (up to one batch).

        A claim whose write failed for another reason than the connection is written
        alone, so that one bad row can't hold back the others.
        """
        now = time.monotonic()
        due = [
            c for c in self.inflight.acking()
            if not c.writing and (ignore_backoff or c.not_before <= now)
        ]  # fmt: skip
        alone = [c for c in due if c.write_alone]
        batch = alone[:1] if alone else due[:MAX_BATCH]
        for claim in batch:
            claim.writing = True
        return batch

    async def write_due(self, *, ignore_backoff: bool = False) -> bool:
        """Write one batch of the outcomes that are due; False when none was due."""
        if not ignore_backoff and self.claim_will_carry():
            now = time.monotonic()
            if all(c.decided_at + MAX_CARRY_WAIT_S > now for c in self.inflight.acking()):
                return False  # the dispatcher's next claim carries them in its transaction
        batch = self.take(ignore_backoff=ignore_backoff)
        if not batch:
            return False
        try:
            async with self.pool.connection() as conn:
                results = await store.finish(conn, [_finish(c) for c in batch])
        except Exception as exc:  # any database error: the outcomes wait and are tried again
            self.failed(batch, exc)
            return True
        except BaseException:  # cancelled (the worker is stopping): shutdown's flush writes them
            for claim in batch:
                claim.writing = False
            raise
        self.settle(batch, results)
        return True

    async def flush(self) -> None:
        """Write every waiting outcome, retrying failures at once; until none is left."""
        while self.inflight.acking():
            if not await self.write_due(ignore_backoff=True):
                return
            if any(c.ack_failures for c in self.inflight.acking()):
                await anyio.sleep(backoff_s(2))

    def settle(self, batch: list[Claim], results: list[store.Written]) -> None:
        """What the database said of each outcome in ``batch``: written, locked or not ours."""
        by_key = {c.key: c for c in batch}
        written: list[Claim] = []
        for result in results:
            claim = by_key[result.key]
            claim.writing = False
            if result.written:
                written.append(claim)
                self.inflight.remove(claim)
                if result.due_in_s is not None and _is_retry(claim):
                    self.on_retry_due(result.due_in_s)
            elif result.ours:  # locked by another transaction: soon again
                claim.not_before = time.monotonic() + LOCKED_RETRY_S
            else:
                self.inflight.remove(claim)
                log.warning("task.ack_ignored", **_fields(claim), reason="not this claim's")
        self.report(written)
        self.on_written()
        if self.inflight.acking():
            self.wake()  # locked ones, or more decided meanwhile

    def failed(self, batch: list[Claim], exc: Exception) -> None:
        """Writing ``batch`` failed: each waits, longer each time, and is tried again."""
        attempt = max(c.ack_failures for c in batch) + 1
        delay_s = backoff_s(attempt)
        for claim in batch:
            claim.writing = False
            claim.ack_failures += 1
            claim.not_before = time.monotonic() + delay_s
            claim.write_alone = not is_connection_error(exc)
        self.failures.report("acks", exc, retry_in_s=delay_s)
        self.wake()

    def finishes(self, batch: list[Claim]) -> list[store.Finish]:
        return [_finish(c) for c in batch]

    def report(self, written: Iterable[Claim]) -> None:
        """Count and log each written outcome: one canonical line per outcome."""
        completed: collections.Counter[str] = collections.Counter()
        lines: list[tuple[Any, str, int, float]] = []
        for claim in written:
            outcome = claim.outcome
            assert outcome is not None
            task = claim.task
            if outcome.action == "complete":
                completed[task.type] += 1
                self.metrics.task_duration.observe(task.type, claim.duration_s)
                lines.append((task.id, task.type, task.attempt, claim.duration_s))
                continue
            name = "released" if outcome.action == "release" else _OUTCOME_NAMES[outcome.action]
            self.metrics.finished(task.type, name, claim.duration_s if claim.started else None)
            _log_outcome(claim, name)
        for task_type, count in completed.items():
            self.metrics.finished_batch(task_type, "completed", count)
        if lines and log.is_enabled_for(logging.INFO):
            logs.completed(lines)


def _is_retry(claim: Claim) -> bool:
    return claim.outcome is not None and claim.outcome.action == "retry"


def _finish(claim: Claim) -> store.Finish:
    outcome = claim.outcome
    assert outcome is not None, "only decided claims are written"
    return store.Finish(claim.key, outcome.sql_action, outcome.delay_s, outcome.error)


def _fields(claim: Claim) -> dict[str, Any]:
    task = claim.task
    return {
        "task_id": str(task.id), "type": task.type, "attempt": task.attempt,
        "duration_s": round(claim.duration_s, 6),
    }  # fmt: skip


def _log_outcome(claim: Claim, name: str) -> None:
    outcome = claim.outcome
    assert outcome is not None
    fields = _fields(claim)
    if name == "released":
        log.info("task.released", **fields)
    elif name == "retried":
        log.info("task.retry_scheduled", retry_in_s=round(outcome.delay_s, 3),
                 counted=outcome.counted, error=outcome.error, **fields)  # fmt: skip
    else:
        log.warning("task.failed", error=outcome.error, **fields)
