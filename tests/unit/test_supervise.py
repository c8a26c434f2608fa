"""One supervisor for every service loop: any error is logged, counted, backed off, retried."""

from __future__ import annotations

from typing import Any

import anyio
import psycopg
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from listener.metrics import Metrics
from listener.supervise import Failures, backoff_s, supervised

pytestmark = pytest.mark.anyio

ERRORS: list[Exception] = [
    psycopg.errors.ReadOnlySqlTransaction("cannot execute UPDATE in a read-only transaction"),
    psycopg.errors.IdleInTransactionSessionTimeout("terminating connection"),
    psycopg.errors.CheckViolation("new row violates check constraint"),
    psycopg.OperationalError("server closed the connection unexpectedly"),
    RuntimeError("a bug of the loop's own"),
]


async def test_a_loop_that_fails_with_any_error_class_is_restarted_until_it_returns() -> None:
    metrics = Metrics(CollectorRegistry())
    failures = Failures(metrics)
    calls: list[int] = []

    async def loop() -> None:
        calls.append(1)
        if len(calls) <= len(ERRORS):
            raise ERRORS[len(calls) - 1]

    with capture_logs() as logs:
        await supervised("claims", loop, failures, backoff=lambda attempt: 0.0)
    assert len(calls) == len(ERRORS) + 1
    for error in ERRORS:
        sample = metrics.registry.get_sample_value(
            "listener_loop_errors_total", {"loop": "claims", "error": type(error).__name__}
        )
        assert sample == 1.0
    events = [e["event"] for e in logs]
    assert events.count("loop.database_error") == 4  # logged as the database's trouble
    assert events.count("loop.failed") == 1  # a bug: logged with its traceback
    assert failures.database_quiet_for() < 60


async def test_a_cancelled_loop_is_not_restarted() -> None:
    failures = Failures(Metrics(CollectorRegistry()))
    calls: list[int] = []

    async def loop() -> None:
        calls.append(1)
        await anyio.sleep_forever()

    with anyio.CancelScope() as scope:
        scope.cancel()
        await supervised("heartbeat", loop, failures, backoff=lambda attempt: 0.0)
    assert calls in ([], [1])


async def test_started_reaches_the_caller_once_whichever_restart_calls_it() -> None:
    failures = Failures(Metrics(CollectorRegistry()))
    runs: list[int] = []

    async def loop(*, task_status: Any) -> None:
        runs.append(1)
        task_status.started()
        if len(runs) < 3:
            raise RuntimeError("again")

    async with anyio.create_task_group() as tg:
        await tg.start(supervised, "notifier", loop, failures)
    assert len(runs) == 3


def test_the_backoff_grows_from_a_tenth_of_a_second_to_ten_and_stays_there() -> None:
    assert 0.05 <= backoff_s(1) <= 0.1
    assert 0.4 <= backoff_s(4) <= 0.8
    assert all(5.0 <= backoff_s(n) <= 10.0 for n in (8, 20, 100))
