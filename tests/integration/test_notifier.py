"""The LISTEN connection reports each change of state as it happens (for /readyz)."""

from __future__ import annotations

from typing import Any

import anyio
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from listener.config import NOTIFY_CHANNEL
from listener.metrics import Metrics
from listener.notifier import Notifier, SessionLost
from tests.integration.engine_support import eventually

pytestmark = pytest.mark.anyio


async def test_a_killed_listen_session_is_reported_down_then_up_again(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    changes: list[bool] = []
    metrics = Metrics(CollectorRegistry())
    notifier = Notifier(dsn, NOTIFY_CHANNEL, lambda: None, metrics, on_listening=changes.append)
    async with anyio.create_task_group() as tg:
        await tg.start(notifier.run)
        assert changes == [True]
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'listener:listen' AND datname = current_database()"
        ).fetchall()
        assert killed == [(True,)]
        await eventually(lambda: changes == [True, False, True], timeout_s=15)
        assert metrics.registry.get_sample_value("listener_listening") == 1.0
        tg.cancel_scope.cancel()
    assert changes == [True, False, True, False]  # and down when it stops


async def _session_pid(conn: psycopg.AsyncConnection[Any], pid: int) -> tuple[int, int]:
    cur = await conn.execute("SELECT pg_backend_pid()")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), pid


async def test_statements_run_between_waits_keep_the_session_and_lose_no_notification(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    metrics = Metrics(CollectorRegistry())
    notifier = Notifier(dsn, NOTIFY_CHANNEL, lambda: None, metrics)
    sent = 300
    async with anyio.create_task_group() as tg:
        await tg.start(notifier.run)
        answers = set()
        for i in range(sent):
            # Each NOTIFY lands before, during or after the statement that interrupts
            # the wait for notifications.
            conn.execute("SELECT pg_notify('listener_tasks', %s)", (str(i),))
            answers.add(await notifier.on_session(_session_pid))
        await eventually(
            lambda: metrics.registry.get_sample_value("listener_notifications_total") == sent
        )
        tg.cancel_scope.cancel()
    assert len(answers) == 1  # one backend throughout: the session survived every interruption
    ((backend, known),) = answers
    assert backend == known
    assert metrics.registry.get_sample_value("listener_db_reconnects_total") == 0


async def test_a_statement_for_a_session_that_is_down_fails_with_session_lost(dsn: str) -> None:
    notifier = Notifier(dsn, NOTIFY_CHANNEL, lambda: None, Metrics(CollectorRegistry()))
    with pytest.raises(SessionLost):
        await notifier.on_session(_session_pid)
